//! Typed values shared by flags, environment variables and the TOML file: each parses from a
//! string (flags, env) and deserializes from TOML, with one error message for all three.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The DNS port Consul uses (S1.1), taken when an address has none.
pub const DEFAULT_DNS_PORT: u16 = 8600;

/// A listen address: `IP:PORT`, `[IPv6]:PORT`, or a bare IP (port 8600).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ListenAddr(addr));
        }
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .map(|ip| ListenAddr(SocketAddr::new(ip, DEFAULT_DNS_PORT)))
            .map_err(|_| format!("invalid address {text:?}: expected IP:PORT, [IPv6]:PORT or IP"))
    }
}

/// The longest TTL (and duration in whole seconds) accepted: 2^31-1 seconds, the largest TTL
/// RFC 2181 §8 allows (about 68 years).
pub const MAX_SECS: u32 = i32::MAX as u32;

/// A duration in whole seconds: `30`, `"30"`, `"30s"`, `"5m"`, `"1h30m"` (Go duration syntax
/// as Consul uses it, S6.6). DNS TTLs are whole seconds, so `"1500ms"` is an error rather than
/// a silent 1 s, and so is anything above [`MAX_SECS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Secs(pub u32);

impl Secs {
    fn checked(secs: u64, text: &dyn fmt::Display) -> Result<Secs, String> {
        u32::try_from(secs).ok().filter(|s| *s <= MAX_SECS).map(Secs).ok_or_else(|| {
            format!("{text} is too long: the most is {MAX_SECS} seconds (about 68 years, the largest DNS TTL)")
        })
    }
}

impl FromStr for Secs {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let ms = parse_duration_ms(trimmed).ok_or_else(|| {
            format!("invalid duration {text:?}: expected whole seconds or e.g. \"5s\", \"1m30s\", \"1h\"")
        })?;
        if ms % 1000 != 0 {
            return Err(format!("invalid duration {text:?}: DNS TTLs are whole seconds; write e.g. \"1s\" or \"2s\""));
        }
        Secs::checked(ms / 1000, &format_args!("{trimmed:?}"))
    }
}

/// Go-style duration to milliseconds; a bare number means seconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    if let Ok(secs) = text.parse::<u64>() {
        return secs.checked_mul(1000);
    }
    let mut rest = text;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(scale)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

struct SecsVisitor;

impl Visitor<'_> for SecsVisitor {
    type Value = Secs;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: whole seconds, or a string like \"5s\" or \"1m\"")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
        let secs = u64::try_from(v).map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))?;
        Secs::checked(secs, &v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
        Secs::checked(v, &v).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
        Err(E::custom(format!("invalid duration {v}: DNS TTLs are whole seconds; write e.g. \"1s\"")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secs, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecsVisitor)
    }
}

/// `service_ttl`: one duration for every service, or Consul's table of exact names,
/// `prefix*` patterns and `*` (S6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceTtl {
    /// One TTL for all.
    All(Secs),
    /// Per-name TTLs.
    Table(BTreeMap<String, Secs>),
}

impl FromStr for ServiceTtl {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(ServiceTtl::All)
    }
}

/// Reads `service_ttl` entry by entry, so that a bad entry's error points at that entry's line,
/// not at the table.
struct ServiceTtlVisitor;

impl<'de> Visitor<'de> for ServiceTtlVisitor {
    type Value = ServiceTtl;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration (\"5s\") or a table of service name patterns to durations ({ \"*\" = \"5s\", \"db*\" = \"30s\" })")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ServiceTtl, E> {
        SecsVisitor.visit_i64(v).map(ServiceTtl::All)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ServiceTtl, E> {
        SecsVisitor.visit_u64(v).map(ServiceTtl::All)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ServiceTtl, E> {
        SecsVisitor.visit_f64(v).map(ServiceTtl::All)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ServiceTtl, E> {
        SecsVisitor.visit_str(v).map(ServiceTtl::All)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ServiceTtl, A::Error> {
        let mut table = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let secs: Secs = map.next_value()?;
            table.insert(key, secs);
        }
        Ok(ServiceTtl::Table(table))
    }
}

impl<'de> Deserialize<'de> for ServiceTtl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ServiceTtlVisitor)
    }
}

/// How long Consul may hold a blocking query: above 0 and at most 10 minutes, Consul's own
/// cap (H3.3). Checked where it is read, whatever the source, so a file error has its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsulWait(pub Duration);

/// Consul's cap on a blocking query's `wait` (H3.3).
pub const MAX_CONSUL_WAIT: Duration = Duration::from_secs(600);

impl ConsulWait {
    fn checked(wait: Duration, text: &dyn fmt::Display) -> Result<ConsulWait, String> {
        if wait.is_zero() || wait > MAX_CONSUL_WAIT {
            return Err(format!(
                "consul_wait {text} is out of range: it must be above 0 and at most 10m, Consul's cap"
            ));
        }
        Ok(ConsulWait(wait))
    }
}

impl FromStr for ConsulWait {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Millis(wait) = text.parse()?;
        ConsulWait::checked(wait, &format_args!("{:?}", text.trim()))
    }
}

