//! Who may ask what: `allow_query` (answered at all) and `allow_recursion` (names outside the
//! domain relayed to the recursors), as lists of networks, BIND's `allow-query` and
//! `allow-recursion`.
//!
//! Consul has no such control: whoever reaches its port gets an open resolver (S9.5). S15
//! recommends limiting recursion; the default here is BIND's `localhost; localnets;`, i.e.
//! loopback plus the networks of the host's own interfaces (read by
//! [`crate::dns::forward::host`]), so a Kong container on the same Docker network may recurse
//! and the Internet may not. Pure: no I/O.

use std::net::IpAddr;

pub use crate::config::Cidr;

/// What one client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Outside `allow_query`: REFUSED for every question.
    Refused,
    /// Answered from the catalog; names outside the domain are REFUSED, RA unset.
    Query,
    /// Also relayed to the recursors for names outside the domain (when there are any).
    Recurse,
}

/// The two allow-lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    /// Clients answered at all.
    pub allow_query: Vec<Cidr>,
    /// Clients whose out-of-domain questions are relayed (also needs `allow_query`).
    pub allow_recursion: Vec<Cidr>,
}

impl Default for Acl {
    /// Anyone may query; only loopback may recurse (the host's networks are added where the
    /// configuration is resolved, since reading them is I/O).
    fn default() -> Self {
        Acl { allow_query: Cidr::any().to_vec(), allow_recursion: Cidr::loopback().to_vec() }
    }
}

impl Acl {
    /// What `client` may do. A few networks, checked in order: cheap enough for every packet.
    pub fn access(&self, client: IpAddr) -> Access {
        if !self.allow_query.iter().any(|net| net.contains(client)) {
            Access::Refused
        } else if self.allow_recursion.iter().any(|net| net.contains(client)) {
            Access::Recurse
        } else {
            Access::Query
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_networks_and_hosts() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::1/8", "fd00::/8"),
            ("::1", "::1/128"),
            (" 172.16.0.0/12 ", "172.16.0.0/12"),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Cidr>().map(|c| c.to_string()), Ok(want.to_owned()), "{text}");
        }
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "localhost", "10.0.0.0/-1", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn contains_by_prefix_and_family() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("::1")), "families never mix");
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped counts as IPv4");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let [any4, any6] = Cidr::any();
        assert!(any4.contains(ip("203.0.113.9")) && any6.contains(ip("2001:db8::9")));
        assert!(Cidr::host(ip("127.0.0.1")).contains(ip("127.0.0.1")));
        assert!(!Cidr::host(ip("127.0.0.1")).contains(ip("127.0.0.2")));
    }

    #[test]
    fn access_levels() {
        let acl = Acl {
            allow_query: vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            allow_recursion: vec!["127.0.0.1".parse().unwrap()],
        };
        assert_eq!(acl.access(ip("127.0.0.1")), Access::Recurse);
        assert_eq!(acl.access(ip("127.0.0.2")), Access::Query);
        assert_eq!(acl.access(ip("10.9.9.9")), Access::Query);
        assert_eq!(acl.access(ip("192.0.2.1")), Access::Refused);
        let recursion_outside_query =
            Acl { allow_query: vec!["10.0.0.0/8".parse().unwrap()], allow_recursion: Cidr::any().to_vec() };
        assert_eq!(recursion_outside_query.access(ip("192.0.2.1")), Access::Refused, "allow_query comes first");
    }

    #[test]
    fn default_is_open_for_queries_and_loopback_for_recursion() {
        let acl = Acl::default();
        assert_eq!(acl.access(ip("127.0.0.53")), Access::Recurse);
        assert_eq!(acl.access(ip("::1")), Access::Recurse);
        assert_eq!(acl.access(ip("203.0.113.1")), Access::Query);
    }
}
