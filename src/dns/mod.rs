//! The DNS layer: parse a request, classify its name, answer it from the current snapshot.
//!
//! `message` and `name` parse, `answer` builds responses (pure: no I/O, no async, no lock),
//! `acl` says what each client may do, `forward` relays what is not ours to upstream
//! resolvers, `server` owns the sockets. Must not import `backend`; reads the catalog only
//! through [`crate::catalog::Catalog::load`].

pub mod acl;
pub mod answer;
pub mod forward;
pub mod message;
pub mod name;
pub mod rrl;
pub mod server;
pub mod tcp;
pub mod udp_batch;

use std::net::IpAddr;

use acl::Acl;
use forward::Recursion;
use forward::host::{self, Host};

use crate::catalog::records::Addr;
use name::DomainName;

use crate::config::kinds::NameServerSetting;
use crate::config::{Config, Recursors};

/// This daemon as the apex's name server, for catalogs without a `consul` service (S5.4):
/// `ns_name` (a name in the domain) answers A/AAAA with `ns_address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnNameServer {
    /// The name relative to the domain, lower-case dotted text (`ns`).
    relative: Box<str>,
    /// The same as wire labels, without the root: the NS target before the response domain.
    labels: Box<[u8]>,
    /// The address record `ns_name` answers with.
    address: Addr,
}

impl OwnNameServer {
    /// The apex name server a checked `ns_name`/`ns_address` describe.
    pub fn new(setting: &NameServerSetting) -> Result<OwnNameServer, String> {
        let mut labels = Vec::new();
        crate::wire::push_labels(&setting.relative, &mut labels).map_err(|e| e.to_string())?;
        let address = match setting.address {
            IpAddr::V4(ip) => Addr::V4(ip.octets()),
            IpAddr::V6(ip) => Addr::V6(ip.octets()),
        };
        Ok(OwnNameServer { relative: setting.relative.as_str().into(), labels: labels.into(), address })
    }

    /// The NS target's labels, to be followed by the response domain.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The address `ns_name` answers with.
    pub fn address(&self) -> &Addr {
        &self.address
    }

    /// Whether the lower-case dotted `name` is `ns_name` under one of `domains`.
    pub fn is(&self, name: &[u8], domains: impl Iterator<Item = impl AsRef<str>>) -> bool {
        let relative = self.relative.as_bytes();
        let Some(rest) = name.strip_prefix(relative).and_then(|r| r.strip_prefix(b".")) else { return false };
        domains.into_iter().any(|d| d.as_ref().as_bytes() == rest)
    }
}

/// SOA timers other than MINIMUM (S5.1), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoaTimers {
    /// REFRESH (Consul: 3600).
    pub refresh: u32,
    /// RETRY (Consul: 600).
    pub retry: u32,
    /// EXPIRE (Consul: 86400).
    pub expire: u32,
}

impl Default for SoaTimers {
    fn default() -> Self {
        SoaTimers { refresh: 3600, retry: 600, expire: 86_400 }
    }
}

/// How the DNS layer answers, derived once from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The primary domain (`consul.`).
    pub domain: DomainName,
    /// A second domain answered the same way (S2.1).
    pub alt_domain: Option<DomainName>,
    /// `domain` in wire format, for SOA owners of reverse answers.
    pub domain_wire: Box<[u8]>,
    /// TTL of negative answers: SOA TTL and MINIMUM (S6.4).
    pub negative_ttl: u32,
    /// SOA timers.
    pub soa: SoaTimers,
    /// Most answers in a UDP response limited to 512 bytes (S7.2); 0 = only the byte limit.
    pub udp_answer_limit: usize,
    /// Most A/AAAA/ANY records in a service answer (S7.6); 0 = no limit.
    pub a_record_limit: usize,
    /// Largest UDP response we send to EDNS clients, and the size our OPT advertises.
    pub max_udp_size: u16,
    /// Upstream resolvers for names outside the domain (S9); none = REFUSED there (S1.4).
    pub recursion: Recursion,
    /// Who may query and who may recurse; RA is set only for the latter, and only when there
    /// are recursors (S1.5 as S15 recommends).
    pub acl: Acl,
    /// The share of queries written to the query log (off by default).
    pub query_log: crate::telemetry::Sample,
    /// This daemon as the apex's NS when the catalog names no servers (S5.4).
    pub own_name_server: Option<OwnNameServer>,
    /// What `version.bind` (class CHAOS) answers; `None` = REFUSED (S8.4).
    pub chaos_version: Option<Box<str>>,
    /// Response-rate limiting of UDP answers; `None` = off (S1.7).
    pub rrl: Option<rrl::RateLimit>,
}

impl Settings {
    /// What the DNS layer reads per query, from the configuration. `host` supplies the
    /// defaults that depend on the machine: resolv.conf's nameservers (minus our own listen
    /// addresses, which would loop) and the networks allowed to recurse.
    pub fn from_config(config: &Config, host: &Host) -> Settings {
        let mut settings = Settings::new(config.domain.clone());
        settings.alt_domain = config.alt_domain.clone();
        settings.negative_ttl = config.negative_ttl;
        settings.udp_answer_limit = config.udp_answer_limit as usize;
        settings.a_record_limit = config.a_record_limit as usize;
        settings.max_udp_size = config.max_udp_size;
        let upstreams = match &config.recursors {
            Recursors::Listed(list) => list.clone(),
            Recursors::ResolvConf(_) => host::recursors_from(&host.nameservers, &config.listen, &host.addresses),
            Recursors::Off => Vec::new(),
        };
        settings.recursion =
            Recursion { upstreams, timeout: config.recursor_timeout, strategy: config.recursor_strategy };
        let allow_recursion = match &config.allow_recursion {
            Some(list) => list.clone(),
            None => {
                let mut localnets = acl::Cidr::loopback().to_vec();
                for net in &host.networks {
                    if !localnets.contains(net) {
                        localnets.push(*net); // lo's own 127.0.0.0/8 and ::1 are there already
                    }
                }
                localnets
            }
        };
        settings.acl = Acl { allow_query: config.allow_query.clone(), allow_recursion };
        settings.query_log = config.query_log_sample;
        // Checked when the configuration was read; a setting that no longer builds is left out.
        settings.own_name_server = config.own_name_server.as_ref().and_then(|s| OwnNameServer::new(s).ok());
        settings.chaos_version = config.chaos_version.as_deref().map(Box::from);
        settings.rrl = rrl::RateLimit::from_config(&config.rrl);
        settings
    }

    /// Settings for `domain` with the defaults documented in the README.
    pub fn new(domain: DomainName) -> Settings {
        let mut domain_wire = Vec::new();
        // A DomainName is validated at construction, so it always encodes.
        let _ = crate::wire::push_name(domain.text(), &mut domain_wire);
        Settings {
            domain,
            alt_domain: None,
            domain_wire: domain_wire.into(),
            negative_ttl: 5,
            soa: SoaTimers::default(),
            udp_answer_limit: 3,
            a_record_limit: 0,
            max_udp_size: 1232,
            recursion: Recursion::default(),
            acl: Acl::default(),
            query_log: crate::telemetry::Sample::default(),
            own_name_server: None,
            chaos_version: None,
            rrl: None,
        }
    }

    /// The domains to match, primary first.
    pub fn domains(&self) -> impl Iterator<Item = &DomainName> {
        std::iter::once(&self.domain).chain(self.alt_domain.as_ref())
    }
}
