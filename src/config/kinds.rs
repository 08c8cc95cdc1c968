//! The value types of settings that several areas read: parsed and checked here, where the
//! configuration is read, and used by the areas (which re-export them where they belong).
//! A leaf: std, serde and the wire-format helpers only.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The port DNS servers listen on, for recursor addresses given without one.
pub const DNS_PORT: u16 = 53;

/// A domain we are authoritative for, lower-case dotted text without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainName {
    text: Box<[u8]>,
    labels: usize,
}

impl DomainName {
    /// Parses `consul.` / `consul` / `Example.COM.`.
    pub fn new(text: &str) -> Option<DomainName> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let mut scratch = Vec::new();
        if lower.is_empty() || crate::wire::push_labels(&lower, &mut scratch).is_err() {
            return None;
        }
        let labels = lower.split('.').count();
        Some(DomainName { text: lower.into_bytes().into(), labels })
    }

    /// Dotted text without the trailing dot.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// Length of the domain on the wire, root byte included.
    pub fn wire_len(&self) -> usize {
        self.text.len() + 2
    }

    /// The lower-case dotted text as bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.text
    }

    /// How many labels it has.
    pub fn label_count(&self) -> usize {
        self.labels
    }
}

impl std::str::FromStr for DomainName {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DomainName::new(text).ok_or_else(|| format!("invalid domain {text:?}: expected a DNS name such as \"consul.\""))
    }
}

impl<'de> serde::Deserialize<'de> for DomainName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr/prefix`; host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
    /// `None` if the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let network = match addr {
            IpAddr::V4(v4) if prefix <= 32 => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & v4_mask(prefix))),
            IpAddr::V6(v6) if prefix <= 128 => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & v6_mask(prefix))),
            _ => return None,
        };
        Some(Cidr { network, prefix })
    }

    /// One address (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { network: addr, prefix }
    }

    /// Every IPv4 and every IPv6 address.
    pub fn any() -> [Cidr; 2] {
        [
            Cidr { network: Ipv4Addr::UNSPECIFIED.into(), prefix: 0 },
            Cidr { network: Ipv6Addr::UNSPECIFIED.into(), prefix: 0 },
        ]
    }

    /// `127.0.0.0/8` and `::1/128`.
    pub fn loopback() -> [Cidr; 2] {
        [Cidr { network: Ipv4Addr::new(127, 0, 0, 0).into(), prefix: 8 }, Cidr::host(Ipv6Addr::LOCALHOST.into())]
    }

    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => u32::from(ip) & v4_mask(self.prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => u128::from(ip) & v6_mask(self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;
    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (one host).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || {
            format!("invalid network {text:?}: expected ADDRESS/PREFIX (\"10.0.0.0/8\", \"fd00::/8\") or an address")
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        match prefix {
            Some(prefix) => Cidr::new(addr, prefix).ok_or_else(bad),
            None => Ok(Cidr::host(addr)),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// In which order the upstreams are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// In the configured order: the first is asked first, the others when it fails.
    #[default]
    Sequential,
    /// In a fresh random order for every question, spreading load.
    Random,
}

impl Strategy {
    /// The name the configuration uses (`sequential`, `random`).
    pub fn label(self) -> &'static str {
        match self {
            Strategy::Sequential => "sequential",
            Strategy::Random => "random",
        }
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "sequential" => Ok(Strategy::Sequential),
            "random" => Ok(Strategy::Random),
            other => Err(format!("invalid strategy {other:?}: expected sequential or random")),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `tracing`'s readable format (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, fields flattened (for log shippers).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("invalid log format {other:?}: expected text or json")),
        }
    }
}

/// The share of queries written to the query log: `0` (off, the default) to `1` (all).
/// Compared against a random `u32` per query, so a decision costs one generator step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Queries are logged when a random `u32` is below this (`1 << 32` = all).
    threshold: u64,
}

impl Sample {
    /// A rate in `0..=1`.
    pub fn from_rate(rate: f64) -> Result<Sample, String> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("invalid sample rate {rate}: expected 0 to 1 (0.01 = one query in 100)"));
        }
        Ok(Sample { threshold: (rate * (1u64 << 32) as f64).round() as u64 })
    }

    /// The rate, for logs.
    pub fn rate(self) -> f64 {
        self.threshold as f64 / (1u64 << 32) as f64
    }

    /// No query is logged.
    pub fn is_off(self) -> bool {
        self.threshold == 0
    }

    /// Whether to log this query.
    #[inline]
    pub fn hit(self, rng: &mut fastrand::Rng) -> bool {
        u64::from(rng.u32(..)) < self.threshold
    }
}

impl FromStr for Sample {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rate: f64 = text.trim().parse().map_err(|_| format!("invalid sample rate {text:?}: expected 0 to 1"))?;
        Sample::from_rate(rate)
    }
}

/// Labels that make a name something other than a plain name (S2.2): a name holding one is
/// never asked as itself.
const KIND_KEYWORDS: [&str; 7] = ["service", "connect", "ingress", "node", "addr", "query", "virtual"];

/// `ns_name` and `ns_address`: this daemon as the apex's name server when the catalog has no
/// `consul` service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameServerSetting {
    /// The name relative to the domain, lower-case dotted text (`ns`).
    pub relative: String,
    /// The address the name answers with.
    pub address: IpAddr,
}

impl NameServerSetting {
    /// `name` must lie below `domain` and hold no kind keyword, or it would never be asked as
    /// itself. The error is a sentence for the configuration's `ns_name`.
    pub fn new(name: &DomainName, domain: &DomainName, address: IpAddr) -> Result<NameServerSetting, String> {
        let relative = name.text().strip_suffix(domain.text()).and_then(|r| r.strip_suffix('.'));
        let Some(relative) = relative.filter(|r| !r.is_empty()) else {
            return Err(format!(
                "{}. is not below the domain {}.: the name server must be a name this daemon answers",
                name.text(),
                domain.text()
            ));
        };
        if let Some(keyword) = relative.split('.').find(|l| KIND_KEYWORDS.contains(l)) {
            return Err(format!("{}. holds the label {keyword:?}, which makes it a {keyword} name", name.text()));
        }
        crate::wire::push_labels(relative, &mut Vec::new()).map_err(|e| e.to_string())?;
        Ok(NameServerSetting { relative: relative.to_owned(), address })
    }
}
