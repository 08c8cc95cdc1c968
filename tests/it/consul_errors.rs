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