impl<'de> Deserialize<'de> for ConsulWait {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Secs(u64),
            Text(String),
        }
        match Shape::deserialize(d) {
            Ok(Shape::Secs(secs)) => ConsulWait::checked(Duration::from_secs(secs), &secs).map_err(de::Error::custom),
            Ok(Shape::Text(text)) => text.parse().map_err(de::Error::custom),
            Err(_) => Err(de::Error::custom("expected a duration: seconds, or a string like \"5m\"")),
        }
    }
}

/// A list key in the file: a list, or one value alone (`listen = "127.0.0.1:53"`). The items
/// are strings; each item's error points at that item.
pub fn one_or_many<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<T>>, D::Error> {
    struct OneOrMany<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            use serde::de::IntoDeserializer;
            T::deserialize(v.into_deserializer()).map(|one| vec![one])
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut list = Vec::new();
            while let Some(item) = seq.next_element()? {
                list.push(item);
            }
            Ok(list)
        }
    }
    d.deserialize_any(OneOrMany(std::marker::PhantomData)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, secs) in [("0", 0), ("30", 30), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2000ms", 2), ("0s", 0)]
        {
            assert_eq!(text.parse::<Secs>(), Ok(Secs(secs)), "{text}");
        }
        assert_eq!("2147483647".parse::<Secs>(), Ok(Secs(MAX_SECS)));
        for bad in ["", "5x", "s", "-1", "1.5s", "99999999999h", "1500ms", "2147483648", "596524h"] {
            assert!(bad.parse::<Secs>().is_err(), "{bad}");
        }
    }

    #[test]
    fn recursors() {
        let parse = |text: &str| text.parse::<Recursor>().map(|r| r.0.map(|a| a.to_string()));
        assert_eq!(parse("10.0.0.2"), Ok(Some("10.0.0.2:53".into())));
        assert_eq!(parse("10.0.0.2:5353"), Ok(Some("10.0.0.2:5353".into())));
        assert_eq!(parse("::1"), Ok(Some("[::1]:53".into())));
        assert_eq!(parse("[::1]:5353"), Ok(Some("[::1]:5353".into())));
        assert_eq!(parse("None"), Ok(None));
        for bad in ["0.0.0.0", "[::]:53", "10.0.0.2:0", "dns.example", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn millis() {
        for (text, ms) in [("2", 2000), ("2s", 2000), ("500ms", 500), ("1m", 60_000)] {
            assert_eq!(text.parse::<Millis>(), Ok(Millis(Duration::from_millis(ms))), "{text}");
        }
        assert!("soon".parse::<Millis>().is_err());
    }

    #[test]
    fn h1_1_consul_addresses() {
        let url = |text: &str, ssl: bool| text.parse::<ConsulAddr>().map(|a| a.url(ssl));
        assert_eq!(url("http://127.0.0.1:8500", true), Ok("http://127.0.0.1:8500".into()));
        assert_eq!(url("https://consul:8501/", false), Ok("https://consul:8501".into()));
        assert_eq!(url("127.0.0.1:8500", false), Ok("http://127.0.0.1:8500".into()));
        assert_eq!(url("127.0.0.1:8500", true), Ok("https://127.0.0.1:8500".into()));
        assert!(url("unix:///run/consul.sock", false).unwrap_err().contains("unix"));
        assert!(url("http://", false).is_err() && url("ftp://x", false).is_err());
        assert_eq!(format!("{:?}", Secret::new(" s3cr3t\n")), "<redacted>");
        assert_eq!(Secret::new(" s3cr3t\n").expose(), "s3cr3t");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!("127.0.0.1:53".parse::<ListenAddr>().unwrap().0, "127.0.0.1:53".parse().unwrap());
        assert_eq!("::1".parse::<ListenAddr>().unwrap().0, "[::1]:8600".parse().unwrap());
        assert_eq!("[::1]:0".parse::<ListenAddr>().unwrap().0, "[::1]:0".parse().unwrap());
        assert!("localhost:53".parse::<ListenAddr>().is_err());
    }
}

/// Implements `Deserialize` through `FromStr` for a type read from a TOML string.
macro_rules! deserialize_from_str {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(de::Error::custom)
            }
        }
    };
}

deserialize_from_str!(ListenAddr);
deserialize_from_str!(Label);
deserialize_from_str!(Recursor);
deserialize_from_str!(super::kinds::Cidr);
deserialize_from_str!(super::kinds::Strategy);

/// A recursor (S9.1): `IP` (port 53), `IP:PORT`, `[IPv6]:PORT`, or `none`, which turns
/// recursion off (no resolv.conf either). The wildcard addresses are rejected, as Consul does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recursor(pub Option<SocketAddr>);

impl FromStr for Recursor {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(Recursor(None));
        }
        let bad = || format!("invalid recursor {text:?}: expected IP, IP:PORT, [IPv6]:PORT or none");
        let addr = match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                let bare = text.trim_start_matches('[').trim_end_matches(']');
                SocketAddr::new(bare.parse::<IpAddr>().map_err(|_| bad())?, super::kinds::DNS_PORT)
            }
        };
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(format!("invalid recursor {text:?}: needs a real address and port, not a wildcard"));
        }
        Ok(Recursor(Some(addr)))
    }
}

