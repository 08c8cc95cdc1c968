//! Scale bench for the Consul backend: 10,000 services × 10 instances (on 10,000 nodes) in the
//! fake Consul of the integration tests, synced by the real daemon.
//!
//! `cargo run --release --example consul_scale [-- SERVICES INSTANCES MAX_CONNS] [OPTIONS]`
//! builds the release binary if needed, then reports: initial sync time, the most requests
//! Consul saw in flight at once (must not exceed `--consul-max-conns`), the daemon's RSS, the
//! time from a change to its DNS answer (p50/p99/max over `--changes N` changes, half check
//! flips, half registrations of a new instance with a new tag, one every 300 ms), and the
//! re-read after a re-registration that only changes a port (H3.4). Options:
//! `--changes N` (200), `--load QPS` (0: none; else dnsperf sends QPS queries per second to the
//! daemon while the changes are made), `--compare-static` (also start the daemon on the same
//! catalog as a static file and compare RSS), `--no-reregister` (skip the port change).
//! `CONSUL_DNS_BIN=PATH` runs that binary instead of building one; `NO_STATE_DIR=1` runs without `--state-dir`; `SHOW_PUBLISH=1` prints each publish's cost;
//! `SHOW_LOG=TEXT` prints the daemon's log lines holding TEXT, at debug level (`SHOW_LOG=' '`
//! prints all of them, each with its time), and the time of each change.

#[path = "../tests/it/support/fake_consul.rs"]
#[allow(dead_code)]
mod fake_consul;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fake_consul::{FakeConsul, Svc};

/// The fake renders every body as a tree of small allocations; with glibc's allocator that
/// was 40% of its CPU, which the daemon then competed with on a two-core machine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the command line asks for.
struct Args {
    services: usize,
    per_service: usize,
    max_conns: usize,
    changes: usize,
    load_qps: u32,
    compare_static: bool,
    reregister: bool,
}

