//! Test support: the real daemon on 127.0.0.1 port 0 (its ports read from the "DNS listening."
//! and "HTTP listening." log lines), real `dig`, and a small DNS client on hickory-proto.

pub mod client;
pub mod consul_agent;
pub mod daemon;
pub mod fake_consul;
pub mod go_examples;
pub mod http;
pub mod netns;
pub mod proxy;
pub mod stores;
pub mod upstream;

pub use client::{query_tcp, query_udp, query_udp_raw};
pub use daemon::{Daemon, dig};

use hickory_proto::rr::RecordType;

/// Whether `value` fits a pattern of the differential tests' lists of known differences: `*`
/// matches anything, `*suffix` a suffix, `a|b` either, anything else itself.
pub fn matches_pattern(pattern: &str, value: &str) -> bool {
    pattern
        .split('|')
        .any(|p| p == "*" || p == value || p.strip_prefix('*').is_some_and(|suffix| value.ends_with(suffix)))
}

/// A catalog with one node per instance: `count` instances of `service` on 127.1.x.y.
pub fn big_catalog(service: &str, count: usize) -> String {
    let mut text = String::from("datacenter = \"dc1\"\n");
    for i in 0..count {
        text.push_str(&format!(
            "[[nodes]]\nname = \"n{i}\"\naddress = \"127.1.{}.{}\"\n[[services]]\nname = \"{service}\"\nid = \"{service}-{i}\"\nnode = \"n{i}\"\nport = {}\n",
            i / 250,
            i % 250 + 1,
            10000 + i
        ));
    }
    text
}

/// The answer's record data over UDP with EDNS, sorted (`127.0.0.21`, `1 1 80 n1.node.dc1.consul.`).
pub fn rdata(d: &Daemon, name: &str, qtype: RecordType) -> Vec<String> {
    let reply = query_udp(d.addr, name, qtype, Some(4096));
    let mut out: Vec<String> = reply.message.answers.iter().map(|r| r.data.to_string()).collect();
    out.sort();
    out
}

/// The rcode of an A question for `name`.
pub fn rcode(d: &Daemon, name: &str) -> u16 {
    query_udp(d.addr, name, RecordType::A, Some(4096)).rcode()
}

/// The daemon syncing from the Consul HTTP API at `url` (blocking waits of 20 s), plus `extra`.
pub fn start_consul(url: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["--consul", url, "--consul-wait", "20s"];
    args.extend_from_slice(extra);
    Daemon::start_in(tempfile::tempdir().unwrap(), &args)
}
