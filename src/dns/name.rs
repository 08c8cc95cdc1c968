//! Name classification: which part of the Consul namespace a question asks for (S2).
//!
//! Accepted shapes, after the domain (`consul.` or the alt domain, longer first, S2.1) is removed
//! and the rightmost kind keyword is found (S2.2):
//! - `<svc>.service[.<dc>]`, `<tag>.<svc>.service[.<dc>]` (dotted tags re-joined, S2.6b),
//!   `_<svc>._<tcp|tag>.service[.<dc>]` (RFC 2782, S2.6c), and for SRV only the short form
//!   `_<svc>._<tcp|tag>[.<dc>]` (S2.3);
//! - `<svc>.connect[.<dc>]`, `<svc>.ingress[.<dc>]` (S2.10, no tag);
//! - `<node>.node[.<dc>]`, node names may hold dots (S2.7);
//! - `<hex>.addr[.<anything>]`, 8 or 32 hex digits (S2.8);
//! - the apex itself (S5);
//! - `<dc>` may also be written `<dc>.dc`; a peer (`<x>.peer`), other locality shapes,
//!   `.query.` (prepared queries, S2.9) and `.virtual.` (S2.10) are names we do not have.
//!
//! Names under `arpa.` are reverse lookups (S3.8); anything else is outside the domain.
//! Pure: no I/O, no catalog access.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::dns::message::LowerName;
use crate::wire::rtype;

/// Which endpoints of a service are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// `.service.`: all eligible instances.
    Service,
    /// `.connect.`: mesh-capable endpoints (S2.10).
    Connect,
    /// `.ingress.`: ingress gateways exposing the service (S2.10).
    Ingress,
}

/// What a question name asks for. Byte slices borrow the lower-cased name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query<'n> {
    /// The domain apex.
    Apex,
    /// A service lookup.
    Service {
        /// Service, connect or ingress.
        kind: ServiceKind,
        /// Service name.
        name: &'n [u8],
        /// Tag filter, if any.
        tag: Option<&'n [u8]>,
        /// Datacenter, if one was named.
        dc: Option<&'n [u8]>,
    },
    /// A node lookup.
    Node {
        /// Node name (may contain dots).
        name: &'n [u8],
        /// Datacenter, if one was named.
        dc: Option<&'n [u8]>,
    },
    /// An `.addr.` name: the address is in the name.
    Addr(IpAddr),
    /// In the domain, but no name of this shape can exist (NXDOMAIN).
    NotFound,
    /// Under `arpa.`: the address, when the name spells a whole one.
    Reverse(Option<IpAddr>),
    /// Not ours.
    Outside,
}

pub use crate::config::DomainName;

/// A classified question: what it asks for and where the matched domain starts in the question
/// name (a wire offset relative to the name's start; the "response domain" of S2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified<'n> {
    /// What the name asks for.
    pub query: Query<'n>,
    /// Offset of the matched domain's first length byte inside the question name.
    pub domain_offset: usize,
}

/// Classifies a lower-cased question name. `domains` lists the primary domain first.
pub fn classify<'n>(name: &'n LowerName, qtype: u16, domains: &[&DomainName]) -> Classified<'n> {
    let mut best: Option<&DomainName> = None;
    for domain in domains {
        if is_under(domain, name) && best.is_none_or(|b| domain.label_count() > b.label_count()) {
            best = Some(domain);
        }
    }
    let Some(domain) = best else {
        return Classified { query: outside(name), domain_offset: 0 };
    };
    let first_domain_label = name.label_count() - domain.label_count();
    let domain_offset = if first_domain_label == 0 { 0 } else { name.label_offset(first_domain_label) };
    let query = if first_domain_label == 0 { Query::Apex } else { in_domain(name, first_domain_label, qtype) };
    Classified { query, domain_offset }
}

fn outside(name: &LowerName) -> Query<'_> {
    let n = name.label_count();
    if n == 0 || name.label(n - 1) != b"arpa" {
        return Query::Outside;
    }
    Query::Reverse(reverse_address(name))
}

/// Finds the kind keyword scanning right to left (S2.2), or an `_` label for SRV (S2.3).
fn in_domain(name: &LowerName, end: usize, qtype: u16) -> Query<'_> {
    if name.has_dotted_label() {
        return Query::NotFound; // a literal dot inside a label never names anything we hold
    }
    for i in (0..end).rev() {
        let label = name.label(i);
        if qtype == rtype::SRV && label.first() == Some(&b'_') {
            return service(name, ServiceKind::Service, i + 1, (i + 1, end));
        }
        let suffixes = (i + 1, end);
        match label {
            b"service" => return service(name, ServiceKind::Service, i, suffixes),
            b"connect" => return service(name, ServiceKind::Connect, i, suffixes),
            b"ingress" => return service(name, ServiceKind::Ingress, i, suffixes),
            b"node" => return node(name, i, suffixes),
            b"addr" => return addr(name, i),
            b"query" | b"virtual" => return Query::NotFound,
            _ => {}
        }
    }
    Query::NotFound
}

