//! How a setting's value is written for a person (`--print-config`): in the config file's own
//! syntax where there is one, secrets as `***`.

use std::net::IpAddr;
use std::path::PathBuf;

use super::database::{DatabaseUrl, EtcdEndpoint};
use super::kinds::{Cidr, DomainName, LogFormat, Sample, Strategy};
use super::source::SourceKind;
use super::value::{
    Bounded, ConsulAddr, ConsulWait, HttpAddr, Label, ListenAddr, Millis, Recursor, Secret, Secs, ServiceTtl,
};

/// A value as the config file would hold it.
pub trait Show {
    /// The value, TOML-like (`"5s"`, `["127.0.0.1:8600"]`, `true`).
    fn show(&self) -> String;
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

impl<T: Show> Show for Vec<T> {
    fn show(&self) -> String {
        format!("[{}]", self.iter().map(Show::show).collect::<Vec<_>>().join(", "))
    }
}

impl Show for ListenAddr {
    fn show(&self) -> String {
        quoted(&self.0.to_string())
    }
}

impl Show for PathBuf {
    fn show(&self) -> String {
        quoted(&self.display().to_string())
    }
}

impl Show for DomainName {
    fn show(&self) -> String {
        quoted(&format!("{}.", self.text()))
    }
}

impl Show for Label {
    fn show(&self) -> String {
        quoted(&self.0)
    }
}

impl Show for Secs {
    fn show(&self) -> String {
        quoted(&format!("{}s", self.0))
    }
}

impl Show for Millis {
    fn show(&self) -> String {
        let ms = self.0.as_millis();
        quoted(&match ms {
            ms if ms % 3_600_000 == 0 && ms > 0 => format!("{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 && ms > 0 => format!("{}m", ms / 60_000),
            ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
            ms => format!("{ms}ms"),
        })
    }
}

impl Show for ConsulWait {
    fn show(&self) -> String {
        Millis(self.0).show()
    }
}

impl Show for ServiceTtl {
    fn show(&self) -> String {
        match self {
            ServiceTtl::All(secs) => secs.show(),
            ServiceTtl::Table(table) => {
                let entries: Vec<String> = table.iter().map(|(k, v)| format!("{} = {}", quoted(k), v.show())).collect();
                format!("{{ {} }}", entries.join(", "))
            }
        }
    }
}

impl Show for bool {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl<const MIN: u32, const MAX: u32> Show for Bounded<MIN, MAX> {
    fn show(&self) -> String {
        self.0.to_string()
    }
}

impl Show for String {
    fn show(&self) -> String {
        quoted(self)
    }
}

impl Show for LogFormat {
    fn show(&self) -> String {
        quoted(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl Show for Sample {
    fn show(&self) -> String {
        self.rate().to_string()
    }
}

impl Show for HttpAddr {
    fn show(&self) -> String {
        quoted(&self.0.map_or_else(|| "off".to_owned(), |a| a.to_string()))
    }
}

impl Show for Recursor {
    fn show(&self) -> String {
        quoted(&self.0.map_or_else(|| "none".to_owned(), |a| a.to_string()))
    }
}

impl Show for Strategy {
    fn show(&self) -> String {
        quoted(self.label())
    }
}

impl Show for Cidr {
    fn show(&self) -> String {
        quoted(&self.to_string())
    }
}

impl Show for SourceKind {
    fn show(&self) -> String {
        quoted(match self {
            SourceKind::Static => "static",
            SourceKind::Consul => "consul",
            SourceKind::Database => "database",
            SourceKind::Etcd => "etcd",
        })
    }
}

impl Show for ConsulAddr {
    fn show(&self) -> String {
        quoted(&self.0)
    }
}

impl Show for Secret {
    fn show(&self) -> String {
        quoted("***")
    }
}

impl Show for DatabaseUrl {
    fn show(&self) -> String {
        quoted(&self.to_string())
    }
}

impl Show for EtcdEndpoint {
    fn show(&self) -> String {
        quoted(&self.0)
    }
}

impl Show for IpAddr {
    fn show(&self) -> String {
        quoted(&self.to_string())
    }
}

/// The defaults, as a layer (keys without a default value are `None`).
pub fn defaults() -> super::Layer {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::source::{DEFAULT_CONSUL_MAX_CONNS, DEFAULT_CONSUL_WAIT};
    use super::{DEFAULT_HTTP, DEFAULT_RECURSOR_TIMEOUT, DEFAULT_RESOLV_CONF, DEFAULT_TTL_SECS};
    let listen = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), super::value::DEFAULT_DNS_PORT);
    super::Layer {
        listen: Some(vec![ListenAddr(listen)]),
        domain: DomainName::new("consul."),
        datacenter: Some(Label("dc1".into())),
        node_ttl: Some(Secs(DEFAULT_TTL_SECS)),
        service_ttl: Some(ServiceTtl::All(Secs(DEFAULT_TTL_SECS))),
        negative_ttl: Some(Secs(DEFAULT_TTL_SECS)),
        only_passing: Some(false),
        udp_answer_limit: Some(Bounded(3)),
        a_record_limit: Some(Bounded(0)),
        max_udp_size: Some(Bounded(1232)),
        udp_workers: Some(Bounded(super::default_workers() as u32)),
        log_level: Some("info".into()),
        log_format: Some(LogFormat::Text),
        query_log_sample: Some(Sample::default()),
        http: Some(HttpAddr(Some(DEFAULT_HTTP))),
        recursor_timeout: Some(Millis(DEFAULT_RECURSOR_TIMEOUT)),
        recursor_strategy: Some(Strategy::Sequential),
        resolv_conf: Some(DEFAULT_RESOLV_CONF.into()),
        allow_query: Some(Cidr::any().to_vec()),
        consul_stale: Some(true),
        consul_max_conns: Some(Bounded(DEFAULT_CONSUL_MAX_CONNS)),
        consul_wait: Some(ConsulWait(DEFAULT_CONSUL_WAIT)),
        translate_wan_addrs: Some(false),
        db_poll_interval: Some(Millis(super::database::DEFAULT_DB_POLL_INTERVAL)),
        etcd_prefix: Some(super::database::DEFAULT_ETCD_PREFIX.into()),
        rrl_responses_per_sec: Some(Bounded(super::DEFAULT_RRL_RESPONSES_PER_SEC)),
        rrl_slip: Some(Bounded(super::DEFAULT_RRL_SLIP)),
        rrl_ipv4_prefix: Some(Bounded(super::DEFAULT_RRL_IPV4_PREFIX)),
        rrl_ipv6_prefix: Some(Bounded(super::DEFAULT_RRL_IPV6_PREFIX)),
        rrl_exempt: Some(Cidr::loopback().to_vec()),
        rrl_exempt_recursion: Some(false),
        ..super::Layer::default()
    }
}

/// What a key without a default value means when it is not set.
pub fn unset_meaning(key: &str) -> &'static str {
    match key {
        "static" => "no static catalog",
        "recursor" => "the nameservers of resolv_conf",
        "allow_recursion" => "loopback and the networks of this host's interfaces",
        "source" => "the live source whose address is given, else the static catalog alone",
        "consul" => "no Consul source (with source = consul: CONSUL_HTTP_ADDR, else http://127.0.0.1:8500)",
        "consul_token" => "CONSUL_HTTP_TOKEN, else no token",
        "consul_token_file" => "CONSUL_HTTP_TOKEN_FILE, else none",
        "consul_ca_cert" => "CONSUL_CACERT, else the built-in web roots",
        "datacenters" => "every datacenter Consul lists",
        "max_stale" => "no limit",
        "chaos_version" => "no version: CHAOS questions are refused",
        _ => "none",
    }
}
