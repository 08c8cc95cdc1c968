//! The Consul backend against the fake Consul (issue 4 acceptance): initial sync, changes
//! within a second, health filtering, `.addr.` targets, tags, two datacenters, mesh names,
//! every fault mode keeping the last good answers, the on-disk snapshot, and propagation
//! latency.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::support::fake_consul::{FakeConsul, Fault, Svc};
use crate::support::{Daemon, query_udp, rcode, rdata, start_consul};

const NOERROR: u16 = 0;
const SERVFAIL: u16 = 2;
const NXDOMAIN: u16 = 3;

fn start(fake: &FakeConsul, extra: &[&str]) -> Daemon {
    start_consul(&fake.url(), extra)
}

/// Polls until `check` holds; panics with the log after `within`.
fn eventually(d: &Daemon, within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{what}: not within {within:?}; log:\n{}", d.log());
}

/// Holds for `during`: the answer does not change while the fault lasts.
fn stays(d: &Daemon, during: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < during {
        assert!(check(), "{what}; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn web_fake(local: &str, others: &[&str]) -> FakeConsul {
    let fake = FakeConsul::start(local, others);
    fake.register_node(local, "n1", "127.0.0.21", &[("rack", "r1")]);
    fake.register(
        local,
        "n1",
        Svc {
            tags: vec!["v1".into()],
            checks: vec![("service:web-1".into(), "passing".into())],
            ..Svc::new("web", "web-1", 8080)
        },
    );
    fake
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn initial_sync_answers_services_nodes_srv_and_meta() {
    let fake = web_fake("dc1", &[]);
    fake.register("dc1", "n1", Svc { weights: Some((7, 1)), ..Svc::new("db", "db-1", 5432) });
    let d = start(&fake, &[]);
    eventually(&d, 10 * SEC, "web answered", || rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.21"]);
    assert_eq!(rdata(&d, "web.service.consul", RecordType::SRV), ["1 1 8080 n1.node.dc1.consul."]);
    assert_eq!(rdata(&d, "db.service.dc1.consul", RecordType::SRV), ["1 7 5432 n1.node.dc1.consul."], "S4.4");
    assert_eq!(rdata(&d, "n1.node.consul", RecordType::A), ["127.0.0.21"]);
    assert_eq!(rdata(&d, "n1.node.consul", RecordType::TXT), ["rack=r1"], "S3.6 node meta");
    assert_eq!(rcode(&d, "nope.service.consul"), NXDOMAIN);
    assert!(d.log().contains("Catalog published."), "{}", d.log());
    assert!(fake.paths().iter().all(|p| !p.contains("passing&") && !p.ends_with("passing")), "no ?passing (S13)");
    assert!(fake.paths().iter().any(|p| p.contains("stale")), "reads use ?stale");
}

#[test]
fn register_deregister_and_health_flips_show_within_a_second() {
    let fake = web_fake("dc1", &[]);
    let d = start(&fake, &[]);
    eventually(&d, 10 * SEC, "synced", || rdata(&d, "web.service.consul", RecordType::A).len() == 1);
    fake.register_node("dc1", "n2", "127.0.0.22", &[]);
    fake.register("dc1", "n2", Svc { tags: vec!["v2".into()], ..Svc::new("web", "web-2", 8080) });
    let both = ["127.0.0.21", "127.0.0.22"];
    eventually(&d, SEC, "register → answered", || rdata(&d, "web.service.consul", RecordType::A) == both);
    assert_eq!(rdata(&d, "v2.web.service.consul", RecordType::A), ["127.0.0.22"], "tag filter");
    assert_eq!(rdata(&d, "v1.web.service.consul", RecordType::A), ["127.0.0.21"]);
    fake.set_check("dc1", "n1", "service:web-1", "web-1", "critical");
    eventually(&d, SEC, "critical → gone", || rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.22"]);
    fake.set_check("dc1", "n1", "service:web-1", "web-1", "warning");
    eventually(&d, SEC, "warning → back", || rdata(&d, "web.service.consul", RecordType::A) == both);
    fake.set_check("dc1", "n1", "service:web-1", "web-1", "passing");
    fake.node_maintenance("dc1", "n2", true);
    eventually(&d, SEC, "S4.2 node maintenance", || rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.21"]);
    fake.node_maintenance("dc1", "n2", false);
    fake.service_maintenance("dc1", "n1", "web-1", true);
    eventually(&d, SEC, "S4.2 service maintenance", || {
        rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.22"]
    });
    fake.service_maintenance("dc1", "n1", "web-1", false);
    eventually(&d, SEC, "maintenance off", || rdata(&d, "web.service.consul", RecordType::A) == both);
    fake.deregister("dc1", "n2", "web-2");
    fake.deregister("dc1", "n1", "web-1");
    eventually(&d, SEC, "deregister → NXDOMAIN", || rcode(&d, "web.service.consul") == NXDOMAIN);
}

#[test]
fn s4_1_only_passing_drops_warnings() {
    let fake = web_fake("dc1", &[]);
    fake.set_check("dc1", "n1", "service:web-1", "web-1", "warning");
    let d = start(&fake, &["--only-passing"]);
    eventually(&d, 10 * SEC, "synced", || d.log().contains("Catalog published."));
    assert_eq!(rcode(&d, "web.service.consul"), NXDOMAIN);
}

#[test]
fn s3_5_addr_targets_and_s3_3_tagged_addresses() {
    let fake = web_fake("dc1", &[]);
    let own = Svc { address: "127.0.0.55".into(), ..Svc::new("api", "api-1", 9000) };
    fake.register("dc1", "n1", own);
    let tagged = Svc {
        address: "10.9.9.9".into(),
        tagged: vec![("lan_ipv4".into(), "127.0.0.66".into(), 9001)],
        ..Svc::new("tagged", "tagged-1", 9001)
    };
    fake.register("dc1", "n1", tagged);
    let d = start(&fake, &[]);
    eventually(&d, 10 * SEC, "synced", || !rdata(&d, "api.service.consul", RecordType::A).is_empty());
    assert_eq!(rdata(&d, "api.service.consul", RecordType::SRV), ["1 1 9000 7f000037.addr.dc1.consul."]);
    assert_eq!(rdata(&d, "7f000037.addr.dc1.consul", RecordType::A), ["127.0.0.55"]);
    assert_eq!(rdata(&d, "tagged.service.consul", RecordType::A), ["127.0.0.66"], "lan_ipv4 wins (S3.3)");
}

#[test]
fn s2_11_two_datacenters_and_wan_translation() {
    let fake = web_fake("dc1", &["dc2"]);
    let mut tagged = std::collections::BTreeMap::new();
    tagged.insert("lan_ipv4".to_owned(), "127.0.2.1".to_owned());
    tagged.insert("wan".to_owned(), "127.0.200.1".to_owned());
    fake.register_node_tagged("dc2", "m1", "127.0.2.1", tagged, &[]);
    fake.register("dc2", "m1", Svc::new("web", "web-east", 8080));
    let d = start(&fake, &[]);
    eventually(&d, 10 * SEC, "dc2 synced", || rdata(&d, "web.service.dc2.consul", RecordType::A) == ["127.0.2.1"]);
    assert_eq!(rdata(&d, "web.service.dc1.consul", RecordType::A), ["127.0.0.21"]);
    assert_eq!(rdata(&d, "web.service.consul", RecordType::A), ["127.0.0.21"], "local DC by default");
    assert_eq!(rcode(&d, "web.service.dc3.consul"), NXDOMAIN);
    let wan = start(&fake, &["--translate-wan-addrs"]);
    eventually(&wan, 10 * SEC, "WAN address for dc2", || {
        rdata(&wan, "web.service.dc2.consul", RecordType::A) == ["127.0.200.1"]
    });
    assert_eq!(rdata(&wan, "web.service.dc1.consul", RecordType::A), ["127.0.0.21"], "LAN for the local DC");
    let narrowed = start(&fake, &["--datacenters", "dc1"]);
    eventually(&narrowed, 10 * SEC, "dc1", || !rdata(&narrowed, "web.service.consul", RecordType::A).is_empty());
    assert_eq!(rcode(&narrowed, "web.service.dc2.consul"), NXDOMAIN, "--datacenters narrows");
}

#[test]
fn s2_10_connect_and_ingress_names_and_s5_4_ns_from_the_consul_service() {
    let fake = web_fake("dc1", &[]);
    let proxy = Svc {
        kind: "connect-proxy".into(),
        proxy_for: "web".into(),
        ..Svc::new("web-sidecar-proxy", "web-1-sidecar-proxy", 21000)
    };
    fake.register("dc1", "n1", proxy);
    fake.register_node("dc1", "server1", "127.0.0.30", &[]);
    fake.register("dc1", "server1", Svc::new("consul", "consul", 8300));
    let d = start(&fake, &[]);
    eventually(&d, 10 * SEC, "synced", || !rdata(&d, "web.connect.consul", RecordType::SRV).is_empty());
    assert_eq!(rdata(&d, "web.connect.consul", RecordType::SRV), ["1 1 21000 n1.node.dc1.consul."]);
    assert_eq!(rdata(&d, "consul.", RecordType::NS), ["server1.node.dc1.consul."]);
    assert_eq!(rcode(&d, "web.ingress.consul"), NXDOMAIN, "no gateway exposes web yet");
    fake.deregister("dc1", "n1", "web-1-sidecar-proxy");
    eventually(&d, SEC, "proxy gone", || rcode(&d, "web.connect.consul") == NXDOMAIN);

    fake.register("dc1", "server1", Svc { kind: "ingress-gateway".into(), ..Svc::new("edge", "edge-1", 8443) });
    fake.set_ingress("dc1", "edge", &["web", "api"]);
    eventually(&d, SEC, "web.ingress", || {
        rdata(&d, "web.ingress.consul", RecordType::SRV) == ["1 1 8443 server1.node.dc1.consul."]
    });
    assert_eq!(rdata(&d, "api.ingress.consul", RecordType::A), ["127.0.0.30"]);
    fake.set_ingress("dc1", "edge", &["api"]);
    eventually(&d, SEC, "config entry no longer lists web", || rcode(&d, "web.ingress.consul") == NXDOMAIN);
    fake.node_maintenance("dc1", "server1", true);
    eventually(&d, SEC, "gateway in maintenance", || rcode(&d, "api.ingress.consul") == NXDOMAIN);
}

#[test]
fn token_is_sent_as_a_header_and_never_logged_and_agent_self_may_be_forbidden() {
    let fake = web_fake("east", &[]);
    fake.require_token("s3cr3t-token");
    fake.forbid_agent_self(true);
    let d = start(&fake, &["--consul-token", "s3cr3t-token"]);
    eventually(&d, 10 * SEC, "synced with the token", || {
        !rdata(&d, "web.service.east.consul", RecordType::A).is_empty()
    });
    assert_eq!(fake.tokens_seen(), ["s3cr3t-token"]);
    assert!(fake.paths().iter().all(|p| !p.contains("s3cr3t")), "never in a URL");
    assert!(!d.log().contains("s3cr3t"), "never in the log:\n{}", d.log());
    assert_eq!(rdata(&d, "web.service.consul", RecordType::A), ["127.0.0.21"], "403 on agent/self: first listed DC");
}

#[test]
fn h1_4_concurrent_requests_stay_within_consul_max_conns() {
    let fake = FakeConsul::start("dc1", &[]);
    fake.register_node("dc1", "n1", "127.0.0.21", &[]);
    for i in 0..60 {
        fake.register("dc1", "n1", Svc::new(&format!("svc{i}"), &format!("svc{i}"), 1000 + i));
    }
    let d = start(&fake, &["--consul-max-conns", "5"]);
    eventually(&d, 20 * SEC, "synced", || !rdata(&d, "svc59.service.consul", RecordType::A).is_empty());
    assert!(fake.peak_in_flight() <= 5, "peak {} > 5", fake.peak_in_flight());
    assert!(fake.peak_in_flight() >= 3, "the long polls are held: {}", fake.peak_in_flight());
}

#[test]
fn every_fault_keeps_the_last_good_answers_and_recovers() {
    let fake = web_fake("dc1", &[]);
    let d = start(&fake, &[]);
    eventually(&d, 10 * SEC, "synced", || rdata(&d, "web.service.consul", RecordType::A).len() == 1);
    let faults: [(&str, Option<Fault>); 9] = [
        ("500", Some(Fault::Status(500, "No cluster leader"))),
        ("403", Some(Fault::Status(403, "ACL not found"))),
        ("429", Some(Fault::Status(429, "rate limit exceeded"))),
        ("503", Some(Fault::Status(503, "retry later"))),
        ("slow", Some(Fault::Slow(Duration::from_millis(1500)))),
        ("truncated", Some(Fault::Truncated)),
        ("wrong shape", Some(Fault::WrongShape)),
        ("index backwards", None),
        ("refused", None),
    ];
    for (round, (name, fault)) in faults.into_iter().enumerate() {
        let expected_before = round + 1;
        let requests = fake.requests();
        match (&fault, name) {
            (Some(fault), _) => fake.set_fault(fault.clone()),
            (None, "index backwards") => fake.index_goes_backwards(),
            (None, _) => fake.stop_listening(),
        }
        let node = format!("f{round}");
        fake.register_node("dc1", &node, &format!("127.0.1.{}", round + 1), &[]);
        fake.register("dc1", &node, Svc::new("web", &format!("web-f{round}"), 8080));
        if name != "index backwards" {
            stays(&d, Duration::from_millis(800), &format!("{name}: last good answers stay"), || {
                rcode(&d, "web.service.consul") == NOERROR
                    && rdata(&d, "web.service.consul", RecordType::A).len() == expected_before
            });
            if name != "refused" && name != "slow" {
                assert!(fake.requests() > requests, "{name}: the daemon kept asking");
            }
        }
        match name {
            "refused" => fake.resume_listening(),
            "index backwards" => {}
            _ => fake.clear_fault(),
        }
        eventually(&d, 15 * SEC, &format!("{name}: recovers"), || {
            rdata(&d, "web.service.consul", RecordType::A).len() == expected_before + 1
        });
    }
    let log = d.log();
    assert!(log.contains("Consul read failed"), "{log}");
    assert!(log.contains("HTTP 500") && log.contains("HTTP 429"), "{log}");
}

#[test]
fn before_any_sync_with_nothing_on_disk_names_are_servfail_not_nxdomain() {
    let fake = web_fake("dc1", &[]);
    fake.stop_listening();
    let d = start(&fake, &[]);
    assert_eq!(rcode(&d, "web.service.consul"), SERVFAIL);
    assert_eq!(rcode(&d, "missing.service.consul"), SERVFAIL, "not NXDOMAIN: nothing is known yet");
    fake.resume_listening();
    eventually(&d, 10 * SEC, "first sync", || rcode(&d, "web.service.consul") == NOERROR);
    assert_eq!(rcode(&d, "missing.service.consul"), NXDOMAIN);
}

#[test]
fn restart_with_consul_unreachable_answers_from_the_on_disk_snapshot() {
    let fake = web_fake("dc1", &[]);
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    let file = state.path().join("catalog.json");
    {
        let d = start(&fake, &["--state-dir", &dir]);
        eventually(&d, 10 * SEC, "synced", || rdata(&d, "web.service.consul", RecordType::A).len() == 1);
        fake.register_node("dc1", "n2", "127.0.0.22", &[]);
        fake.register("dc1", "n2", Svc::new("web", "web-2", 8080));
        eventually(&d, 10 * SEC, "the change persisted", || {
            std::fs::read_to_string(&file).is_ok_and(|text| text.contains("web-2"))
        });
    }
    fake.stop_listening();
    let d = start(&fake, &["--state-dir", &dir]);
    assert_eq!(rdata(&d, "web.service.consul", RecordType::A), ["127.0.0.21", "127.0.0.22"]);
    assert_eq!(rdata(&d, "n2.node.consul", RecordType::A), ["127.0.0.22"]);
    assert!(d.log().contains("Catalog restored from disk"), "{}", d.log());
    assert!(d.log().contains("max_stale is not set"), "a warning without max_stale:\n{}", d.log());

    // Two hours old, as the file says (its modification time is not its age).
    let saved = std::time::SystemTime::now() - Duration::from_secs(7200);
    let saved_ms = saved.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    doc["saved_at"] = saved_ms.into();
    std::fs::write(&file, doc.to_string()).unwrap();
    std::fs::remove_file(state.path().join("catalog.json.confirmed")).unwrap();
    let strict = start(&fake, &["--state-dir", &dir, "--max-stale", "1h"]);
    assert_eq!(rcode(&strict, "web.service.consul"), SERVFAIL, "--max-stale 1h refuses a 2 h old catalog");
    assert!(strict.log().contains("older than max_stale"), "{}", strict.log());
    drop(strict);
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&file, copy.path().join("catalog.json")).unwrap();
    let copied = start(&fake, &["--state-dir", &copy.path().display().to_string(), "--max-stale", "1h"]);
    assert_eq!(rcode(&copied, "web.service.consul"), SERVFAIL, "a fresh copy of a 2 h old catalog is 2 h old");
    drop(copied);
    let lenient = start(&fake, &["--state-dir", &dir, "--max-stale", "3h"]);
    assert_eq!(rdata(&lenient, "web.service.consul", RecordType::A).len(), 2, "--max-stale 3h serves it");
    fake.resume_listening();
    fake.deregister("dc1", "n2", "web-2");
    eventually(&lenient, 10 * SEC, "live data replaces the restored", || {
        rdata(&lenient, "web.service.consul", RecordType::A) == ["127.0.0.21"]
    });
}

#[test]
fn propagation_p50_p99_over_50_changes() {
    let fake = web_fake("dc1", &[]);
    for i in 0..20 {
        fake.register("dc1", "n1", Svc::new(&format!("other{i}"), &format!("other{i}"), 2000 + i));
    }
    let d = start(&fake, &[]);
    eventually(&d, 10 * SEC, "synced", || rdata(&d, "web.service.consul", RecordType::A).len() == 1);
    fake.register_node("dc1", "n2", "127.0.0.22", &[]);
    let mut took = Vec::new();
    for round in 0..50 {
        let start = Instant::now();
        let want = match round % 4 {
            0 => {
                fake.register("dc1", "n2", Svc::new("web", "web-2", 8080));
                2
            }
            1 => {
                fake.set_check("dc1", "n2", "service:web-2", "web-2", "critical");
                1
            }
            2 => {
                fake.set_check("dc1", "n2", "service:web-2", "web-2", "passing");
                2
            }
            _ => {
                fake.deregister("dc1", "n2", "web-2");
                1
            }
        };
        eventually(&d, 5 * SEC, "change answered", || rdata(&d, "web.service.consul", RecordType::A).len() == want);
        took.push(start.elapsed());
    }
    took.sort();
    let (p50, p99) = (took[took.len() / 2], took[took.len() * 99 / 100]);
    println!(
        "consul propagation over {} changes: p50 {p50:?}, p99 {p99:?}, max {:?}",
        took.len(),
        took[took.len() - 1]
    );
    assert!(p99 < Duration::from_secs(5), "p99 {p99:?}");
}

#[test]
fn sighup_rebuilds_the_consul_catalog_with_new_options_and_check_config_names_consul() {
    let fake = web_fake("dc1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("consul-dns.toml");
    std::fs::write(&config, format!("consul = \"{}\"\nservice_ttl = \"5s\"\n", fake.url())).unwrap();
    // The harness adds --static <dir>/services.toml: with --consul it only seeds the first answers.
    std::fs::write(dir.path().join("services.toml"), "").unwrap();
    let config_arg = config.display().to_string();
    let d = Daemon::start_in(dir, &["--config", &config_arg, "--consul-wait", "20s"]);
    let ttl = |d: &Daemon| query_udp(d.addr, "web.service.consul", RecordType::A, None).answer_ttls();
    eventually(&d, 10 * SEC, "synced", || ttl(&d) == [5]);
    std::fs::write(&config, format!("consul = \"{}\"\nservice_ttl = \"42s\"\n", fake.url())).unwrap();
    d.signal("HUP");
    eventually(&d, 5 * SEC, "new TTL after SIGHUP", || ttl(&d) == [42]);
    assert_eq!(fake.tokens_seen(), Vec::<String>::new(), "no token configured, none sent");

    let (code, out, err) = crate::support::daemon::run_binary(&["--check-config", "--consul", "127.0.0.1:1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Consul source at http://127.0.0.1:1"), "{out}");
}

#[test]
fn ready_and_metrics_follow_the_consul_sync() {
    use crate::support::http::{get, samples};
    let fake = web_fake("dc1", &[]);
    fake.stop_listening();
    let d = start(&fake, &[]);
    let ready = get(d.http(), "/ready");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["reason"], "not synced");
    fake.resume_listening();
    eventually(&d, 10 * SEC, "ready after the first sync", || get(d.http(), "/ready").status == 200);
    let before = samples(&get(d.http(), "/metrics").text());
    let server_errors = "consul_dns_sync_failures_total{backend=\"consul\",reason=\"server_error\"}";
    assert_eq!(before.get(server_errors), Some(&0.0), "exported at 0 before any failure");
    fake.set_fault(Fault::Status(500, "No cluster leader"));
    fake.register("dc1", "n1", Svc::new("api", "api-1", 81));
    eventually(&d, 10 * SEC, "failures counted", || {
        samples(&get(d.http(), "/metrics").text())
            .get("consul_dns_sync_failures_total{backend=\"consul\",reason=\"server_error\"}")
            .is_some_and(|n| *n >= 1.0)
    });
    assert_eq!(get(d.http(), "/ready").status, 200, "no max_stale: still ready while Consul fails");
    fake.clear_fault();
    eventually(&d, 10 * SEC, "api", || !rdata(&d, "api.service.consul", RecordType::A).is_empty());
    let m = samples(&get(d.http(), "/metrics").text());
    assert!(m["consul_dns_sync_publishes_total{backend=\"consul\"}"] >= 2.0, "{m:?}");
}

/// A Consul answering `X-Consul-Index: 0` to everything froze the catalog: the index was
/// taken for "unchanged", and the watch spun without blocking. Now the body is applied and
/// the loop is held to the churn limit.
#[test]
fn index_zero_from_consul_still_delivers_changes_at_a_bounded_rate() {
    let fake = web_fake("dc1", &[]);
    fake.set_fault(Fault::IndexZero);
    let d = start(&fake, &[]);
    eventually(&d, 10 * SEC, "synced", || !rdata(&d, "web.service.consul", RecordType::A).is_empty());
    std::thread::sleep(SEC);
    fake.register("dc1", "n1", Svc::new("api", "api-1", 81));
    eventually(&d, 5 * SEC, "api answered under index 0", || {
        !rdata(&d, "api.service.consul", RecordType::A).is_empty()
    });
    let before = fake.requests();
    std::thread::sleep(2 * SEC);
    let per_second = (fake.requests() - before) as f64 / 2.0;
    // Four watches at most 4 rounds each per second, plus the service reads they start.
    assert!(per_second < 100.0, "{per_second} requests a second: the loop is not held back");
}

/// HTTP 200 with a body of the wrong shape counted as a fresh sync when the index had not
/// moved: the catalog looked current while every read failed. Only a decoded body counts.
#[test]
fn garbage_with_an_unchanged_index_is_a_failure_not_a_fresh_sync() {
    use crate::support::http::{get, samples};
    let fake = web_fake("dc1", &[]);
    let url = fake.url();
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &["--consul", &url, "--consul-wait", "1s"]);
    eventually(&d, 10 * SEC, "synced", || !rdata(&d, "web.service.consul", RecordType::A).is_empty());
    let last_success = |d: &Daemon| {
        samples(&get(d.http(), "/metrics").text())
            .get("consul_dns_sync_last_success_timestamp_seconds{backend=\"consul\"}")
            .copied()
            .unwrap_or_default()
    };
    fake.set_fault(Fault::WrongShape);
    std::thread::sleep(SEC); // reads under way before the fault finish
    let during = last_success(&d);
    std::thread::sleep(3 * SEC);
    assert_eq!(last_success(&d), during, "no read succeeded during the fault");
    let decode = samples(&get(d.http(), "/metrics").text())
        .get("consul_dns_sync_failures_total{backend=\"consul\",reason=\"decode\"}")
        .copied()
        .unwrap_or_default();
    assert!(decode >= 1.0, "the bad bodies are counted as decode failures");
    assert_eq!(rdata(&d, "web.service.consul", RecordType::A).len(), 1, "the last good answers stay");
    fake.clear_fault();
    eventually(&d, 10 * SEC, "reads succeed again", || last_success(&d) > during);
}