/// Locality suffixes (S2.5): none → local DC, `<dc>` or `<dc>.dc` → that DC. `Err` for a peer
/// or any other shape, which we cannot have.
fn locality(name: &LowerName, (from, to): (usize, usize)) -> Result<Option<&[u8]>, ()> {
    match to - from {
        0 => Ok(None),
        1 => Ok(Some(name.label(from))),
        2 if name.label(from + 1) == b"dc" => Ok(Some(name.label(from))),
        _ => Err(()),
    }
}

fn service(name: &LowerName, kind: ServiceKind, parts: usize, suffixes: (usize, usize)) -> Query<'_> {
    let Ok(dc) = locality(name, suffixes) else { return Query::NotFound };
    let (svc, tag) = match parts {
        0 => return Query::NotFound,
        1 => (name.label(0), None),
        2 if name.label(0).starts_with(b"_") && name.label(1).starts_with(b"_") => {
            let proto = &name.label(1)[1..];
            (&name.label(0)[1..], (proto != b"tcp").then_some(proto))
        }
        _ => (name.label(parts - 1), Some(name.join(0, parts - 1))),
    };
    if kind != ServiceKind::Service && tag.is_some() {
        return Query::NotFound;
    }
    Query::Service { kind, name: svc, tag, dc }
}

fn node(name: &LowerName, parts: usize, suffixes: (usize, usize)) -> Query<'_> {
    let Ok(dc) = locality(name, suffixes) else { return Query::NotFound };
    if parts == 0 {
        return Query::NotFound;
    }
    Query::Node { name: name.join(0, parts), dc }
}

