//! Scale bench for the Consul backend: 10,000 services × 10 instances (on 10,000 nodes) in the
//! fake Consul of the integration tests, synced by the real daemon.
//!
//! `cargo run --release --example consul_scale [-- SERVICES INSTANCES MAX_CONNS]` builds the
//! release binary if needed, then reports: initial sync time, the most requests Consul saw in
//! flight at once (must not exceed `--consul-max-conns`), the daemon's RSS, and the time from
//! one change to its DNS answer for a check flip, a new instance with a new tag, and a
//! re-registration that only changes a port (the case that re-reads every service, H3.4).
//! `NO_STATE_DIR=1` runs without `--state-dir`; `SHOW_PUBLISH=1` prints each publish's cost.

#[path = "../tests/it/support/fake_consul.rs"]
#[allow(dead_code)]
mod fake_consul;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fake_consul::{FakeConsul, Svc};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (services, per_service, max_conns) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(10),
        args.get(2).copied().unwrap_or(32),
    );
    let nodes = services.max(1);
    let binary = build_daemon();

    let started = Instant::now();
    let fake = FakeConsul::start("dc1", &[]);
    for n in 0..nodes {
        fake.register_node("dc1", &format!("node{n}"), &ip(n), &[("rack", "r1")]);
    }
    for s in 0..services {
        for i in 0..per_service {
            let node = format!("node{}", (s * per_service + i) % nodes);
            let id = format!("svc{s}-{i}");
            let check = (format!("service:{id}"), "passing".to_owned());
            let svc = Svc {
                tags: vec!["v1".into()],
                checks: vec![check],
                ..Svc::new(&format!("svc{s}"), &id, 20000 + i as u16)
            };
            fake.register("dc1", &node, svc);
        }
    }
    println!(
        "fake Consul: {services} services x {per_service} instances on {nodes} nodes, loaded in {:?}",
        started.elapsed()
    );

    let state = tempfile::tempdir().expect("temp dir");
    let resolv = state.path().join("resolv.conf");
    std::fs::write(&resolv, "").unwrap();
    let start = Instant::now();
    let mut child = Command::new(&binary)
        .args(["--listen", "127.0.0.1:0", "--udp-workers", "1", "--consul", &fake.url()])
        .args(["--consul-max-conns", &max_conns.to_string(), "--resolv-conf", resolv.to_str().unwrap()])
        .args(if std::env::var_os("NO_STATE_DIR").is_some() {
            vec![]
        } else {
            vec!["--state-dir".to_owned(), state.path().join("state").display().to_string()]
        })
        .args(["--log-level", "info,consul_dns::backend::consul=debug"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start consul-dns");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addr: Option<SocketAddr> = None;
    let synced = loop {
        let line = rx.recv_timeout(Duration::from_secs(600)).expect("daemon log");
        if line.contains("DNS listening.")
            && let Some(a) = line.split("addr=").nth(1)
        {
            addr = a.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if line.contains("Consul catalog synced.") {
            break start.elapsed();
        }
        if line.contains("ERROR") {
            eprintln!("{line}");
        }
    };
    std::thread::spawn(move || {
        for line in rx {
            if line.contains("published") && std::env::var_os("SHOW_PUBLISH").is_some() {
                eprintln!("{line}");
            }
        }
    });
    let addr = addr.expect("listening address");
    let last = format!("svc{}.service.consul", services - 1);
    assert_eq!(a_records(addr, &last), per_service, "the last service is answered");
    println!("initial sync: {synced:?} (first request to catalog published)");
    println!("peak concurrent requests to Consul: {} (--consul-max-conns {max_conns})", fake.peak_in_flight());
    println!("requests to Consul for the initial sync: {}", fake.requests());
    println!("daemon memory after sync: {}", memory(child.id()));

    // Each round waits a second first: changes in a row would measure the token bucket that
    // keeps a churning watch from busy-polling (burst 4, then one round per 250 ms), not a change.
    let mut flips = Vec::new();
    for round in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        let (node, id) = (format!("node{}", (round * per_service) % nodes), format!("svc{round}-0"));
        let name = format!("svc{round}.service.consul");
        let before = a_records(addr, &name);
        let t = Instant::now();
        fake.set_check("dc1", &node, &format!("service:{id}"), &id, "critical");
        wait_until(|| a_records(addr, &name) == before - 1);
        flips.push(t.elapsed());
    }
    report("check flip (critical), one service rebuilt", &mut flips);

    let mut adds = Vec::new();
    for round in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        let s = services / 2 + round;
        let name = format!("svc{s}.service.consul");
        let before = a_records(addr, &name);
        let requests = fake.requests();
        let t = Instant::now();
        let svc =
            Svc { tags: vec![format!("new{round}")], ..Svc::new(&format!("svc{s}"), &format!("svc{s}-new"), 30000) };
        fake.register("dc1", &format!("node{s}"), svc);
        wait_until(|| a_records(addr, &name) == before + 1);
        adds.push(t.elapsed());
        println!("  new instance with a new tag: {} requests to Consul", fake.requests() - requests);
    }
    report("new instance with a new tag, one service read and rebuilt", &mut adds);

    std::thread::sleep(Duration::from_secs(1));
    let requests = fake.requests();
    let t = Instant::now();
    let moved = Svc { tags: vec!["v1".into()], ..Svc::new("svc1", "svc1-1", 40000) };
    fake.register("dc1", &format!("node{}", per_service + 1), moved);
    wait_until(|| srv_has_port(addr, "svc1.service.consul", 40000));
    let answered = t.elapsed();
    let last = format!("svc{}", services - 1);
    let needle = format!("/v1/health/service/{last}?");
    while !fake.paths()[requests as usize..].iter().any(|p| p.contains(&needle)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "port change by re-registration (services list unchanged): answered in {answered:?}; every service re-read in {:?}, {} requests",
        t.elapsed(),
        fake.requests() - requests
    );
    println!("peak concurrent requests to Consul overall: {} (limit {max_conns})", fake.peak_in_flight());
    println!("daemon memory at the end: {}", memory(child.id()));
    let _ = child.kill();
    let _ = child.wait();
}

fn ip(n: usize) -> String {
    format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255)
}

fn build_daemon() -> std::path::PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", "consul-dns", "--quiet"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build --release failed");
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("consul-dns")
}

fn memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).map(|l| l[name.len()..].trim().to_owned()).unwrap_or_default()
    };
    format!("RSS {} (peak {})", field("VmRSS:"), field("VmHWM:"))
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "change not answered within 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    println!("{what}: median {:?}, max {:?} over {}", times[times.len() / 2], times[times.len() - 1], times.len());
}

/// A minimal DNS query with EDNS (so no answer-count cut).
fn query(addr: SocketAddr, name: &str, qtype: u16) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut packet = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    packet.extend_from_slice(&[0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0]); // OPT, 4096 bytes
    socket.send_to(&packet, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let n = socket.recv(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn a_records(addr: SocketAddr, name: &str) -> usize {
    let reply = query(addr, name, 1);
    u16::from_be_bytes([reply[6], reply[7]]) as usize
}

fn srv_has_port(addr: SocketAddr, name: &str, port: u16) -> bool {
    let reply = query(addr, name, 33);
    reply.windows(2).any(|w| w == port.to_be_bytes())
}
