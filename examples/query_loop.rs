//! Answers the benchmark's query mix in a loop without sockets, for instruction counts that do
//! not drift with machine load:
//! `valgrind --tool=callgrind target/release/examples/query_loop [QUERIES] [SERVICES] [INSTANCES]`
//! then divide the total by QUERIES (the setup is printed so it can be subtracted: run once
//! with QUERIES = 0).
//!
//! The mix is `bench/run.sh`'s `mixed.queries`: 50% SRV, 40% A, 10% A for names
//! that do not exist, services uniform at random.

use std::sync::Arc;

use consul_dns::catalog::{BuildOptions, Snapshot};
use consul_dns::dns::Settings;
use consul_dns::dns::acl::Access;
use consul_dns::dns::answer::{Scratch, Transport, respond};
use consul_dns::dns::name::DomainName;
use consul_dns::wire;

#[path = "../benches/support/synthetic.rs"]
mod synthetic;

fn arg(n: usize, default: usize) -> usize {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let (queries, services, instances) = (arg(1, 100_000), arg(2, 1000), arg(3, 3));
    let data = synthetic::catalog(services, instances);
    let options = BuildOptions::new("dc1", 0);
    let snapshot = Snapshot::build(&data, Arc::new(options));
    let settings = Settings::new(DomainName::new("consul.").unwrap());
    let mut rng = fastrand::Rng::with_seed(1);
    let packets: Vec<Vec<u8>> = (0..1024)
        .map(|_| {
            let (r, s) = (rng.f64(), rng.usize(..services));
            let (name, qtype) = match r {
                r if r < 0.5 => (format!("svc{s}.service.consul"), wire::rtype::SRV),
                r if r < 0.9 => (format!("svc{s}.service.consul"), wire::rtype::A),
                _ => (format!("missing{s}.service.consul"), wire::rtype::A),
            };
            let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            wire::push_name(&name, &mut p).unwrap();
            wire::push_u16(qtype, &mut p);
            wire::push_u16(1, &mut p);
            p
        })
        .collect();
    println!("setup done: {services} services x {instances}, {queries} queries");
    let mut scratch = Scratch::with_seed(2);
    let mut out = Vec::with_capacity(65535);
    let mut bytes = 0usize;
    for q in 0..queries {
        respond(
            &packets[q % packets.len()],
            &snapshot,
            &settings,
            Transport::Udp,
            Access::Query,
            &mut scratch,
            &mut out,
        );
        bytes += out.len();
    }
    println!("answered {queries} queries, {bytes} bytes");
}
