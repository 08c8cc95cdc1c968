//! One layer of settings. The same struct is the command line (clap), the TOML file (serde,
//! unknown keys rejected) and the environment (`CONSUL_DNS_<KEY>`); layers are merged with
//! [`Layer::overlay`] as file < environment < flags.

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::database::{DatabaseUrl, EtcdEndpoint};
use super::kinds::{Cidr, DomainName, LogFormat, Sample, Strategy};
use super::source::SourceKind;
use super::value::{Bounded, ConsulAddr, HttpAddr, Label, ListenAddr, Millis, Recursor, Secret, Secs, ServiceTtl};

/// Prefix of every environment variable we read (besides Consul's own `CONSUL_HTTP_*`).
pub const ENV_PREFIX: &str = "CONSUL_DNS_";
/// Environment variable naming the config file, like `--config`.
pub const ENV_CONFIG: &str = "CONSUL_DNS_CONFIG";

/// Settings as given by one source; `None` = not given here.
#[derive(Debug, Clone, Default, PartialEq, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Address to answer DNS on, UDP and TCP; repeatable, IPv6 as [::1]:8600
    /// [default: 127.0.0.1:8600]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<Vec<ListenAddr>>,

    /// Static catalog file, TOML or JSON (.json), or `builtin` for the example built into the
    /// binary; with a live source, only the answers before its first sync
    #[arg(long = "static", value_name = "FILE")]
    #[serde(rename = "static")]
    pub static_catalog: Option<PathBuf>,

    /// Domain answered [default: consul.]
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<DomainName>,

    /// A second domain answered like the first
    #[arg(long, value_name = "DOMAIN")]
    pub alt_domain: Option<DomainName>,

    /// Local datacenter: answers names without a datacenter [default: dc1]
    #[arg(long, value_name = "DC")]
    pub datacenter: Option<Label>,

    /// TTL of node, .addr. and NS records, e.g. 5s; 0 as Consul [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub node_ttl: Option<Secs>,

    /// TTL of service records; per-service patterns in the config file [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub service_ttl: Option<ServiceTtl>,

    /// TTL of negative answers (SOA TTL and MINIMUM) [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub negative_ttl: Option<Secs>,

    /// Answer only instances whose checks all pass (drop warnings too) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub only_passing: Option<bool>,

    /// Most answers in a UDP reply limited to 512 bytes, TC set when cut; 0 = bytes only
    /// [default: 3]
    #[arg(long, value_name = "N")]
    pub udp_answer_limit: Option<Bounded<0, 65535>>,

    /// Most A/AAAA records per service answer, no TC; 0 = no limit [default: 0]
    #[arg(long, value_name = "N")]
    pub a_record_limit: Option<Bounded<0, 65535>>,

    /// Largest UDP reply to EDNS clients, in bytes (512..=65535) [default: 1232]
    #[arg(long, value_name = "BYTES")]
    pub max_udp_size: Option<Bounded<512, 65535>>,

    /// UDP worker threads per listen address [default: the CPUs this process may use]
    #[arg(long, value_name = "N")]
    pub udp_workers: Option<Bounded<1, 1024>>,

    /// Log filter: error, warn, info, debug, trace, or tracing directives [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log lines as text (readable) or json (one object per line) [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Share of queries written to the log (target consul_dns::query), 0 to 1, e.g. 0.01
    /// [default: 0, off]
    #[arg(long, value_name = "RATE")]
    pub query_log_sample: Option<Sample>,

    /// Address of the HTTP listener for /metrics, /health, /ready, /v1/catalog and
    /// /debug/pprof; `off` turns it off [default: 127.0.0.1:9153]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<HttpAddr>,

    /// Upstream resolver for names outside the domain, IP[:PORT] (port 53), repeatable; `none`
    /// turns recursion off (REFUSED outside the domain) [default: the nameservers of
    /// resolv_conf]
    #[arg(long, value_name = "ADDR")]
    pub recursor: Option<Vec<Recursor>>,

    /// Time one recursor has to answer, e.g. 2s or 500ms [default: 2s]
    #[arg(long, value_name = "DURATION")]
    pub recursor_timeout: Option<Millis>,

    /// Order recursors are asked in: sequential (first that works) or random [default:
    /// sequential]
    #[arg(long, value_name = "STRATEGY")]
    pub recursor_strategy: Option<Strategy>,

    /// The file whose nameservers are the recursors when no recursor is given; read at start
    /// and on SIGHUP [default: /etc/resolv.conf]
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,

    /// Network (CIDR or address) whose clients may recurse, repeatable; others get REFUSED
    /// outside the domain [default: loopback and the networks of this host's interfaces]
    #[arg(long, value_name = "CIDR")]
    pub allow_recursion: Option<Vec<Cidr>>,

    /// Network (CIDR or address) whose clients are answered at all, repeatable; others get
    /// REFUSED for every question [default: any]
    #[arg(long, value_name = "CIDR")]
    pub allow_query: Option<Vec<Cidr>>,

    /// The live catalog source, `static`, `consul`, `database` or `etcd` [default: the one whose address is
    /// given, else the static catalog alone]
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<SourceKind>,

    /// Consul HTTP API to sync from, http://host:port or https://host:port; selects the Consul
    /// source [default with --source consul: CONSUL_HTTP_ADDR, else http://127.0.0.1:8500]
    #[arg(long, value_name = "URL")]
    pub consul: Option<ConsulAddr>,

    /// Consul ACL token, sent as X-Consul-Token, never logged [default: CONSUL_HTTP_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub consul_token: Option<Secret>,

    /// File holding the Consul ACL token [default: CONSUL_HTTP_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    pub consul_token_file: Option<PathBuf>,

    /// PEM bundle of the CAs that sign Consul's https certificate [default: CONSUL_CACERT, else
    /// the built-in web roots]
    #[arg(long, value_name = "FILE")]
    pub consul_ca_cert: Option<PathBuf>,

    /// Read with ?stale: any Consul server answers, also without a leader [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub consul_stale: Option<bool>,

    /// Most concurrent requests to Consul, long polls included (an agent allows 200 per
    /// client) [default: 32]
    #[arg(long, value_name = "N")]
    pub consul_max_conns: Option<Bounded<4, 1000>>,

    /// How long Consul may hold a blocking query, e.g. 5m (at most 10m) [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub consul_wait: Option<Millis>,

    /// Datacenters to serve from Consul, repeatable [default: every one Consul lists]
    #[arg(long, value_name = "DC")]
    pub datacenters: Option<Vec<Label>>,

    /// Answer remote datacenters with their WAN addresses, as Consul's translate_wan_addrs
    /// [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub translate_wan_addrs: Option<bool>,

    /// Directory where the last good Consul catalog is kept, to answer after a restart while
    /// Consul is unreachable [default: none]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Oldest on-disk catalog still served at start-up, e.g. 1h [default: no limit]
    #[arg(long, value_name = "DURATION")]
    pub max_stale: Option<Secs>,

    /// SQL database holding the catalog, instead of the static catalog: sqlite://PATH,
    /// mysql://USER:PASS@HOST:PORT/DB or postgres://USER:PASS@HOST:PORT/DB (password never
    /// logged) [default: none]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<DatabaseUrl>,

    /// How often the database's change counter is checked, e.g. 1s or 200ms [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub db_poll_interval: Option<Millis>,

    /// etcd endpoint holding the catalog, http://host:port, repeatable [default: none]
    #[arg(long, value_name = "URL")]
    pub etcd: Option<Vec<EtcdEndpoint>>,

    /// Key prefix of the catalog in etcd [default: /consul-dns/]
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// This daemon's name as the apex NS when the catalog has no `consul` service, e.g.
    /// ns.consul. (with --ns-address)
    #[arg(long, value_name = "NAME")]
    pub ns_name: Option<DomainName>,

    /// The address --ns-name answers with
    #[arg(long, value_name = "IP")]
    pub ns_address: Option<std::net::IpAddr>,
}

