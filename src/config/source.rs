//! Which source feeds the catalog: at most one live source (Consul today), and the static
//! catalog, which is the whole catalog without a live source and only the first answers (the
//! seed) with one. The choice is explicit: an environment variable of Consul's alone never
//! switches a daemon into Consul mode, and the start-up log says what was chosen and why.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::database::{self, DatabaseSettings, Dialect, EtcdSettings};
use super::layer::Layer;
use super::value::{ConsulAddr, Secret};
use super::{ConfigError, ConsulEnv};

/// Concurrent requests to Consul by default (an agent allows 200 per client, H1.4).
pub const DEFAULT_CONSUL_MAX_CONNS: u32 = 32;
/// Blocking wait by default (Consul's own default).
pub const DEFAULT_CONSUL_WAIT: Duration = Duration::from_secs(300);
/// The Consul address with `source = consul` and no address anywhere.
pub const DEFAULT_CONSUL_ADDR: &str = "http://127.0.0.1:8500";
/// The value of `static` that names the example catalog built into the binary.
pub const BUILTIN: &str = "builtin";

/// The `source` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The static catalog alone.
    Static,
    /// The Consul catalog.
    Consul,
    /// An SQL database (`database_url`).
    Database,
    /// etcd (`etcd`).
    Etcd,
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "static" => Ok(SourceKind::Static),
            "consul" => Ok(SourceKind::Consul),
            "database" => Ok(SourceKind::Database),
            "etcd" => Ok(SourceKind::Etcd),
            other => Err(format!("unknown source {other:?}: expected static, consul, database or etcd")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SourceKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the static catalog comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSource {
    /// A file, reloaded when it changes.
    File(PathBuf),
    /// The example built into the binary (`static = "builtin"`).
    Embedded,
}

impl std::fmt::Display for CatalogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogSource::File(path) => write!(f, "{}", path.display()),
            CatalogSource::Embedded => f.write_str("the example catalog built into the binary"),
        }
    }
}

/// How to reach Consul and what to read.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsulSettings {
    /// Base URL, `http://127.0.0.1:8500`.
    pub address: String,
    /// ACL token.
    pub token: Option<Secret>,
    /// PEM bundle of CAs to trust for https.
    pub ca_cert: Option<PathBuf>,
    /// Read with `?stale`.
    pub stale: bool,
    /// Most concurrent requests.
    pub max_conns: usize,
    /// `wait` of blocking queries.
    pub wait: Duration,
    /// Datacenters to serve; `None` = every one Consul lists.
    pub datacenters: Option<Vec<String>>,
    /// Use WAN addresses for remote datacenters.
    pub translate_wan_addrs: bool,
    /// The local datacenter when configured explicitly (else the agent's).
    pub datacenter: Option<String>,
}

/// A source that keeps the catalog in sync with a registry.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveSource {
    /// The Consul catalog over HTTP.
    Consul(ConsulSettings),
    /// Tables in an SQL database.
    Sql(DatabaseSettings),
    /// Keys in etcd.
    Etcd(EtcdSettings),
}

impl LiveSource {
    /// The `backend` label of its metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            LiveSource::Consul(_) => "consul",
            LiveSource::Sql(settings) => match settings.url.dialect() {
                Dialect::Sqlite => "sqlite",
                Dialect::Mysql => "mysql",
                Dialect::Postgres => "postgres",
            },
            LiveSource::Etcd(_) => "etcd",
        }
    }
}

/// The catalog's sources.
#[derive(Debug, Clone, PartialEq)]
pub struct Sources {
    /// The static catalog: the catalog itself without a live source, else the seed (if given).
    pub static_catalog: Option<CatalogSource>,
    /// The live source, if any.
    pub live: Option<LiveSource>,
    /// Why this choice, for the start-up log.
    pub reason: String,
}

