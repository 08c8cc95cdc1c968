//! What the log says when Consul cannot be read, as a new user meets it (against the fake
//! Consul): a rejected token is the token — with the permission it needs — not an outage, and
//! is said once, not on every retry; "connection refused" is said plainly.

use std::time::{Duration, Instant};

use crate::support::fake_consul::{FakeConsul, Fault, Svc};
use crate::support::{Daemon, start_consul};

fn web_fake() -> FakeConsul {
    let fake = FakeConsul::start("dc1", &[]);
    fake.register_node("dc1", "n1", "127.0.0.21", &[]);
    fake.register("dc1", "n1", Svc::new("web", "web-1", 8080));
    fake
}

/// WARN lines of the log that contain `needle`.
fn warnings(d: &Daemon, needle: &str) -> usize {
    d.log().lines().filter(|l| l.contains("WARN") && l.contains(needle)).count()
}

/// Waits until the daemon has asked Consul `reads` more times than `before` (retries happen).
fn retried(d: &Daemon, fake: &FakeConsul, before: u64, reads: u64) {
    let start = Instant::now();
    while fake.requests() < before + reads {
        assert!(start.elapsed() < Duration::from_secs(20), "no retries; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_unknown_token_is_named_as_the_token_once_not_as_an_outage() {
    let fake = web_fake();
    fake.require_token("the-right-one");
    let d = start_consul(&fake.url(), &["--consul-token", "a-wrong-one"]);
    retried(&d, &fake, 0, 6);
    let sentence = "Consul does not know this ACL token (ACL not found): check consul_token";
    assert_eq!(warnings(&d, sentence), 1, "said once, though every retry is refused:\n{}", d.log());
    assert_eq!(warnings(&d, "Catalog source refused our credentials"), 1, "{}", d.log());
    assert!(!d.log().contains("a-wrong-one"), "the token is never logged");
}

#[test]
fn a_token_without_a_permission_says_which_one_once() {
    let fake = web_fake();
    let d = start_consul(&fake.url(), &[]);
    let start = Instant::now();
    while !d.log().contains("Catalog published.") {
        assert!(start.elapsed() < Duration::from_secs(10), "no first sync:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = "Permission denied: token with AccessorID 'x' lacks permission 'node:read' on \"n1\"";
    fake.set_fault(Fault::Status(403, body));
    retried(&d, &fake, fake.requests(), 12);
    let sentence =
        "HTTP 403: Consul rejected the token: it lacks node:read; give its policy node:read and service:read";
    assert_eq!(warnings(&d, sentence), 1, "once, whatever the number of reads refused:\n{}", d.log());
    assert!(!d.log().lines().any(|l| l.contains("WARN") && l.contains("Catalog source failed")), "{}", d.log());
    fake.clear_fault();
}

#[test]
fn connection_refused_is_said_plainly() {
    let fake = web_fake();
    fake.stop_listening();
    let d = start_consul(&fake.url(), &[]);
    let start = Instant::now();
    while warnings(&d, "Catalog source failed") == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no failure logged:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.log();
    assert!(log.contains("connection refused: nothing listens there; is the Consul agent running"), "{log}");
    assert!(!log.contains("error sending request"), "not the client library's generic words:\n{log}");
}

/// Finding: `/ready` said synced in Consul mode while only the static seed was served. It is
/// 503 "not synced: serving the static seed" until the first read; then 200 and synced.
#[test]
fn ready_is_not_synced_while_only_the_static_seed_serves() {
    use crate::support::http::get;
    use crate::support::rdata;
    use hickory_proto::rr::RecordType;
    let fake = web_fake();
    fake.stop_listening();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.toml");
    std::fs::write(
        &seed,
        "[[nodes]]\nname = \"s1\"\naddress = \"127.0.0.99\"\n[[services]]\nname = \"web\"\nnode = \"s1\"\nport = 1\n",
    )
    .unwrap();
    let d = start_consul(&fake.url(), &["--static", seed.to_str().unwrap()]);
    assert_eq!(rdata(&d, "web.service.consul", RecordType::A), ["127.0.0.99"], "the seed answers");
    let ready = get(d.http(), "/ready");
    assert_eq!(ready.status, 503, "{}", ready.text());
    let body = ready.json();
    assert_eq!(
        (body["reason"].as_str(), body["synced"].as_bool()),
        (Some("not synced: serving the static seed"), Some(false))
    );
    assert_eq!(body["serving"], "the static seed");
    fake.resume_listening();
    let start = Instant::now();
    while get(d.http(), "/ready").status != 200 {
        assert!(start.elapsed() < Duration::from_secs(10), "not ready after the first sync:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = get(d.http(), "/ready").json();
    assert_eq!((body["synced"].as_bool(), body.get("serving")), (Some(true), None));
    assert_eq!(rdata(&d, "web.service.consul", RecordType::A), ["127.0.0.21"], "Consul's answers now");
}

/// A catalog restored from disk stays ready (answering through an outage is what it is for),
/// but `/ready` does not call it synced before the first read.
#[test]
fn ready_says_restored_not_synced_before_the_first_read() {
    use crate::support::http::get;
    let fake = web_fake();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    {
        let d = start_consul(&fake.url(), &["--state-dir", &dir]);
        let start = Instant::now();
        while !state.path().join("catalog.json").exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "never persisted:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fake.stop_listening();
    let d = start_consul(&fake.url(), &["--state-dir", &dir]);
    let ready = get(d.http(), "/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let body = ready.json();
    assert_eq!(
        (body["synced"].as_bool(), body["serving"].as_str()),
        (Some(false), Some("the catalog restored from disk"))
    );
}
