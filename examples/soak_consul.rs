//! The Consul side of `bench/soak.sh`: the fake Consul of the integration tests on loopback
//! with SERVICES services × INSTANCES instances (each on its own node), changed once per
//! second (one instance re-registered with another port, in turn) until stdin closes.
//!
//! `cargo run --release --example soak_consul -- SERVICES INSTANCES` prints `url http://…`
//! once the catalog is loaded, then `changes N` when it stops.

#[path = "../tests/it/support/fake_consul.rs"]
#[allow(dead_code)]
mod fake_consul;

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fake_consul::{FakeConsul, Svc};

fn ip(n: usize) -> String {
    format!("10.{}.{}.{}", (n / 65536) % 256, (n / 256) % 256, n % 256)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (services, per_service) = (args.first().copied().unwrap_or(1000), args.get(1).copied().unwrap_or(3));
    let fake = FakeConsul::start("dc1", &[]);
    let instance = |s: usize, i: usize, port: u16| Svc {
        tags: vec!["primary".into()],
        ..Svc::new(&format!("svc{s}"), &format!("svc{s}-{i}"), port)
    };
    for s in 0..services {
        for i in 0..per_service {
            let n = s * per_service + i;
            fake.register_node("dc1", &format!("node{n}"), &ip(n), &[]);
            fake.register("dc1", &format!("node{n}"), instance(s, i, 20000 + i as u16));
        }
    }
    println!("url {}", fake.url());
    let _ = std::io::stdout().flush();

    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    std::thread::spawn(move || {
        for _ in std::io::stdin().lock().lines() {}
        stop.store(true, Ordering::Relaxed);
    });
    let mut changes = 0usize;
    let started = Instant::now();
    while !done.load(Ordering::Relaxed) {
        let n = changes % (services * per_service);
        let (s, i) = (n / per_service, n % per_service);
        let port = 30000 + (changes % 20000) as u16;
        fake.register("dc1", &format!("node{n}"), instance(s, i, port));
        changes += 1;
        let next = started + Duration::from_secs(changes as u64);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    println!("changes {changes}");
}
