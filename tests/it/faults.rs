//! The fault matrix (issue 13): every way a catalog source fails — Consul's error statuses,
//! slowness, garbage, cut bodies, an index reset, the agent down or hanging up; the static
//! file deleted, half-written, emptied, unreadable, replaced by a broken one; each database
//! server down — run against the real binary, one table per source. For each: the last good
//! answers keep coming unchanged, the failure is counted under its reason in
//! `consul_dns_sync_failures_total`, and once the fault ends a change made at the source is
//! answered within [`BOUND`] (a behaviour bound, not a speed target). The measured times are
//! printed (`--nocapture`). Also: logging can never take the daemon down (a closed stderr).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::db::Cli;
use crate::support::daemon::{field, write_atomically};
use crate::support::fake_consul::{FakeConsul, Fault, Svc};
use crate::support::http::{get, samples};
use crate::support::{Daemon, query_udp, stores};

/// How long detection and recovery may take, each.
const BOUND: Duration = Duration::from_secs(10);
/// How long a fault is held after it was counted, the answers checked all along.
const HOLD: Duration = Duration::from_millis(700);

/// The probe: `web`'s SRV answers, sorted; `None` unless NOERROR.
fn web(addr: SocketAddr) -> Option<Vec<String>> {
    let reply = query_udp(addr, "web.service.consul", RecordType::SRV, Some(4096));
    let mut answers = reply.answers();
    answers.sort();
    (reply.rcode() == 0).then_some(answers)
}

/// `consul_dns_sync_failures_total{backend, reason}`.
fn failures(http: SocketAddr, backend: &str, reason: &str) -> f64 {
    let series = format!("consul_dns_sync_failures_total{{backend=\"{backend}\",reason=\"{reason}\"}}");
    samples(&get(http, "/metrics").text()).get(&series).copied().unwrap_or(0.0)
}

/// One row of a matrix: what breaks, the reason it must be counted under (`None`: a fault
/// that is no failure, e.g. a slow but correct source), how it starts, how long it lasts once
/// counted, and how it ends. The matrix then adds one instance of `web` at the source: its
/// answer marks the recovery, timed from the end of the fault.
struct Case<'a> {
    mode: &'static str,
    reason: Option<&'static str>,
    hold: Duration,
    begin: Box<dyn FnMut() + 'a>,
    end: Box<dyn FnMut() + 'a>,
}

fn case<'a>(
    mode: &'static str,
    reason: Option<&'static str>,
    begin: impl FnMut() + 'a,
    end: impl FnMut() + 'a,
) -> Case<'a> {
    Case { mode, reason, hold: HOLD, begin: Box::new(begin), end: Box::new(end) }
}

