//! Configuration: defaults < TOML file (`--config`, `CONSUL_DNS_CONFIG`) < environment
//! (`CONSUL_DNS_<KEY>`) < flags. Unknown keys and bad values are errors that name the file,
//! line and key (or the variable, or the flag); nothing is silently ignored. Relative paths in
//! the file are taken from its directory ([`Layer::rebase`]); [`load_explained`] also says
//! where each value came from (`--print-config`).

pub mod database;
pub mod kinds;
pub mod layer;
pub mod origin;
pub mod show;
pub mod source;
pub mod tcp;
pub mod ttl;
pub mod value;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

pub use kinds::{Cidr, DomainName, LogFormat, Sample, Strategy};
pub use layer::{ENV_CONFIG, ENV_PREFIX, KEYS, Layer};
pub use source::{CatalogSource, ConsulSettings, LiveSource, Sources};
pub use ttl::TtlTable;
use value::{DEFAULT_DNS_PORT, Secret, ServiceTtl};

/// What Consul's environment variables say (looked up through the same function as ours).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsulEnv {
    /// `CONSUL_HTTP_ADDR`.
    pub addr: Option<String>,
    /// `CONSUL_HTTP_TOKEN`.
    pub token: Option<Secret>,
    /// `CONSUL_HTTP_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `CONSUL_CACERT`.
    pub ca_cert: Option<PathBuf>,
    /// `CONSUL_HTTP_SSL=true`: https for addresses without a scheme.
    pub ssl: bool,
}

impl ConsulEnv {
    /// Reads the variables through `env`; empty values count as unset.
    pub fn read(env: &dyn Fn(&str) -> Option<String>) -> ConsulEnv {
        let get = |key: &str| env(key).filter(|v| !v.trim().is_empty());
        ConsulEnv {
            addr: get("CONSUL_HTTP_ADDR"),
            token: get("CONSUL_HTTP_TOKEN").map(|t| Secret::new(&t)),
            token_file: get("CONSUL_HTTP_TOKEN_FILE").map(PathBuf::from),
            ca_cert: get("CONSUL_CACERT").map(PathBuf::from),
            ssl: get("CONSUL_HTTP_SSL").is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true")),
        }
    }
}

/// The example catalog built into the binary, served with `--static builtin` (and only then).
pub const EMBEDDED_CATALOG: &str = include_str!("../../config/services.toml");
/// Where the recursors come from when none is configured.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The HTTP listener by default: loopback, CoreDNS's metrics port.
pub const DEFAULT_HTTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9153);
/// Time one recursor has to answer by default.
pub const DEFAULT_RECURSOR_TIMEOUT: Duration = Duration::from_secs(2);
/// Default TTLs (see README "TTLs"): Consul's 0 makes Kong's old client query on every request
/// and its new client cache forever; 5 s keeps both fresh and cheap.
pub const DEFAULT_TTL_SECS: u32 = 5;

/// Why the configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a bad value.
    #[error("{path}:{line}:{column}: {message}\n    {line_text}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (names the key for unknown keys).
        message: String,
        /// The offending line, which names the key.
        line_text: String,
    },
    /// An environment variable has a bad value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value that is fine alone but not with others, at the place it was given.
    #[error("{place}: {key}: {message}")]
    InvalidAt {
        /// `path:line`, `environment variable …` or `flag --…`.
        place: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Values that are fine alone but not together.
    #[error("{key}: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A TOML error located in `text` (shared with the static catalog loader).
    pub fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
        let (line, column, line_text) = locate(text, error.span().map_or(0, |s| s.start));
        let message = error.message().trim();
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: origin::unknown_key_sentence(message).unwrap_or_else(|| message.to_owned()),
            line_text,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset, and the line's text. An offset
/// inside a character (parsers may report one) counts as that character's start.
pub fn locate(text: &str, offset: usize) -> (usize, usize, String) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    (line, text[start..offset].chars().count() + 1, text[start..end].trim_end().to_owned())
}

