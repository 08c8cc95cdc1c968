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

/// `--version`: the crate version, the commit it was built from and the cargo profile.
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("CONSUL_DNS_COMMIT"), ", ", env!("CONSUL_DNS_PROFILE"), " build)");

/// consul-dns: answers Consul's DNS namespace from a static catalog or the Consul catalog.
#[derive(Debug, Parser)]
#[command(name = "consul-dns", version = VERSION, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML configuration file (also CONSUL_DNS_CONFIG)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration and the catalog, print what is wrong, and exit
    #[arg(long)]
    pub check_config: bool,

    /// Print every setting in effect with where it came from (flag, environment, file:line,
    /// default), secrets as ***, and exit
    #[arg(long)]
    pub print_config: bool,

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
    /// Ask the daemon one question and print the reply, dig-style (images have no dig). The
    /// address comes from the configuration, as for healthcheck
    Query {
        /// The name asked, trailing dot optional
        name: String,
        /// Record type [default: A]
        #[arg(value_name = "TYPE", default_value = "A")]
        qtype: String,
        /// Server address [default: the first listen address, 0.0.0.0 asked as 127.0.0.1]
        #[arg(long, value_name = "ADDR")]
        server: Option<String>,
        /// Ask over TCP (UDP replies with TC set are asked again over TCP anyway)
        #[arg(long)]
        tcp: bool,
        /// Give up after this many milliseconds
        #[arg(long, value_name = "MS", default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Ask the daemon for its domain's SOA and exit 0 on a NOERROR answer (for container
    /// healthchecks, which have no dig). Reads the same configuration as the daemon
    /// (--config, CONSUL_DNS_*, flags before the subcommand) for the address and the domain
    Healthcheck {
        /// Server address [default: the first listen address, 0.0.0.0 asked as 127.0.0.1]
        #[arg(value_name = "ADDR")]
        addr: Option<String>,
        /// Name to ask for (its SOA), with or without the trailing dot [default: the domain]
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
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