/// A duration with millisecond precision: `2`, `"2s"`, `"500ms"`, `"1m"` (a bare number is
/// seconds, as everywhere in this file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub Duration);

impl FromStr for Millis {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_duration_ms(text.trim())
            .map(|ms| Millis(Duration::from_millis(ms)))
            .ok_or_else(|| format!("invalid duration {text:?}: expected seconds or e.g. \"2s\", \"500ms\""))
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Secs(u64),
            Text(String),
        }
        match Shape::deserialize(d) {
            Ok(Shape::Secs(secs)) => Ok(Millis(Duration::from_secs(secs))),
            Ok(Shape::Text(text)) => text.parse().map_err(de::Error::custom),
            Err(_) => Err(de::Error::custom("expected a duration: seconds, or a string like \"2s\" or \"500ms\"")),
        }
    }
}

/// A secret (the Consul token): shown as `<redacted>` by `Debug`, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret; surrounding whitespace (a token file's newline) is dropped.
    pub fn new(text: &str) -> Secret {
        Secret(text.trim().to_owned())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(text))
    }
}

deserialize_from_str!(Secret);

/// The Consul address (H1.1): `http://host:port`, `https://host:port`, or `host:port` (http,
/// or https with `CONSUL_HTTP_SSL=true`, decided when the configuration is resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulAddr(pub String);

impl FromStr for ConsulAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad =
            || format!("invalid Consul address {text:?}: expected http://host:port, https://host:port or host:port");
        let (scheme, rest) = match text.split_once("://") {
            Some(("unix", _)) => return Err(format!("{text:?}: unix sockets are not supported; use http://host:port")),
            Some((scheme @ ("http" | "https"), rest)) => (Some(scheme), rest),
            Some(_) => return Err(bad()),
            None => (None, text),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(bad());
        }
        Ok(ConsulAddr(scheme.map_or_else(|| rest.to_owned(), |s| format!("{s}://{rest}"))))
    }
}

deserialize_from_str!(ConsulAddr);

impl ConsulAddr {
    /// The base URL: the scheme given, else `https` when `ssl`, else `http`.
    pub fn url(&self, ssl: bool) -> String {
        if self.0.contains("://") {
            self.0.clone()
        } else {
            format!("{}://{}", if ssl { "https" } else { "http" }, self.0)
        }
    }
}

/// One DNS label of letters, digits, `-` and `_` (a datacenter name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(pub String);

impl FromStr for Label {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if crate::catalog::model::is_dns_label(text) {
            Ok(Label(text.to_owned()))
        } else {
            Err(format!("invalid name {text:?}: expected one DNS label (letters, digits, '-', '_')"))
        }
    }
}

/// An integer that must lie in `MIN..=MAX` (checked where it is read, so a file error has a
/// line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: u32, const MAX: u32>(pub u32);

impl<const MIN: u32, const MAX: u32> Bounded<MIN, MAX> {
    fn check(value: i64) -> Result<Self, String> {
        if (MIN as i64..=MAX as i64).contains(&value) {
            Ok(Bounded(value as u32))
        } else {
            Err(format!("{value} is out of range: expected a whole number from {MIN} to {MAX}"))
        }
    }
}

impl<const MIN: u32, const MAX: u32> FromStr for Bounded<MIN, MAX> {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let value: i64 = text
            .trim()
            .parse()
            .map_err(|_| format!("invalid number {text:?}: expected a whole number from {MIN} to {MAX}"))?;
        Self::check(value)
    }
}

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Number<const MIN: u32, const MAX: u32>;
        impl<const MIN: u32, const MAX: u32> Visitor<'_> for Number<MIN, MAX> {
            type Value = Bounded<MIN, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a whole number from {MIN} to {MAX}")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Bounded::check(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Bounded::check(i64::try_from(v).unwrap_or(i64::MAX)).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Number::<MIN, MAX>)
    }
}

/// The HTTP listener's address (`IP:PORT`, `[IPv6]:PORT`), or `off` (also `none` or empty) for
/// no listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAddr(pub Option<SocketAddr>);

impl FromStr for HttpAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("off") || text.eq_ignore_ascii_case("none") {
            return Ok(HttpAddr(None));
        }
        text.parse::<SocketAddr>()
            .map(|addr| HttpAddr(Some(addr)))
            .map_err(|_| format!("invalid HTTP address {text:?}: expected IP:PORT, [IPv6]:PORT or off"))
    }
}

deserialize_from_str!(HttpAddr);
deserialize_from_str!(super::kinds::LogFormat);

impl<'de> Deserialize<'de> for super::kinds::Sample {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Rate(f64),
            Text(String),
        }
        match Shape::deserialize(d) {
            Ok(Shape::Rate(rate)) => super::kinds::Sample::from_rate(rate).map_err(de::Error::custom),
            Ok(Shape::Text(text)) => text.parse().map_err(de::Error::custom),
            Err(_) => Err(de::Error::custom("expected a rate from 0 to 1, e.g. 0.01")),
        }
    }
}