/// Where the recursors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recursors {
    /// Given by `recursor`.
    Listed(Vec<SocketAddr>),
    /// The nameservers of this resolv.conf (read at start and on SIGHUP).
    ResolvConf(PathBuf),
    /// `recursor = none` (or an empty list): REFUSED outside the domain, as Consul by default.
    Off,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// DNS listen addresses (UDP and TCP).
    pub listen: Vec<SocketAddr>,
    /// The catalog's sources: the static catalog and the live source.
    pub sources: Sources,
    /// Primary domain.
    pub domain: DomainName,
    /// Alternative domain.
    pub alt_domain: Option<DomainName>,
    /// Local datacenter.
    pub datacenter: String,
    /// Node TTL, seconds.
    pub node_ttl: u32,
    /// Service TTLs.
    pub service_ttl: TtlTable,
    /// Negative TTL, seconds.
    pub negative_ttl: u32,
    /// Only passing instances.
    pub only_passing: bool,
    /// S7.2 answer cap (0 = none).
    pub udp_answer_limit: u32,
    /// S7.6 A-record cap (0 = none).
    pub a_record_limit: u32,
    /// Largest UDP reply for EDNS clients.
    pub max_udp_size: u16,
    /// UDP worker threads per address.
    pub udp_workers: usize,
    /// TCP connection caps and timeouts.
    pub tcp: tcp::TcpLimits,
    /// Log filter.
    pub log_level: String,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// Share of queries logged.
    pub query_log_sample: Sample,
    /// `ns_name`/`ns_address`: the apex NS without a `consul` service.
    pub own_name_server: Option<kinds::NameServerSetting>,
    /// HTTP listener (metrics, health, debugging); `None` = off.
    pub http: Option<SocketAddr>,
    /// Where the recursors come from.
    pub recursors: Recursors,
    /// Time one recursor has to answer.
    pub recursor_timeout: Duration,
    /// Order of the recursors.
    pub recursor_strategy: Strategy,
    /// Clients that may recurse; `None` = loopback and the host's networks.
    pub allow_recursion: Option<Vec<Cidr>>,
    /// Clients answered at all.
    pub allow_query: Vec<Cidr>,
    /// Where the last good catalog of a live source is kept.
    pub state_dir: Option<PathBuf>,
    /// Oldest on-disk catalog served at start-up; `None` = no limit.
    pub max_stale: Option<Duration>,
    /// What `version.bind` answers; `None` = REFUSED.
    pub chaos_version: Option<String>,
    /// Response-rate limiting of UDP answers.
    pub rrl: RrlConfig,
}

/// Response-rate limiting as configured (the `rrl_*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second per client network; 0 = off.
    pub responses_per_sec: u32,
    /// Every Nth limited response is sent truncated; 0 = none.
    pub slip: u32,
    /// IPv4 prefix length of a client network.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length of a client network.
    pub ipv6_prefix: u8,
    /// Networks never limited.
    pub exempt: Vec<Cidr>,
    /// Whether the clients that may recurse are never limited.
    pub exempt_recursion: bool,
}

/// `rrl_responses_per_sec` when not set.
pub const DEFAULT_RRL_RESPONSES_PER_SEC: u32 = 1000;
/// `rrl_slip` when not set.
pub const DEFAULT_RRL_SLIP: u32 = 2;
/// `rrl_ipv4_prefix` when not set.
pub const DEFAULT_RRL_IPV4_PREFIX: u32 = 24;
/// `rrl_ipv6_prefix` when not set.
pub const DEFAULT_RRL_IPV6_PREFIX: u32 = 56;

impl RrlConfig {
    fn from_layer(layer: &Layer) -> RrlConfig {
        RrlConfig {
            responses_per_sec: layer.rrl_responses_per_sec.map_or(DEFAULT_RRL_RESPONSES_PER_SEC, |n| n.0),
            slip: layer.rrl_slip.map_or(DEFAULT_RRL_SLIP, |n| n.0),
            ipv4_prefix: layer.rrl_ipv4_prefix.map_or(DEFAULT_RRL_IPV4_PREFIX, |n| n.0) as u8,
            ipv6_prefix: layer.rrl_ipv6_prefix.map_or(DEFAULT_RRL_IPV6_PREFIX, |n| n.0) as u8,
            exempt: layer.rrl_exempt.clone().unwrap_or_else(|| Cidr::loopback().to_vec()),
            exempt_recursion: layer.rrl_exempt_recursion.unwrap_or(false),
        }
    }
}

