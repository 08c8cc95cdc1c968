//! One layer of settings. The same struct is the command line (clap), the TOML file (serde,
//! unknown keys rejected) and the environment (`CONSUL_DNS_<KEY>`); layers are merged with
//! [`Layer::overlay`] as file < environment < flags.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use super::database::{DatabaseUrl, EtcdEndpoint};
use super::kinds::{Cidr, DomainName, LogFormat, Sample, Strategy};
use super::source::SourceKind;
use super::value::{
    Bounded, ConsulAddr, ConsulWait, HttpAddr, Label, ListenAddr, Millis, Recursor, Secret, Secs, ServiceTtl,
    one_or_many,
};

/// Prefix of every environment variable we read (besides Consul's own `CONSUL_HTTP_*`).
pub const ENV_PREFIX: &str = "CONSUL_DNS_";
/// Environment variable naming the config file, like `--config`.
pub const ENV_CONFIG: &str = "CONSUL_DNS_CONFIG";

/// Declares every key once — its doc (the `--help` text), flag, file key and parser — and
/// derives from that the [`Layer`] struct (clap and serde), [`KEYS`], the environment's parser
/// and the merge of two layers. The environment variable is `CONSUL_DNS_` + the upper-cased key.
macro_rules! keys {
    ($( $(#[$attr:meta])* $field:ident : $ty:ty = $key:literal by $parse:ident, )*) => {
        /// Settings as given by one source; `None` = not given here.
        #[derive(Debug, Clone, Default, PartialEq, Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Layer {
            $( $(#[$attr])* pub $field: Option<$ty>, )*
        }

        /// Every key, as written in the config file.
        pub const KEYS: &[&str] = &[$($key),*];

        impl Layer {
            /// Sets one key from its text form (an environment variable's value).
            fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
                match key {
                    $( $key => self.$field = Some($parse(value)?), )*
                    other => return Err(format!("unknown key {other:?}")),
                }
                Ok(())
            }

            /// Every key with its value as a person reads it (secrets as `***`); `None` = not
            /// given here.
            pub fn shown(&self) -> Vec<(&'static str, Option<String>)> {
                vec![$( ($key, self.$field.as_ref().map(super::show::Show::show)), )*]
            }

            /// Each key of `top` wins where it is set.
            fn overlay_keys(self, top: Layer) -> Layer {
                Layer { $( $field: top.$field.or(self.$field), )* }
            }
        }
    };
}

keys! {
    /// Address to answer DNS on, UDP and TCP; repeatable, IPv6 as [::1]:8600
    /// [default: 127.0.0.1:8600]
    #[arg(long, value_name = "ADDR")]
    #[serde(default, deserialize_with = "one_or_many")]
    listen: Vec<ListenAddr> = "listen" by parse_list,

    /// Static catalog file, TOML or JSON (.json), or `builtin` for the example built into the
    /// binary; with a live source, only the answers before its first sync
    #[arg(long = "static", value_name = "FILE")]
    #[serde(rename = "static")]
    static_catalog: PathBuf = "static" by path,

    /// Domain answered [default: consul.]
    #[arg(long, value_name = "DOMAIN")]
    domain: DomainName = "domain" by parse,

    /// A second domain answered like the first
    #[arg(long, value_name = "DOMAIN")]
    alt_domain: DomainName = "alt_domain" by parse,

    /// Local datacenter: answers names without a datacenter [default: dc1]
    #[arg(long, value_name = "DC")]
    datacenter: Label = "datacenter" by parse,

    /// TTL of node, .addr. and NS records, e.g. 5s; 0 as Consul [default: 5s]
    #[arg(long, value_name = "DURATION")]
    node_ttl: Secs = "node_ttl" by parse,

    /// TTL of service records; per-service patterns in the config file [default: 5s]
    #[arg(long, value_name = "DURATION")]
    service_ttl: ServiceTtl = "service_ttl" by parse,

    /// TTL of negative answers (SOA TTL and MINIMUM) [default: 5s]
    #[arg(long, value_name = "DURATION")]
    negative_ttl: Secs = "negative_ttl" by parse,

    /// Answer only instances whose checks all pass (drop warnings too) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    only_passing: bool = "only_passing" by parse_bool,

    /// Most answers in a UDP reply limited to 512 bytes, TC set when cut; 0 = bytes only
    /// [default: 3]
    #[arg(long, value_name = "N")]
    udp_answer_limit: Bounded<0, 65535> = "udp_answer_limit" by parse,

    /// Most A/AAAA records per service answer, no TC; 0 = no limit [default: 0]
    #[arg(long, value_name = "N")]
    a_record_limit: Bounded<0, 65535> = "a_record_limit" by parse,

    /// Largest UDP reply to EDNS clients, in bytes (512..=65535) [default: 1232]
    #[arg(long, value_name = "BYTES")]
    max_udp_size: Bounded<512, 65535> = "max_udp_size" by parse,

    /// UDP worker threads per listen address [default: the CPUs this process may use]
    #[arg(long, value_name = "N")]
    udp_workers: Bounded<1, 1024> = "udp_workers" by parse,

    /// Most TCP connections open at once; a new one beyond it closes the oldest idle one
    /// [default: 1024]
    #[arg(long, value_name = "N")]
    tcp_max_connections: Bounded<1, 65535> = "tcp_max_connections" by parse,

    /// Most TCP connections from one client (see tcp_client_prefix_v4/_v6); a new one beyond
    /// it closes that client's oldest idle one [default: 128]
    #[arg(long, value_name = "N")]
    tcp_max_per_client: Bounded<1, 65535> = "tcp_max_per_client" by parse,

    /// IPv4 prefix length counted as one TCP client: 32 = each address, 24 = each /24
    /// [default: 32]
    #[arg(long, value_name = "BITS")]
    tcp_client_prefix_v4: Bounded<0, 32> = "tcp_client_prefix_v4" by parse,

    /// IPv6 prefix length counted as one TCP client [default: 64]
    #[arg(long, value_name = "BITS")]
    tcp_client_prefix_v6: Bounded<0, 128> = "tcp_client_prefix_v6" by parse,

    /// A TCP connection without a complete query for this long since its last reply (or its
    /// start) is closed, e.g. 8s, 500ms [default: 8s]
    #[arg(long, value_name = "DURATION")]
    tcp_idle_timeout: Millis = "tcp_idle_timeout" by parse,

    /// A TCP connection whose client takes no reply for this long is closed [default: 2s]
    #[arg(long, value_name = "DURATION")]
    tcp_write_timeout: Millis = "tcp_write_timeout" by parse,

    /// Log filter: error, warn, info, debug, trace, or tracing directives [default: info]
    #[arg(long, value_name = "FILTER")]
    log_level: String = "log_level" by text,

    /// Log lines as text (readable) or json (one object per line) [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: LogFormat = "log_format" by parse,

    /// Share of queries written to the log (target consul_dns::query), 0 to 1, e.g. 0.01
    /// [default: 0, off]
    #[arg(long, value_name = "RATE")]
    query_log_sample: Sample = "query_log_sample" by parse,

    /// Address of the HTTP listener for /metrics, /health, /ready, /v1/catalog and
    /// /debug/pprof; `off` turns it off [default: 127.0.0.1:9153]
    #[arg(long, value_name = "ADDR")]
    http: HttpAddr = "http" by parse,

    /// Upstream resolver for names outside the domain, IP[:PORT] (port 53), repeatable; `none`
    /// turns recursion off (REFUSED outside the domain) [default: the nameservers of
    /// resolv_conf]
    #[arg(long, value_name = "ADDR")]
    #[serde(default, deserialize_with = "one_or_many")]
    recursor: Vec<Recursor> = "recursor" by parse_list,

    /// Time one recursor has to answer, e.g. 2s or 500ms [default: 2s]
    #[arg(long, value_name = "DURATION")]
    recursor_timeout: Millis = "recursor_timeout" by parse,

    /// Order recursors are asked in: sequential (first that works) or random [default:
    /// sequential]
    #[arg(long, value_name = "STRATEGY")]
    recursor_strategy: Strategy = "recursor_strategy" by parse,

    /// The file whose nameservers are the recursors when no recursor is given; read at start
    /// and on SIGHUP [default: /etc/resolv.conf]
    #[arg(long, value_name = "FILE")]
    resolv_conf: PathBuf = "resolv_conf" by path,

    /// Network (CIDR or address) whose clients may recurse, repeatable; others get REFUSED
    /// outside the domain [default: loopback and the networks of this host's interfaces]
    #[arg(long, value_name = "CIDR")]
    #[serde(default, deserialize_with = "one_or_many")]
    allow_recursion: Vec<Cidr> = "allow_recursion" by parse_list,

    /// Network (CIDR or address) whose clients are answered at all, repeatable; others get
    /// REFUSED for every question [default: any]
    #[arg(long, value_name = "CIDR")]
    #[serde(default, deserialize_with = "one_or_many")]
    allow_query: Vec<Cidr> = "allow_query" by parse_list,

    /// The live catalog source, `static`, `consul`, `database` or `etcd` [default: the one
    /// whose address is given, else the static catalog alone]
    #[arg(long, value_name = "SOURCE")]
    source: SourceKind = "source" by parse,

    /// Consul HTTP API to sync from, http://host:port or https://host:port; selects the Consul
    /// source [default with --source consul: CONSUL_HTTP_ADDR, else http://127.0.0.1:8500]
    #[arg(long, value_name = "URL")]
    consul: ConsulAddr = "consul" by parse,

    /// Consul ACL token, sent as X-Consul-Token, never logged [default: CONSUL_HTTP_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    consul_token: Secret = "consul_token" by secret,

    /// File holding the Consul ACL token [default: CONSUL_HTTP_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    consul_token_file: PathBuf = "consul_token_file" by path,

    /// PEM bundle of the CAs that sign Consul's https certificate [default: CONSUL_CACERT, else
    /// the built-in web roots]
    #[arg(long, value_name = "FILE")]
    consul_ca_cert: PathBuf = "consul_ca_cert" by path,

    /// Read with ?stale: any Consul server answers, also without a leader [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    consul_stale: bool = "consul_stale" by parse_bool,

    /// Most concurrent requests to Consul, long polls included (an agent allows 200 per
    /// client) [default: 32]
    #[arg(long, value_name = "N")]
    consul_max_conns: Bounded<4, 1000> = "consul_max_conns" by parse,

    /// How long Consul may hold a blocking query, e.g. 5m (at most 10m) [default: 5m]
    #[arg(long, value_name = "DURATION")]
    consul_wait: ConsulWait = "consul_wait" by parse,

    /// Datacenters to serve from Consul, repeatable [default: every one Consul lists]
    #[arg(long, value_name = "DC")]
    #[serde(default, deserialize_with = "one_or_many")]
    datacenters: Vec<Label> = "datacenters" by parse_list,

    /// Answer remote datacenters with their WAN addresses, as Consul's translate_wan_addrs
    /// [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    translate_wan_addrs: bool = "translate_wan_addrs" by parse_bool,

    /// Directory where the last good Consul catalog is kept, to answer after a restart while
    /// Consul is unreachable [default: none]
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf = "state_dir" by path,

    /// Oldest on-disk catalog still served at start-up, e.g. 1h [default: no limit]
    #[arg(long, value_name = "DURATION")]
    max_stale: Secs = "max_stale" by parse,

    /// SQL database holding the catalog, instead of the static catalog: sqlite://PATH,
    /// mysql://USER:PASS@HOST:PORT/DB or postgres://USER:PASS@HOST:PORT/DB (password never
    /// logged) [default: none]
    #[arg(long, value_name = "URL")]
    database_url: DatabaseUrl = "database_url" by parse,

    /// How often the database's change counter is checked, e.g. 1s or 200ms [default: 1s]
    #[arg(long, value_name = "DURATION")]
    db_poll_interval: Millis = "db_poll_interval" by parse,

    /// etcd endpoint holding the catalog, http://host:port, repeatable [default: none]
    #[arg(long, value_name = "URL")]
    #[serde(default, deserialize_with = "one_or_many")]
    etcd: Vec<EtcdEndpoint> = "etcd" by parse_list,

    /// Key prefix of the catalog in etcd [default: /consul-dns/]
    #[arg(long, value_name = "PREFIX")]
    etcd_prefix: String = "etcd_prefix" by text,

    /// This daemon's name as the apex NS when the catalog has no `consul` service, e.g.
    /// ns.consul. (with --ns-address)
    #[arg(long, value_name = "NAME")]
    ns_name: DomainName = "ns_name" by parse,

    /// The address --ns-name answers with
    #[arg(long, value_name = "IP")]
    ns_address: std::net::IpAddr = "ns_address" by parse,

    /// What version.bind (class CHAOS) answers, up to 255 printable characters; unset =
    /// REFUSED, as every other CHAOS question [default: unset]
    #[arg(long, value_name = "TEXT")]
    chaos_version: String = "chaos_version" by text,

    /// UDP responses per second to one client network (rrl_ipv4_prefix, rrl_ipv6_prefix),
    /// with one second's worth as burst; 0 turns rate limiting off [default: 1000]
    #[arg(long, value_name = "N")]
    rrl_responses_per_sec: Bounded<0, 1000000> = "rrl_responses_per_sec" by parse,

    /// Every Nth response over the rate goes out truncated (TC, no records) so real clients
    /// retry over TCP; the others are dropped; 0 = drop all [default: 2]
    #[arg(long, value_name = "N")]
    rrl_slip: Bounded<0, 100> = "rrl_slip" by parse,

    /// Prefix length that makes one IPv4 client network for rate limiting [default: 24]
    #[arg(long, value_name = "BITS")]
    rrl_ipv4_prefix: Bounded<8, 32> = "rrl_ipv4_prefix" by parse,

    /// Prefix length that makes one IPv6 client network for rate limiting [default: 56]
    #[arg(long, value_name = "BITS")]
    rrl_ipv6_prefix: Bounded<16, 128> = "rrl_ipv6_prefix" by parse,

    /// Network (CIDR or address) never rate limited, repeatable [default: loopback]
    #[arg(long, value_name = "CIDR")]
    rrl_exempt: Vec<Cidr> = "rrl_exempt" by parse_list,

    /// Never rate limit the clients allow_recursion lets in [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    rrl_exempt_recursion: bool = "rrl_exempt_recursion" by parse_bool,
}

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

fn path(value: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(value))
}

fn text(value: &str) -> Result<String, String> {
    Ok(value.to_owned())
}

fn secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
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

    /// Relative paths taken below `base` (the directory of the config file that gave them):
    /// `static` (except `builtin`), `resolv_conf`, `consul_token_file`, `consul_ca_cert`,
    /// `state_dir` and an SQLite `database_url`.
    pub fn rebase(mut self, base: &Path) -> Layer {
        let join = |path: &mut Option<PathBuf>| {
            if let Some(p) = path.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        };
        if self.static_catalog.as_deref().and_then(Path::to_str) != Some(super::source::BUILTIN) {
            join(&mut self.static_catalog);
        }
        for path in [&mut self.resolv_conf, &mut self.consul_token_file, &mut self.consul_ca_cert, &mut self.state_dir]
        {
            join(path);
        }
        self.database_url = self.database_url.map(|url| url.rebased(base));
        self
    }

    /// `top` wins wherever it sets a value. A `service_ttl` table below a single duration on
    /// top keeps its patterns and takes the duration as its `*` entry.
    pub fn overlay(self, top: Layer) -> Layer {
        let service_ttl = match (&self.service_ttl, &top.service_ttl) {
            (Some(ServiceTtl::Table(table)), Some(ServiceTtl::All(secs))) => {
                let mut table = table.clone();
                table.insert("*".into(), *secs);
                Some(ServiceTtl::Table(table))
            }
            _ => None,
        };
        let merged = self.overlay_keys(top);
        match service_ttl {
            Some(service_ttl) => Layer { service_ttl: Some(service_ttl), ..merged },
            None => merged,
        }
    }
}
