//! The command line (clap derive). Every daemon option lives in [`crate::config::Layer`], which
//! is also the TOML schema and the environment mapping.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::backend::registry::command::DbAction;
use crate::config::Layer;
use crate::config::database::{DatabaseUrl, EtcdEndpoint};

const AFTER_HELP: &str = "\
Every option can also be set in the TOML file given by --config (key = option name with '_'
for '-', e.g. node_ttl = \"5s\") and by an environment variable CONSUL_DNS_<OPTION> (e.g.
CONSUL_DNS_NODE_TTL=5s; lists comma-separated). Precedence: flags > environment > file >
defaults. CONSUL_DNS_CONFIG names the config file. SIGHUP reloads the file and the catalog.";

/// consul-dns: answers Consul's DNS namespace from a static catalog or the Consul catalog.
#[derive(Debug, Parser)]
#[command(name = "consul-dns", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML configuration file (also CONSUL_DNS_CONFIG)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration and the catalog, print what is wrong, and exit
    #[arg(long)]
    pub check_config: bool,

    /// Daemon settings.
    #[command(flatten)]
    pub settings: Layer,

    /// A subcommand instead of running the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one DNS query and exit 0 on a well-formed answer (for container healthchecks,
    /// which have no dig)
    Healthcheck {
        /// Server address [default: 127.0.0.1:8600]
        #[arg(value_name = "ADDR")]
        addr: Option<String>,
        /// Name to ask for (its SOA) [default: consul.]
        #[arg(long, value_name = "NAME", default_value = "consul.")]
        name: String,
        /// Give up after this many milliseconds
        #[arg(long, value_name = "MS", default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Manage the catalog in a database or etcd: init, register, deregister, set-health, list
    Db(DbArgs),
}

/// `consul-dns db`: where the catalog is (also before `db`, in the config file or as
/// CONSUL_DNS_DATABASE_URL / CONSUL_DNS_ETCD), and what to do.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// SQL database holding the catalog: sqlite://PATH, mysql://USER:PASS@HOST:PORT/DB,
    /// postgres://USER:PASS@HOST:PORT/DB
    #[arg(long, value_name = "URL", global = true)]
    pub database_url: Option<DatabaseUrl>,
    /// etcd endpoint holding the catalog, repeatable
    #[arg(long, value_name = "URL", global = true)]
    pub etcd: Option<Vec<EtcdEndpoint>>,
    /// Key prefix of the catalog in etcd [default: /consul-dns/]
    #[arg(long, value_name = "PREFIX", global = true)]
    pub etcd_prefix: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: DbAction,
}

impl DbArgs {
    /// The options given after `db`, as a layer above everything else.
    pub fn layer(&self) -> Layer {
        Layer {
            database_url: self.database_url.clone(),
            etcd: self.etcd.clone(),
            etcd_prefix: self.etcd_prefix.clone(),
            ..Layer::default()
        }
    }
}