/// `chaos_version` goes out as one TXT character-string: printable ASCII, at most 255 bytes.
fn chaos_version(layer: &Layer) -> Result<Option<String>, ConfigError> {
    let Some(text) = &layer.chaos_version else { return Ok(None) };
    if text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        let message = "must be at most 255 printable ASCII characters".into();
        return Err(ConfigError::Invalid { key: "chaos_version", message });
    }
    Ok(Some(text.clone()))
}

/// Loads the configuration. `config_file` is `--config`; `env` looks up environment
/// variables (tests pass a map, never the process environment).
pub fn load(
    config_file: Option<&Path>,
    flags: Layer,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    load_explained(config_file, flags, env).map(|(config, _)| config)
}

/// The merged settings and where each came from, for `--print-config`.
#[derive(Debug, Clone)]
pub struct Explained {
    /// Every layer merged (flags > environment > file).
    pub merged: Layer,
    /// Where each key came from.
    pub origins: origin::Origins,
}

impl Explained {
    /// One line per key: the value (secrets as `***`) and where it came from.
    pub fn render(&self) -> String {
        origin::render(&self.merged, &self.origins)
    }
}

/// [`load`], also saying where every setting came from. An error about a key that is fine
/// alone but not with another names the place the key was given (file and line, variable,
/// or flag).
pub fn load_explained(
    config_file: Option<&Path>,
    flags: Layer,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Explained), ConfigError> {
    let path = config_file.map(Path::to_path_buf).or_else(|| env(ENV_CONFIG).map(PathBuf::from));
    let path = path.map(|p| std::path::absolute(&p).unwrap_or(p));
    let (file, lines) = match &path {
        Some(path) => read_file_lines(path)?,
        None => (Layer::default(), Default::default()),
    };
    let env_layer = Layer::from_env(env).map_err(|(var, message)| ConfigError::Env { var, message })?;
    let origins = origin::Origins::new((&file, path.as_deref(), &lines), &env_layer, &flags);
    let merged = file.overlay(env_layer).overlay(flags);
    let config = resolve_with(merged.clone(), &ConsulEnv::read(env)).map_err(|e| match e {
        ConfigError::Invalid { key, message } => match origins.of(key) {
            origin::Origin::Default => ConfigError::Invalid { key, message },
            place => ConfigError::InvalidAt { place: place.to_string(), key, message },
        },
        other => other,
    })?;
    Ok((config, Explained { merged, origins }))
}

/// Parses a config file; relative paths in it are taken below its directory.
pub fn read_file(path: &Path) -> Result<Layer, ConfigError> {
    read_file_lines(path).map(|(layer, _)| layer)
}

fn read_file_lines(path: &Path) -> Result<(Layer, std::collections::HashMap<String, usize>), ConfigError> {
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    let layer: Layer = toml::from_str(&text).map_err(|e| ConfigError::from_toml(path, &text, &e))?;
    let base = shown.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    Ok((layer.rebase(&base), origin::key_lines(&text)))
}

/// Applies defaults and cross-field checks, without Consul's environment variables.
#[cfg(test)]
pub fn resolve(layer: Layer) -> Result<Config, ConfigError> {
    resolve_with(layer, &ConsulEnv::default())
}