fn args() -> Args {
    let mut numbers = Vec::new();
    let mut args = Args {
        services: 10_000,
        per_service: 10,
        max_conns: 32,
        changes: 200,
        load_qps: 0,
        compare_static: false,
        reregister: true,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| -> usize {
            words.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match word.as_str() {
            "--changes" => args.changes = value("--changes").max(2),
            "--load" => args.load_qps = value("--load") as u32,
            "--compare-static" => args.compare_static = true,
            "--no-reregister" => args.reregister = false,
            other => numbers.push(other.parse::<usize>().unwrap_or_else(|_| panic!("unknown argument {other}"))),
        }
    }
    for (slot, n) in [&mut args.services, &mut args.per_service, &mut args.max_conns].into_iter().zip(numbers) {
        *slot = n;
    }
    args
}

fn main() {
    let Args { services, per_service, max_conns, changes, load_qps, compare_static, reregister } = args();
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
    let fake_cpu_before = own_cpu();
    let mut child = Command::new(&binary)
        .args(["--listen", "127.0.0.1:0", "--udp-workers", "1", "--consul", &fake.url(), "--http", "127.0.0.1:0"])
        .args(["--consul-max-conns", &max_conns.to_string(), "--resolv-conf", resolv.to_str().unwrap()])
        .args(if std::env::var_os("NO_STATE_DIR").is_some() {
            vec![]
        } else {
            vec!["--state-dir".to_owned(), state.path().join("state").display().to_string()]
        })
        .args([
            "--log-level",
            if shown_log().is_some() { "info,consul_dns=debug" } else { "info,consul_dns::backend::consul=debug" },
        ])
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
        if line.contains("Catalog published.") && line.contains("trigger=\"sync\"") {
            break start.elapsed();
        }
        if line.contains("ERROR") {
            eprintln!("{line}");
        }
    };
    std::thread::spawn(move || {
        for line in rx {
            if shown_log().is_some_and(|w| line.contains(&w)) {
                eprintln!("{line}");
            }
        }
    });
    let addr = addr.expect("listening address");
    let last = format!("svc{}.service.consul", services - 1);
    assert_eq!(a_records(addr, &last), per_service, "the last service is answered");
    let (daemon_cpu, fake_cpu) = (process_cpu(child.id()), own_cpu() - fake_cpu_before);
    println!("initial sync: {synced:?} (first request to catalog published)");
    println!(
        "CPU time for the initial sync: daemon {:.2} s, fake Consul {:.2} s (on a busy machine the wall time above \
         stretches; these do not)",
        daemon_cpu.as_secs_f64(),
        fake_cpu.as_secs_f64()
    );
    println!("peak concurrent requests to Consul: {} (--consul-max-conns {max_conns})", fake.peak_in_flight());
    println!("requests to Consul for the initial sync: {}", fake.requests());
    println!("daemon memory after sync: {}", memory(child.id()));

    if compare_static {
        compare_with_static(&binary, child.id(), services, per_service, nodes);
    }

    // One change every 300 ms: the watches' token bucket (burst 4, then one round per 250 ms,
    // H3.7) lets each through at once; faster churn is batched by it, which is its job.
    let load = (load_qps > 0).then(|| Load::start(addr, load_qps, services, changes));
    let mut flips = Vec::new();
    let mut adds = Vec::new();
    for round in 0..changes {
        std::thread::sleep(Duration::from_millis(300));
        let s = round / 2 % services;
        let name = format!("svc{s}.service.consul");
        let before = a_records(addr, &name);
        if round % 2 == 0 {
            let (node, id) = (format!("node{}", (s * per_service) % nodes), format!("svc{s}-0"));
            let status = if round / 2 / services % 2 == 0 { "critical" } else { "passing" };
            let want = if status == "critical" { before - 1 } else { before + 1 };
            note_change(&format!("{id} {status}"));
            let t = Instant::now();
            fake.set_check("dc1", &node, &format!("service:{id}"), &id, status);
            wait_until(|| a_records(addr, &name) == want);
            flips.push(t.elapsed());
        } else {
            let id = format!("svc{s}-new{round}");
            let svc = Svc { tags: vec![format!("new{round}")], ..Svc::new(&format!("svc{s}"), &id, 30000) };
            note_change(&format!("register {id}"));
            let t = Instant::now();
            fake.register("dc1", &format!("node{s}"), svc);
            wait_until(|| a_records(addr, &name) == before + 1);
            adds.push(t.elapsed());
        }
    }
    let answered = load.map(Load::finish);
    let mut all: Vec<Duration> = flips.iter().chain(&adds).copied().collect();
    report("check flip, one service rebuilt", &mut flips);
    report("new instance with a new tag, one service read and rebuilt", &mut adds);
    report("change to DNS, all changes", &mut all);
    if let Some(answered) = answered {
        println!("meanwhile dnsperf (asked for {load_qps} qps): {answered}");
    }
    if !reregister {
        let _ = child.kill();
        let _ = child.wait();
        return;
    }

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

/// What of the daemon's log to print: `SHOW_LOG`, else publishes with `SHOW_PUBLISH`.
fn shown_log() -> Option<String> {
    std::env::var("SHOW_LOG").ok().or_else(|| std::env::var_os("SHOW_PUBLISH").map(|_| "published".to_owned()))
}

/// With `SHOW_LOG`, prints when a change is made (UTC, as the daemon logs).
fn note_change(what: &str) {
    if std::env::var_os("SHOW_LOG").is_some() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let (secs, ms) = (now.as_secs() % 86_400, now.subsec_millis());
        eprintln!("{:02}:{:02}:{:02}.{ms:03} change: {what}", secs / 3600, secs / 60 % 60, secs % 60);
    }
}

fn ip(n: usize) -> String {
    format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255)
}

/// The daemon: `$CONSUL_DNS_BIN` if set, else the release build (built now if needed).
fn build_daemon() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("CONSUL_DNS_BIN") {
        return path.into();
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", "consul-dns", "--quiet"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build --release failed");
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("consul-dns")
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// CPU time this process (the fake Consul, mostly) has used.
fn own_cpu() -> Duration {
    process_cpu(std::process::id())
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
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {}",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1]),
        times.len()
    );
}

