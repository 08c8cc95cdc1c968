//! Facts about the machine the daemon runs on, read at start and on SIGHUP: the nameservers
//! of resolv.conf (the recursors when none are configured; inside a Docker network that is
//! the engine's DNS at 127.0.0.11, which knows the container names Kong connects to) and the
//! networks of its interfaces (with loopback, the default `allow_recursion`, as BIND's
//! `localhost; localnets;`).
//!
//! Interfaces are read with `getifaddrs(3)` through the `if-addrs` crate: std has no API for
//! it, and the crate is a thin, widely used wrapper over libc (already in our tree) rather
//! than our own `unsafe`. Link-local addresses are skipped (the crate's default).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::dns::acl::Cidr;

/// The port recursors listen on when none is given (resolv.conf has no port syntax).
pub use crate::config::kinds::DNS_PORT;

/// What the machine says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// `nameserver` entries of resolv.conf, in file order.
    pub nameservers: Vec<IpAddr>,
    /// The addresses of the host's interfaces.
    pub addresses: Vec<IpAddr>,
    /// The networks those addresses are in.
    pub networks: Vec<Cidr>,
}

impl Host {
    /// Reads resolv.conf (when `resolv_conf` is given) and the interfaces. What cannot be read
    /// is left empty and described in the returned warnings, for the caller to log.
    pub fn probe(resolv_conf: Option<&Path>) -> (Host, Vec<String>) {
        let mut host = Host::default();
        let mut warnings = Vec::new();
        if let Some(path) = resolv_conf {
            match std::fs::read_to_string(path) {
                Ok(text) => host.nameservers = parse_resolv_conf(&text),
                Err(e) => warnings.push(format!("cannot read {}: {e}; no recursors from it", path.display())),
            }
        }
        match interfaces() {
            Ok(found) => {
                host.addresses = found.iter().map(|(ip, _)| *ip).collect();
                host.networks = found.iter().filter_map(|(ip, prefix)| Cidr::new(*ip, *prefix)).collect();
            }
            Err(e) => {
                warnings.push(format!("cannot list network interfaces: {e}; recursion allowed for loopback only"))
            }
        }
        (host, warnings)
    }
}

fn interfaces() -> io::Result<Vec<(IpAddr, u8)>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .map(|iface| match iface.addr {
            if_addrs::IfAddr::V4(v4) => (IpAddr::V4(v4.ip), v4.prefixlen),
            if_addrs::IfAddr::V6(v6) => (IpAddr::V6(v6.ip), v6.prefixlen),
        })
        .collect())
}

/// The `nameserver` addresses of a resolv.conf text. Entries with a zone (`fe80::1%eth0`) or
/// that do not parse are skipped, as the C library does with what it cannot use.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|addr| addr.parse().ok())
        .collect()
}

/// The recursors taken from resolv.conf: port 53, minus anything that would be ourselves, which
/// would loop: a listen address, or, when we listen on the wildcard, an address of one of our
/// interfaces. Other loopback addresses are kept: Docker's 127.0.0.11 is redirected to the
/// engine's resolver before it could reach a wildcard socket.
pub fn recursors_from(nameservers: &[IpAddr], listen: &[SocketAddr], own: &[IpAddr]) -> Vec<SocketAddr> {
    let is_self = |server: SocketAddr| {
        listen.iter().any(|l| {
            l.port() == server.port()
                && (l.ip() == server.ip()
                    || (l.ip().is_unspecified() && l.is_ipv4() == server.is_ipv4() && own.contains(&server.ip())))
        })
    };
    nameservers
        .iter()
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| SocketAddr::new(*ip, DNS_PORT))
        .filter(|server| !is_self(*server))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn parses_nameserver_lines() {
        let text = "# generated\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 127.0.0.11\n\
                    options ndots:5\nnameserver   ::1 \n;nameserver 192.0.2.9\nnameserver fe80::1%eth0\n\
                    nameserver bogus\nnameserver\nnameserver 192.0.2.53 # trailing comment\n";
        assert_eq!(parse_resolv_conf(text), ips(&["127.0.0.11", "::1", "192.0.2.53"]));
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn skips_our_own_listen_addresses() {
        let servers = ips(&["127.0.0.11", "127.0.0.1", "10.0.0.5", "192.0.2.53", "0.0.0.0"]);
        let own = ips(&["127.0.0.1", "10.0.0.5"]);
        let on = |listen: &[&str]| -> Vec<String> {
            let listen: Vec<SocketAddr> = listen.iter().map(|s| s.parse().unwrap()).collect();
            recursors_from(&servers, &listen, &own).iter().map(|s| s.to_string()).collect()
        };
        let all = ["127.0.0.11:53", "127.0.0.1:53", "10.0.0.5:53", "192.0.2.53:53"];
        assert_eq!(on(&["127.0.0.1:8600"]), all, "another port is not us");
        assert_eq!(on(&["127.0.0.1:53"]), ["127.0.0.11:53", "10.0.0.5:53", "192.0.2.53:53"]);
        assert_eq!(on(&["0.0.0.0:53"]), ["127.0.0.11:53", "192.0.2.53:53"], "the wildcard is every interface address");
        assert_eq!(on(&["[::]:53"]), all, "an IPv6 wildcard does not cover IPv4");
    }

    #[test]
    fn probe_reads_the_given_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        let (host, warnings) = Host::probe(Some(&path));
        assert_eq!(host.nameservers, ips(&["192.0.2.1"]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(host.addresses.iter().any(|ip| ip.is_loopback()), "loopback is an interface: {:?}", host.addresses);
        let (missing, warnings) = Host::probe(Some(&dir.path().join("nope")));
        assert!(missing.nameservers.is_empty());
        assert!(warnings[0].contains("nope"), "{warnings:?}");
        assert!(Host::probe(None).0.nameservers.is_empty(), "no file asked for, none read");
    }
}