/// [`resolve`] with Consul's environment variables below our settings.
pub fn resolve_with(layer: Layer, consul_env: &ConsulEnv) -> Result<Config, ConfigError> {
    let sources = source::resolve(&layer, consul_env)?;
    let chaos_version = chaos_version(&layer)?;
    let rrl = RrlConfig::from_layer(&layer);
    let tcp = tcp::limits(&layer)?;
    let domain = layer.domain.unwrap_or_else(|| DomainName::new("consul.").expect("a valid literal"));
    if layer.alt_domain.as_ref() == Some(&domain) {
        return Err(ConfigError::Invalid { key: "alt_domain", message: "must differ from domain".into() });
    }
    let mut service_ttl = TtlTable::new(DEFAULT_TTL_SECS);
    match layer.service_ttl {
        Some(ServiceTtl::All(secs)) => service_ttl = TtlTable::new(secs.0),
        Some(ServiceTtl::Table(table)) => table.iter().for_each(|(key, secs)| service_ttl.insert(key, secs.0)),
        None => {}
    }
    let default_listen = SocketAddr::from(([127, 0, 0, 1], DEFAULT_DNS_PORT));
    let listen: Vec<SocketAddr> = match layer.listen {
        Some(list) if list.is_empty() => {
            return Err(ConfigError::Invalid { key: "listen", message: "needs at least one address".into() });
        }
        Some(list) => list.into_iter().map(|a| a.0).collect(),
        None => vec![default_listen],
    };
    let recursors = match layer.recursor {
        Some(list) if list.len() > 1 && list.iter().any(|r| r.0.is_none()) => {
            return Err(ConfigError::Invalid {
                key: "recursor",
                message: "none cannot be combined with addresses".into(),
            });
        }
        Some(list) if list.first().is_none_or(|r| r.0.is_none()) => Recursors::Off,
        Some(list) => Recursors::Listed(list.into_iter().filter_map(|r| r.0).collect()),
        None => Recursors::ResolvConf(layer.resolv_conf.unwrap_or_else(|| DEFAULT_RESOLV_CONF.into())),
    };
    let own_name_server = match (&layer.ns_name, layer.ns_address) {
        (Some(name), Some(address)) => Some(
            kinds::NameServerSetting::new(name, &domain, address)
                .map_err(|message| ConfigError::Invalid { key: "ns_name", message })?,
        ),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::Invalid { key: "ns_address", message: "is needed with ns_name".into() });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Invalid { key: "ns_name", message: "is needed with ns_address".into() });
        }
    };
    let recursor_timeout = layer.recursor_timeout.map_or(DEFAULT_RECURSOR_TIMEOUT, |t| t.0);
    if recursor_timeout.is_zero() {
        return Err(ConfigError::Invalid { key: "recursor_timeout", message: "must be above 0".into() });
    }
    Ok(Config {
        listen,
        sources,
        domain,
        alt_domain: layer.alt_domain,
        datacenter: layer.datacenter.map_or_else(|| "dc1".to_owned(), |dc| dc.0),
        node_ttl: layer.node_ttl.map_or(DEFAULT_TTL_SECS, |s| s.0),
        service_ttl,
        negative_ttl: layer.negative_ttl.map_or(DEFAULT_TTL_SECS, |s| s.0),
        only_passing: layer.only_passing.unwrap_or(false),
        udp_answer_limit: layer.udp_answer_limit.map_or(3, |n| n.0),
        a_record_limit: layer.a_record_limit.map_or(0, |n| n.0),
        max_udp_size: layer.max_udp_size.map_or(1232, |n| n.0 as u16),
        udp_workers: layer.udp_workers.map_or_else(default_workers, |n| n.0 as usize),
        tcp,
        log_level: layer.log_level.unwrap_or_else(|| "info".into()),
        log_format: layer.log_format.unwrap_or_default(),
        query_log_sample: layer.query_log_sample.unwrap_or_default(),
        own_name_server,
        http: layer.http.map_or(Some(DEFAULT_HTTP), |h| h.0),
        recursors,
        recursor_timeout,
        recursor_strategy: layer.recursor_strategy.unwrap_or_default(),
        allow_recursion: layer.allow_recursion,
        allow_query: layer.allow_query.unwrap_or_else(|| Cidr::any().to_vec()),
        state_dir: layer.state_dir,
        max_stale: layer.max_stale.map(|s| Duration::from_secs(s.0.into())),
        chaos_version,
        rrl,
    })
}

pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// The resolv.conf to read, when the recursors come from one.
    pub fn resolv_conf(&self) -> Option<&Path> {
        match &self.recursors {
            Recursors::ResolvConf(path) => Some(path),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