/// Every key, as written in TOML; the environment variable is `CONSUL_DNS_` + upper case.
pub const KEYS: &[&str] = &[
    "listen",
    "static",
    "domain",
    "alt_domain",
    "datacenter",
    "node_ttl",
    "service_ttl",
    "negative_ttl",
    "only_passing",
    "udp_answer_limit",
    "a_record_limit",
    "max_udp_size",
    "udp_workers",
    "log_level",
    "log_format",
    "query_log_sample",
    "http",
    "recursor",
    "recursor_timeout",
    "recursor_strategy",
    "resolv_conf",
    "allow_recursion",
    "allow_query",
    "source",
    "consul",
    "consul_token",
    "consul_token_file",
    "consul_ca_cert",
    "consul_stale",
    "consul_max_conns",
    "consul_wait",
    "datacenters",
    "translate_wan_addrs",
    "state_dir",
    "max_stale",
    "database_url",
    "db_poll_interval",
    "etcd",
    "etcd_prefix",
    "ns_name",
    "ns_address",
];

fn parse<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// A comma-separated list (environment variables); empty items are skipped, so an empty
/// value is an empty list.
fn parse_list<T: std::str::FromStr>(value: &str) -> Result<Vec<T>, String>
where
    T::Err: std::fmt::Display,
{
    value.split(',').filter(|item| !item.trim().is_empty()).map(parse).collect()
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("invalid boolean {other:?}: expected true or false")),
    }
}