/// RSS in kB of a process.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Starts the daemon on the same catalog as a static JSON file and compares the RSS of the two
/// once each answers the last service.
fn compare_with_static(binary: &std::path::Path, consul_pid: u32, services: usize, per_service: usize, nodes: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("catalog.json");
    let mut json = String::from(r#"{"datacenter": "dc1", "nodes": ["#);
    for n in 0..nodes {
        let sep = if n > 0 { ", " } else { "" };
        json += &format!(r#"{sep}{{"name": "node{n}", "address": "{}", "meta": {{"rack": "r1"}}}}"#, ip(n));
    }
    json += r#"], "services": ["#;
    for s in 0..services {
        for i in 0..per_service {
            let sep = if s + i > 0 { ", " } else { "" };
            let node = (s * per_service + i) % nodes;
            json += &format!(
                r#"{sep}{{"name": "svc{s}", "id": "svc{s}-{i}", "node": "node{node}", "port": {}, "tags": ["v1"]}}"#,
                20000 + i
            );
        }
    }
    json += "]}";
    std::fs::write(&path, json).expect("write the static catalog");
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--udp-workers", "1", "--static", path.to_str().unwrap()])
        .args(["--recursor", "none", "--http", "off", "--log-level", "info"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start consul-dns --static");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let addr: SocketAddr = stderr
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let a = line.contains("DNS listening.").then(|| line.split("addr=").nth(1))??;
            a.split_whitespace().next()?.parse().ok()
        })
        .expect("the static daemon's listening address");
    let last = format!("svc{}.service.consul", services - 1);
    wait_until(|| a_records(addr, &last) == per_service);
    // Both free their models off the answering path: compare once that is done.
    std::thread::sleep(Duration::from_secs(3));
    let (consul, static_) = (rss_kb(consul_pid), rss_kb(child.id()));
    println!(
        "RSS for the same catalog: Consul mode {:.1} MB, static mode {:.1} MB, ratio {:.2}",
        consul as f64 / 1024.0,
        static_ as f64 / 1024.0,
        consul as f64 / static_.max(1) as f64
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// dnsperf sending a bounded rate of queries to the daemon while changes are made.
struct Load {
    child: std::process::Child,
    _queries: tempfile::NamedTempFile,
}

impl Load {
    fn start(addr: SocketAddr, qps: u32, services: usize, changes: usize) -> Load {
        use std::io::Write;
        let mut queries = tempfile::NamedTempFile::new().expect("query file");
        for q in 0..10_000 {
            let kind = if q % 2 == 0 { "SRV" } else { "A" };
            writeln!(queries, "svc{}.service.consul {kind}", fastrand::usize(0..services)).unwrap();
        }
        queries.flush().unwrap();
        let seconds = (changes as u64 * 300 / 1000 + 30).to_string();
        let child = Command::new("dnsperf")
            .args(["-s", &addr.ip().to_string(), "-p", &addr.port().to_string(), "-d"])
            .arg(queries.path())
            .args(["-l", &seconds, "-Q", &qps.to_string(), "-c", "4", "-q", "200"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsperf (apt-get install -y dnsperf)");
        std::thread::sleep(Duration::from_secs(1)); // under load before the first change
        Load { child, _queries: queries }
    }

    /// Stops dnsperf (SIGINT: it then prints its statistics) and sums them up.
    fn finish(self) -> String {
        // SAFETY: kill(2) on the process id of a child this process started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let output = self.child.wait_with_output().expect("dnsperf output");
        let text = String::from_utf8_lossy(&output.stdout);
        let field = |name: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(name))
                .map_or_else(|| "?".to_owned(), |l| l.trim_start()[name.len()..].trim().to_owned())
        };
        format!(
            "{} qps answered, {} lost, average latency {} s",
            field("Queries per second:"),
            field("Queries lost:"),
            field("Average Latency (s):")
        )
    }
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