/// Resolves the sources from the merged layer and Consul's environment variables.
pub(super) fn resolve(layer: &Layer, env: &ConsulEnv) -> Result<Sources, ConfigError> {
    let static_catalog = layer.static_catalog.as_deref().map(|path| match path.to_str() {
        Some(BUILTIN) => CatalogSource::Embedded,
        _ => CatalogSource::File(path.to_owned()),
    });
    let consul_given = layer.consul.is_some();
    let (database, etcd) = database::resolve(layer)?;
    let given: Vec<&str> = [(consul_given, "consul"), (database.is_some(), "database_url"), (etcd.is_some(), "etcd")]
        .iter()
        .filter_map(|(given, key)| given.then_some(*key))
        .collect();
    if given.len() > 1 {
        return Err(ConfigError::Invalid {
            key: "source",
            message: format!(
                "{} are all given; at most one live source can be, remove the others",
                given.join(" and ")
            ),
        });
    }
    let store_given = database.is_some() || etcd.is_some();
    let (live, reason) = match layer.source {
        Some(SourceKind::Static | SourceKind::Consul) if store_given => {
            return Err(ConfigError::Invalid {
                key: "source",
                message: format!(
                    "source is {}, but {} names a store; remove one of them",
                    if layer.source == Some(SourceKind::Static) { "static" } else { "consul" },
                    given.join("")
                ),
            });
        }
        Some(SourceKind::Database) => match database {
            Some(settings) => (Some(LiveSource::Sql(settings)), "source is database, at database_url".to_owned()),
            None => {
                return Err(ConfigError::Invalid {
                    key: "source",
                    message: "source is database, but no database_url is given".into(),
                });
            }
        },
        Some(SourceKind::Etcd) => match etcd {
            Some(settings) => (Some(LiveSource::Etcd(settings)), "source is etcd, at the etcd endpoints".to_owned()),
            None => {
                return Err(ConfigError::Invalid {
                    key: "source",
                    message: "source is etcd, but no etcd is given".into(),
                });
            }
        },
        None if database.is_some() => (database.map(LiveSource::Sql), "database_url is set".to_owned()),
        None if etcd.is_some() => (etcd.map(LiveSource::Etcd), "etcd is set".to_owned()),
        Some(SourceKind::Static) if consul_given => {
            return Err(ConfigError::Invalid {
                key: "source",
                message: "source is static, but consul names a Consul address; remove one of them".into(),
            });
        }
        Some(SourceKind::Static) => (None, "source is static".to_owned()),
        Some(SourceKind::Consul) => {
            let reason = match (&layer.consul, &env.addr) {
                (Some(_), _) => "source is consul, at the consul address",
                (None, Some(_)) => "source is consul, at CONSUL_HTTP_ADDR",
                (None, None) => "source is consul, at the default address",
            };
            (Some(LiveSource::Consul(consul_settings(layer, env)?)), reason.to_owned())
        }
        None if consul_given => (Some(LiveSource::Consul(consul_settings(layer, env)?)), "consul is set".to_owned()),
        None => (None, "no live source is configured".to_owned()),
    };
    Ok(Sources { static_catalog, live, reason })
}

impl Sources {
    /// The daemon needs a catalog: a static one or a live source. (The `healthcheck` and
    /// `query` subcommands read the same configuration and need none.)
    pub fn require_catalog(&self) -> Result<(), ConfigError> {
        if self.live.is_none() && self.static_catalog.is_none() {
            return Err(ConfigError::Invalid {
                key: "static",
                message: "no catalog to serve: give --static FILE (TOML or JSON), --static builtin for the \
                          example catalog, or a live source such as --consul http://127.0.0.1:8500"
                    .into(),
            });
        }
        Ok(())
    }
}

/// The Consul source's settings: our keys first, then Consul's environment variables.
fn consul_settings(layer: &Layer, env: &ConsulEnv) -> Result<ConsulSettings, ConfigError> {
    let address = match (&layer.consul, &env.addr) {
        (Some(addr), _) => addr.clone(),
        (None, Some(addr)) => addr
            .parse::<ConsulAddr>()
            .map_err(|message| ConfigError::Env { var: "CONSUL_HTTP_ADDR".into(), message })?,
        (None, None) => ConsulAddr(DEFAULT_CONSUL_ADDR.to_owned()),
    };
    let read_token = |key: &'static str, path: &Path| {
        std::fs::read_to_string(path).map(|text| Secret::new(&text)).map_err(|e| {
            let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
            ConfigError::Invalid { key, message: format!("cannot read {}: {e}", shown.display()) }
        })
    };
    let token = match (&layer.consul_token, &layer.consul_token_file, &env.token, &env.token_file) {
        (Some(token), ..) => Some(token.clone()),
        (None, Some(path), ..) => Some(read_token("consul_token_file", path)?),
        (None, None, Some(token), _) => Some(token.clone()),
        (None, None, None, Some(path)) => Some(read_token("CONSUL_HTTP_TOKEN_FILE", path)?),
        (None, None, None, None) => None,
    };
    let wait = layer.consul_wait.map_or(DEFAULT_CONSUL_WAIT, |w| w.0);
    Ok(ConsulSettings {
        address: address.url(env.ssl),
        token: token.filter(|t| !t.expose().is_empty()),
        ca_cert: layer.consul_ca_cert.clone().or_else(|| env.ca_cert.clone()),
        stale: layer.consul_stale.unwrap_or(true),
        max_conns: layer.consul_max_conns.map_or(DEFAULT_CONSUL_MAX_CONNS, |n| n.0) as usize,
        wait,
        datacenters: layer.datacenters.as_ref().map(|list| list.iter().map(|dc| dc.0.clone()).collect()),
        translate_wan_addrs: layer.translate_wan_addrs.unwrap_or(false),
        datacenter: layer.datacenter.as_ref().map(|dc| dc.0.clone()),
    })
}