impl Layer {
    /// Reads `CONSUL_DNS_<KEY>` for every key through `lookup` (tests pass a map; the binary
    /// passes `std::env::var`). Lists are comma-separated.
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Layer, (String, String)> {
        let mut layer = Layer::default();
        for key in KEYS {
            let var = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
            if let Some(value) = lookup(&var) {
                layer.set(key, &value).map_err(|message| (var, message))?;
            }
        }
        Ok(layer)
    }

    /// Sets one key from its text form.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "listen" => self.listen = Some(parse_list(value)?),
            "static" => self.static_catalog = Some(PathBuf::from(value)),
            "domain" => self.domain = Some(parse(value)?),
            "alt_domain" => self.alt_domain = Some(parse(value)?),
            "datacenter" => self.datacenter = Some(parse(value)?),
            "node_ttl" => self.node_ttl = Some(parse(value)?),
            "service_ttl" => self.service_ttl = Some(parse(value)?),
            "negative_ttl" => self.negative_ttl = Some(parse(value)?),
            "only_passing" => self.only_passing = Some(parse_bool(value)?),
            "udp_answer_limit" => self.udp_answer_limit = Some(parse(value)?),
            "a_record_limit" => self.a_record_limit = Some(parse(value)?),
            "max_udp_size" => self.max_udp_size = Some(parse(value)?),
            "udp_workers" => self.udp_workers = Some(parse(value)?),
            "log_level" => self.log_level = Some(value.to_owned()),
            "log_format" => self.log_format = Some(parse(value)?),
            "query_log_sample" => self.query_log_sample = Some(parse(value)?),
            "http" => self.http = Some(parse(value)?),
            "recursor" => self.recursor = Some(parse_list(value)?),
            "recursor_timeout" => self.recursor_timeout = Some(parse(value)?),
            "recursor_strategy" => self.recursor_strategy = Some(parse(value)?),
            "resolv_conf" => self.resolv_conf = Some(PathBuf::from(value)),
            "allow_recursion" => self.allow_recursion = Some(parse_list(value)?),
            "allow_query" => self.allow_query = Some(parse_list(value)?),
            "consul" => self.consul = Some(parse(value)?),
            "consul_token" => self.consul_token = Some(Secret::new(value)),
            "consul_token_file" => self.consul_token_file = Some(PathBuf::from(value)),
            "consul_ca_cert" => self.consul_ca_cert = Some(PathBuf::from(value)),
            "consul_stale" => self.consul_stale = Some(parse_bool(value)?),
            "consul_max_conns" => self.consul_max_conns = Some(parse(value)?),
            "consul_wait" => self.consul_wait = Some(parse(value)?),
            "datacenters" => self.datacenters = Some(parse_list(value)?),
            "translate_wan_addrs" => self.translate_wan_addrs = Some(parse_bool(value)?),
            "state_dir" => self.state_dir = Some(PathBuf::from(value)),
            "max_stale" => self.max_stale = Some(parse(value)?),
            "database_url" => self.database_url = Some(parse(value)?),
            "db_poll_interval" => self.db_poll_interval = Some(parse(value)?),
            "etcd" => self.etcd = Some(parse_list(value)?),
            "etcd_prefix" => self.etcd_prefix = Some(value.to_owned()),
            "source" => self.source = Some(parse(value)?),
            "ns_name" => self.ns_name = Some(parse(value)?),
            "ns_address" => self.ns_address = Some(parse(value)?),
            other => return Err(format!("unknown key {other:?}")),
        }
        Ok(())
    }

    /// `top` wins wherever it sets a value. A `service_ttl` table below a single duration on
    /// top keeps its patterns and takes the duration as its `*` entry.
    pub fn overlay(self, top: Layer) -> Layer {
        let service_ttl = match (self.service_ttl, top.service_ttl) {
            (Some(ServiceTtl::Table(mut table)), Some(ServiceTtl::All(secs))) => {
                table.insert("*".into(), secs);
                Some(ServiceTtl::Table(table))
            }
            (below, top) => top.or(below),
        };
        Layer {
            listen: top.listen.or(self.listen),
            static_catalog: top.static_catalog.or(self.static_catalog),
            source: top.source.or(self.source),
            domain: top.domain.or(self.domain),
            alt_domain: top.alt_domain.or(self.alt_domain),
            datacenter: top.datacenter.or(self.datacenter),
            node_ttl: top.node_ttl.or(self.node_ttl),
            service_ttl,
            negative_ttl: top.negative_ttl.or(self.negative_ttl),
            only_passing: top.only_passing.or(self.only_passing),
            udp_answer_limit: top.udp_answer_limit.or(self.udp_answer_limit),
            a_record_limit: top.a_record_limit.or(self.a_record_limit),
            max_udp_size: top.max_udp_size.or(self.max_udp_size),
            udp_workers: top.udp_workers.or(self.udp_workers),
            log_level: top.log_level.or(self.log_level),
            log_format: top.log_format.or(self.log_format),
            query_log_sample: top.query_log_sample.or(self.query_log_sample),
            http: top.http.or(self.http),
            recursor: top.recursor.or(self.recursor),
            recursor_timeout: top.recursor_timeout.or(self.recursor_timeout),
            recursor_strategy: top.recursor_strategy.or(self.recursor_strategy),
            resolv_conf: top.resolv_conf.or(self.resolv_conf),
            allow_recursion: top.allow_recursion.or(self.allow_recursion),
            allow_query: top.allow_query.or(self.allow_query),
            consul: top.consul.or(self.consul),
            consul_token: top.consul_token.or(self.consul_token),
            consul_token_file: top.consul_token_file.or(self.consul_token_file),
            consul_ca_cert: top.consul_ca_cert.or(self.consul_ca_cert),
            consul_stale: top.consul_stale.or(self.consul_stale),
            consul_max_conns: top.consul_max_conns.or(self.consul_max_conns),
            consul_wait: top.consul_wait.or(self.consul_wait),
            datacenters: top.datacenters.or(self.datacenters),
            translate_wan_addrs: top.translate_wan_addrs.or(self.translate_wan_addrs),
            state_dir: top.state_dir.or(self.state_dir),
            max_stale: top.max_stale.or(self.max_stale),
            database_url: top.database_url.or(self.database_url),
            db_poll_interval: top.db_poll_interval.or(self.db_poll_interval),
            etcd: top.etcd.or(self.etcd),
            etcd_prefix: top.etcd_prefix.or(self.etcd_prefix),
            ns_name: top.ns_name.or(self.ns_name),
            ns_address: top.ns_address.or(self.ns_address),
        }
    }
}