/// `<hex>.addr`: exactly one part of 8 (IPv4) or 32 (IPv6) hex digits (S2.8).
fn addr(name: &LowerName, parts: usize) -> Query<'_> {
    if parts != 1 {
        return Query::NotFound;
    }
    let hex = name.label(0);
    let mut bytes = [0u8; 16];
    if !matches!(hex.len(), 8 | 32) {
        return Query::NotFound;
    }
    for (i, pair) in hex.chunks(2).enumerate() {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(hi), Some(lo)) => bytes[i] = hi << 4 | lo,
            _ => return Query::NotFound,
        }
    }
    if hex.len() == 8 {
        Query::Addr(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])))
    } else {
        Query::Addr(IpAddr::V6(Ipv6Addr::from(bytes)))
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `d.c.b.a.in-addr.arpa` or 32 nibbles `.ip6.arpa` → the address they spell.
fn reverse_address(name: &LowerName) -> Option<IpAddr> {
    let n = name.label_count();
    if n == 6 && name.label(4) == b"in-addr" {
        let mut octets = [0u8; 4];
        for (i, octet) in octets.iter_mut().enumerate() {
            let label = std::str::from_utf8(name.label(3 - i)).ok()?;
            if label.len() > 1 && label.starts_with('0') {
                return None;
            }
            *octet = label.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if n == 34 && name.label(32) == b"ip6" {
        let mut bytes = [0u8; 16];
        for i in 0..32 {
            let label = name.label(31 - i);
            let nibble = if label.len() == 1 { hex_digit(label[0])? } else { return None };
            bytes[i / 2] |= nibble << if i % 2 == 0 { 4 } else { 0 };
        }
        return Some(IpAddr::V6(Ipv6Addr::from(bytes)));
    }
    None
}

/// Is `name` `domain` or a name under it?
fn is_under(domain: &DomainName, name: &LowerName) -> bool {
    let (n, labels) = (name.label_count(), domain.label_count());
    n >= labels && name.join(n - labels, n) == domain.bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::tests::query;
    use ServiceKind::*;

    fn check(name: &str, qtype: u16, want: Query<'_>) {
        let packet = query(name, qtype, None);
        let req = crate::dns::message::tests::parse(&packet).unwrap();
        let consul = DomainName::new("consul.").unwrap();
        let alt = DomainName::new("test.consul").unwrap();
        let got = classify(req.name(), qtype, &[&consul, &alt]).query;
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "{name} type {qtype}");
    }

    fn svc<'a>(name: &'a str, tag: Option<&'a str>, dc: Option<&'a str>) -> Query<'a> {
        Query::Service { kind: Service, name: name.as_bytes(), tag: tag.map(str::as_bytes), dc: dc.map(str::as_bytes) }
    }

    #[test]
    fn s2_6_service_shapes() {
        let a = rtype::A;
        check("user.service.consul", a, svc("user", None, None));
        check("USER.Service.CONSUL", a, svc("user", None, None));
        check("user.service.dc2.consul", a, svc("user", None, Some("dc2")));
        check("user.service.dc2.dc.consul", a, svc("user", None, Some("dc2")));
        check("v1.user.service.consul", a, svc("user", Some("v1"), None));
        check("v1.primary.db.service.consul", a, svc("db", Some("v1.primary"), None));
        check("_user._tcp.service.consul", rtype::SRV, svc("user", None, None));
        check("_user._v1.service.dc1.consul", rtype::SRV, svc("user", Some("v1"), Some("dc1")));
        check("_user._udp.service.consul", rtype::SRV, svc("user", Some("udp"), None));
        check("banana._db._primary.service.consul", rtype::SRV, svc("_primary", Some("banana._db"), None));
        check("service.consul", a, Query::NotFound);
        check("user.service.a.b.c.consul", a, Query::NotFound);
        check("user.service.p1.peer.consul", a, Query::NotFound);
    }

    #[test]
    fn s2_3_srv_shortcut_only_for_srv() {
        check("_db._tcp.consul", rtype::SRV, svc("db", None, None));
        check("_db._tcp.dc1.consul", rtype::SRV, svc("db", None, Some("dc1")));
        check("_db._tcp.consul", rtype::A, Query::NotFound);
    }

    #[test]
    fn s2_10_connect_and_ingress_take_no_tag() {
        let want = Query::Service { kind: Connect, name: b"web", tag: None, dc: None };
        check("web.connect.consul", rtype::A, want);
        let want = Query::Service { kind: Ingress, name: b"web", tag: None, dc: Some(b"dc2") };
        check("web.ingress.dc2.consul", rtype::A, want);
        check("v1.web.connect.consul", rtype::A, Query::NotFound);
        check("web.virtual.consul", rtype::A, Query::NotFound);
    }

    #[test]
    fn s2_7_nodes_and_s2_9_prepared_queries() {
        check("node1.node.consul", rtype::A, Query::Node { name: b"node1", dc: None });
        check("foo.bar.node.dc1.consul", rtype::A, Query::Node { name: b"foo.bar", dc: Some(b"dc1") });
        check("node.consul", rtype::A, Query::NotFound);
        check("geo.query.consul", rtype::A, Query::NotFound);
    }

    #[test]
    fn s2_8_addr_names() {
        check("7f000001.addr.consul", rtype::A, Query::Addr("127.0.0.1".parse().unwrap()));
        check("7F000001.addr.dc1.whatever.consul", rtype::A, Query::Addr("127.0.0.1".parse().unwrap()));
        let v6 = "20010db8000000000000000000000001.addr.dc1.consul";
        check(v6, rtype::AAAA, Query::Addr("2001:db8::1".parse().unwrap()));
        check("7f00001.addr.consul", rtype::A, Query::NotFound);
        check("7f00000g.addr.consul", rtype::A, Query::NotFound);
        check("x.7f000001.addr.consul", rtype::A, Query::NotFound);
    }

    #[test]
    fn s2_1_apex_alt_domain_and_outside() {
        check("consul", rtype::SOA, Query::Apex);
        check("test.consul", rtype::SOA, Query::Apex);
        check("web.service.test.consul", rtype::A, svc("web", None, None));
        check("example.com", rtype::A, Query::Outside);
        check("consul.example.com", rtype::A, Query::Outside);
        check("foo.consul", rtype::A, Query::NotFound);
        check(".", rtype::NS, Query::Outside);
    }

    #[test]
    fn s3_8_reverse_names() {
        check("1.0.0.127.in-addr.arpa", rtype::PTR, Query::Reverse(Some("127.0.0.1".parse().unwrap())));
        check("0.0.127.in-addr.arpa", rtype::PTR, Query::Reverse(None));
        check("01.0.0.127.in-addr.arpa", rtype::PTR, Query::Reverse(None));
        let nibbles = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        check(nibbles, rtype::PTR, Query::Reverse(Some("2001:db8::1".parse().unwrap())));
    }

    #[test]
    fn domain_offset_points_at_the_matched_domain() {
        let packet = query("web.service.test.consul", rtype::A, None);
        let req = crate::dns::message::tests::parse(&packet).unwrap();
        let consul = DomainName::new("consul").unwrap();
        let alt = DomainName::new("test.consul").unwrap();
        assert_eq!(classify(req.name(), rtype::A, &[&consul, &alt]).domain_offset, 12);
        assert_eq!(classify(req.name(), rtype::A, &[&consul]).domain_offset, 17);
    }
}
