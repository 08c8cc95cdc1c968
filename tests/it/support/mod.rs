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