/// Runs `cases` in order on one daemon, `change` adding an instance of `web` at the source
/// after each; prints and returns (mode, detected in, recovered in).
fn matrix(
    source: &str,
    d: &Daemon,
    backend: &str,
    cases: Vec<Case<'_>>,
    change: &dyn Fn(),
) -> Vec<(&'static str, Duration, Duration)> {
    let mut results = Vec::new();
    for mut case in cases {
        let mode = case.mode;
        let before = web(d.addr).unwrap_or_else(|| panic!("{source} {mode}: no answer before the fault"));
        assert!(!before.is_empty(), "{source} {mode}: web answers before the fault");
        let counted = case.reason.map(|r| failures(d.http(), backend, r));
        let unchanged = |what: &str| {
            let now = web(d.addr);
            assert_eq!(
                now.as_ref(),
                Some(&before),
                "{source} {mode}: the last good answers must keep coming ({what}); log:\n{}",
                d.log()
            );
        };
        (case.begin)();
        let start = Instant::now();
        let detected = loop {
            unchanged("while the fault is new");
            let seen = match (case.reason, counted) {
                (Some(reason), Some(counted)) => failures(d.http(), backend, reason) > counted,
                _ => start.elapsed() >= HOLD,
            };
            if seen {
                break start.elapsed();
            }
            assert!(
                start.elapsed() < BOUND + case.hold,
                "{source} {mode}: no failure counted as {:?} within {BOUND:?}; metrics:\n{}\nlog:\n{}",
                case.reason,
                get(d.http(), "/metrics")
                    .text()
                    .lines()
                    .filter(|l| l.contains("sync_failures"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let held = Instant::now();
        while held.elapsed() < case.hold {
            unchanged("while the fault lasts");
            std::thread::sleep(Duration::from_millis(20));
        }
        (case.end)();
        let ended = Instant::now();
        change();
        let recovered = loop {
            let now = web(d.addr);
            if let Some(now) = &now
                && now.len() == before.len() + 1
                && before.iter().all(|a| now.contains(a))
            {
                break ended.elapsed();
            }
            assert!(
                now.as_ref().is_some_and(|n| before.iter().all(|a| n.contains(a))),
                "{source} {mode}: an answer was lost after the fault: {now:?}"
            );
            assert!(
                ended.elapsed() < BOUND,
                "{source} {mode}: the change after the fault not answered within {BOUND:?}; log:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        println!(
            "fault matrix: {source:<8} {mode:<22} counted as {:<22} in {:>5.3} s, recovered in {:>5.3} s",
            case.reason.unwrap_or("(no failure)"),
            detected.as_secs_f64(),
            recovered.as_secs_f64()
        );
        results.push((mode, detected, recovered));
    }
    results
}

#[test]
fn consul_faults() {
    let fake = FakeConsul::start("dc1", &[]);
    fake.register_node("dc1", "n1", "127.0.0.21", &[]);
    fake.register("dc1", "n1", Svc::new("web", "web-0", 8000));
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &["--consul", &fake.url(), "--consul-wait", "5s"]);
    let deadline = Instant::now() + BOUND;
    while web(d.addr).is_none_or(|a| a.is_empty()) {
        assert!(Instant::now() < deadline, "first sync; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let next = std::cell::Cell::new(1u16);
    let add = || {
        let i = next.get();
        next.set(i + 1);
        fake.register("dc1", "n1", Svc::new("web", &format!("web-{i}"), 8000 + i));
    };
    let fault = |f: Fault| {
        let fake = &fake;
        move || fake.set_fault(f.clone())
    };
    let clear = || fake.clear_fault();
    let cases = vec![
        case("HTTP 500", Some("server_error"), fault(Fault::Status(500, "No cluster leader")), clear),
        case("HTTP 403", Some("forbidden"), fault(Fault::Status(403, "ACL not found")), clear),
        case("HTTP 429", Some("rate_limited"), fault(Fault::Status(429, "rate limit exceeded")), clear),
        case("HTTP 503", Some("rate_limited"), fault(Fault::Status(503, "retry later")), clear),
        case("slow (1.5 s)", None, fault(Fault::Slow(Duration::from_millis(1500))), clear),
        case("garbage body", Some("decode"), fault(Fault::Garbage), clear),
        case("truncated body", Some("decode"), fault(Fault::Truncated), clear),
        case("wrong JSON shape", Some("decode"), fault(Fault::WrongShape), clear),
        case("index reset", Some("index_went_backwards"), || fake.index_goes_backwards(), || {}),
        case("agent down", Some("network"), || fake.stop_listening(), || fake.resume_listening()),
        // Long enough for the backoff to reach its cap: recovery stays within about 2 s.
        Case {
            hold: Duration::from_secs(8),
            ..case("agent down for 8 s", Some("network"), || fake.stop_listening(), || fake.resume_listening())
        },
        case("connection closed", Some("network"), fault(Fault::Hangup), clear),
    ];
    matrix("consul", &d, "consul", cases, &add);
}

/// A static catalog of `n` instances of `web` on one node.
fn catalog(n: u16) -> String {
    let mut text = String::from("[[nodes]]\nname = \"n1\"\naddress = \"127.0.0.21\"\n");
    for i in 0..n {
        text.push_str(&format!("[[services]]\nname = \"web\"\nid = \"web-{i}\"\nnode = \"n1\"\nport = {}\n", 8000 + i));
    }
    text
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn static_file_faults() {
    let d = Daemon::start(&catalog(1), &[]);
    let path = d.catalog_path();
    let n = std::cell::Cell::new(1u16);
    let good = || {
        n.set(n.get() + 1);
        write_atomically(&path, &catalog(n.get()));
    };
    let nothing = || {};
    let half = catalog(n.get() + 1);
    // Cut inside a quoted value: the rest of the file never arrived.
    let cut = half[..half.len() / 2].rfind('"').map_or(half.len() / 2, |q| q + 2);
    let half = half[..cut].to_owned();
    let unreadable: Box<dyn FnMut()> = if is_root() {
        // Root reads a file whatever its mode: a directory in its place cannot be read by anyone.
        Box::new(|| {
            std::fs::remove_file(&path).unwrap();
            std::fs::create_dir(&path).unwrap();
        })
    } else {
        Box::new(|| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        })
    };
    let readable = || {
        if path.is_dir() {
            std::fs::remove_dir(&path).unwrap();
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    };
    // The fault ends as the good file (with one more instance) is written.
    let cases = vec![
        case("deleted", Some("read"), || std::fs::remove_file(&path).unwrap(), nothing),
        case("half-written", Some("parse"), || std::fs::write(&path, &half).unwrap(), nothing),
        case("emptied", Some("empty"), || std::fs::write(&path, "").unwrap(), nothing),
        case("unreadable", Some("read"), unreadable, readable),
        case("renamed over, broken", Some("parse"), || write_atomically(&path, "[[services]\nname = "), nothing),
    ];
    matrix("file", &d, "file", cases, &good);
}

/// A database source with `web` registered once, and its matrix: the server killed, then
/// started again.
fn database_down(source: &str, mut server: stores::Server, flag: &'static str, backend: &str) {
    let cli = Cli { flag, url: server.url.clone() };
    cli.ok(&["init"]);
    let register = |i: u16| {
        let (id, port) = (format!("web-{i}"), (8000 + i).to_string());
        cli.ok(&["register", "--name", "web", "--id", &id, "--address", "127.0.0.21", "--port", &port]);
    };
    register(0);
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &[flag, &server.url, "--db-poll-interval", "200ms"]);
    let deadline = Instant::now() + BOUND;
    while web(d.addr).is_none_or(|a| a.is_empty()) {
        assert!(Instant::now() < deadline, "first sync; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = std::cell::RefCell::new(&mut server);
    let (stop, restart) = (|| server.borrow_mut().stop(), || server.borrow_mut().restart());
    let cases = vec![case("server down", Some("network"), stop, restart)];
    matrix(source, &d, backend, cases, &|| register(1));
}

#[test]
fn mariadb_down() {
    let Some(server) = stores::mariadb() else { return };
    database_down("mariadb", server, "--database-url", "mysql");
}

#[test]
fn postgres_down() {
    let Some(server) = stores::postgres() else { return };
    database_down("postgres", server, "--database-url", "postgres");
}

#[test]
fn etcd_down() {
    let Some(server) = stores::etcd() else { return };
    database_down("etcd", server, "--etcd", "etcd");
}

/// A daemon whose stderr is a pipe this test closes once it has read the listening lines.
struct Deaf {
    child: Child,
    dns: SocketAddr,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Deaf {
    fn start(dir: tempfile::TempDir, args: &[&str]) -> Deaf {
        let mut command = Daemon::command(dir.path(), args);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start consul-dns");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut dns, mut http) = (None, None);
        while dns.is_none() || http.is_none() {
            let line = lines.next().expect("the daemon logs its listeners").unwrap();
            let addr = || field(&line, "addr").and_then(|a| a.parse().ok());
            if line.contains("DNS listening.") {
                dns = addr();
            } else if line.contains("HTTP listening.") {
                http = addr();
            }
        }
        drop(lines); // the reader goes away: every later log line meets EPIPE
        Deaf { child, dns: dns.unwrap(), http: http.unwrap(), _dir: dir }
    }

    fn signal(&self, name: &str) {
        let status =
            std::process::Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn until(&mut self, what: &str, mut check: impl FnMut(&Deaf) -> bool) {
        let start = Instant::now();
        while !check(self) {
            assert!(self.child.try_wait().unwrap().is_none(), "{what}: the daemon died");
            assert!(start.elapsed() < BOUND, "{what}: not within {BOUND:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the exit code.
    fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        let start = Instant::now();
        while start.elapsed() < BOUND {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no exit within {BOUND:?} of SIGTERM");
    }

    fn dropped_log_lines(&self) -> f64 {
        samples(&get(self.http, "/metrics").text()).get("consul_dns_log_write_failures_total").copied().unwrap_or(0.0)
    }
}

impl Drop for Deaf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Static mode with nobody reading stderr: SIGHUP (which logs) and a catalog change (which
/// logs) are survived, the lines dropped and counted, and SIGTERM still exits 0.
#[test]
fn a_closed_stderr_does_not_stop_the_static_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.toml");
    std::fs::write(&path, catalog(1)).unwrap();
    let mut d = Deaf::start(dir, &[]);
    d.signal("HUP");
    d.until("the reload is counted", |d| {
        samples(&get(d.http, "/metrics").text()).get("consul_dns_config_reloads_total{result=\"success\"}")
            == Some(&1.0)
    });
    write_atomically(&path, &catalog(2));
    d.until("the change is answered", |d| web(d.dns).is_some_and(|a| a.len() == 2));
    assert!(d.dropped_log_lines() >= 2.0, "the reload's and the publish's lines were counted as dropped");
    assert_eq!(get(d.http, "/ready").status, 200);
    assert_eq!(d.stop(), Some(0), "SIGTERM exits 0");
}

/// Consul mode with nobody reading stderr, through an outage (which logs a warning): the sync
/// keeps following Consul, `/ready` stays truthful, and SIGTERM exits 0.
#[test]
fn a_closed_stderr_does_not_stop_the_consul_sync() {
    let fake = FakeConsul::start("dc1", &[]);
    fake.register_node("dc1", "n1", "127.0.0.21", &[]);
    fake.register("dc1", "n1", Svc::new("web", "web-0", 8000));
    let mut d = Deaf::start(tempfile::tempdir().unwrap(), &["--consul", &fake.url(), "--consul-wait", "5s"]);
    d.until("the first sync", |d| web(d.dns).is_some_and(|a| a.len() == 1));
    fake.stop_listening();
    d.until("the outage is counted", |d| failures(d.http, "consul", "network") > 0.0);
    fake.resume_listening();
    fake.register("dc1", "n1", Svc::new("web", "web-1", 8001));
    d.until("a registration after the outage", |d| web(d.dns).is_some_and(|a| a.len() == 2));
    d.signal("HUP");
    fake.register("dc1", "n1", Svc::new("web", "web-2", 8002));
    d.until("a registration after SIGHUP", |d| web(d.dns).is_some_and(|a| a.len() == 3));
    assert!(d.dropped_log_lines() >= 1.0, "the lines were counted as dropped");
    assert_eq!(get(d.http, "/ready").status, 200);
    assert_eq!(d.stop(), Some(0), "SIGTERM exits 0");
}
