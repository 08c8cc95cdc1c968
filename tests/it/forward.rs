//! Recursion (spec S9 with S15's changes) and the client ACL, against a test upstream on
//! loopback (`support/upstream.rs`): what Kong needs to resolve its own `kong-database`
//! through consul-dns alone.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::support::client::{query_tcp_from, query_udp_from};
use crate::support::upstream::{BIG_RECORDS, KONG_DATABASE_IP, KONG_DATABASE_TTL, Mode, Upstream};
use crate::support::{Daemon, dig, query_tcp, query_udp};

/// One service on one node, so in-domain answers are easy to check.
pub const CATALOG: &str =
    "[[nodes]]\nname = \"n1\"\naddress = \"127.0.0.21\"\n[[services]]\nname = \"user\"\nnode = \"n1\"\nport = 8001\n";

fn start(upstreams: &[&Upstream], extra: &[&str]) -> Daemon {
    let args: Vec<String> = upstreams.iter().map(|u| u.arg()).collect();
    let mut all: Vec<&str> = Vec::new();
    for arg in &args {
        all.extend(["--recursor", arg]);
    }
    all.extend(extra);
    Daemon::start(CATALOG, &all)
}

/// Polls `done` every 50 ms until it holds or `within` passes.
fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn s9_forwarded_answer_keeps_upstream_ttl_and_is_cached_counting_down() {
    let up = Upstream::start(Mode::Answer);
    let d = start(&[&up], &[]);
    let first = query_udp(d.addr, "kong-database", RecordType::A, None);
    assert_eq!(first.rcode(), 0);
    assert_eq!(first.answers(), [format!("kong-database. {KONG_DATABASE_TTL} IN A {KONG_DATABASE_IP}")]);
    assert!(first.recursion_available() && !first.authoritative(), "RA, and not our zone (no AA)");
    assert!(first.message.edns.is_none(), "K7: no OPT when the query had none");
    assert_eq!(up.queries(), 1);

    let counted_down = eventually(Duration::from_secs(4), || {
        let again = query_udp(d.addr, "Kong-Database", RecordType::A, None);
        assert_eq!(again.message.queries[0].name().to_string(), "Kong-Database.", "question as asked");
        again.answer_ttls()[0] < KONG_DATABASE_TTL
    });
    assert!(counted_down, "a cached answer's TTL goes down with time");
    assert_eq!(up.queries(), 1, "answered from the cache, upstream asked once");
    let over_tcp = query_tcp(d.addr, "kong-database", RecordType::A);
    assert_eq!((over_tcp.answers().len(), up.queries()), (1, 1), "TCP clients share the cache");

    let missing = query_udp(d.addr, "nope.example", RecordType::A, None);
    assert_eq!(missing.rcode(), 3, "NXDOMAIN is relayed as it is (S9.3)");
    assert_eq!(missing.authorities().len(), 1, "with the upstream's SOA");
    assert!(dig(d.addr, &["kong-database", "A"]).contains(&KONG_DATABASE_IP.to_string()), "real dig agrees");
}

#[test]
fn s9_truncated_upstream_reply_is_retried_over_tcp() {
    let up = Upstream::start(Mode::TruncateUdp);
    let d = start(&[&up], &[]);
    let reply = query_udp(d.addr, "kong-database", RecordType::A, None);
    assert_eq!((reply.rcode(), reply.truncated()), (0, false));
    assert_eq!(reply.answers(), [format!("kong-database. {KONG_DATABASE_TTL} IN A {KONG_DATABASE_IP}")]);
    assert_eq!((up.udp_queries(), up.tcp_queries()), (1, 1), "UDP said TC, so TCP was asked");
}

#[test]
fn s9_answer_too_big_for_udp_gives_tc_then_the_client_gets_it_all_over_tcp() {
    let up = Upstream::start(Mode::Answer);
    let d = start(&[&up], &[]);
    let udp = query_udp(d.addr, "big.example", RecordType::A, None);
    assert!(udp.truncated() && udp.size <= 512, "TC, {} bytes", udp.size);
    assert_eq!(up.tcp_queries(), 1, "the daemon fetched the whole answer upstream over TCP");
    let tcp = query_tcp(d.addr, "big.example", RecordType::A);
    assert_eq!((tcp.answers().len(), tcp.truncated()), (BIG_RECORDS, false));
    assert_eq!(up.queries(), 2, "the client's TCP retry came from the cache");
    let dig_out = dig(d.addr, &["big.example", "A", "+noedns"]);
    assert!(dig_out.contains(&format!("ANSWER: {BIG_RECORDS}")), "dig retries over TCP on TC: {dig_out}");
}

#[test]
fn s9_4_silent_upstream_gives_servfail_within_the_configured_bound() {
    let up = Upstream::start(Mode::Silent);
    let d = start(&[&up], &["--recursor-timeout", "400ms"]);
    for edns in [None, Some(1232)] {
        let started = Instant::now();
        let reply = query_udp(d.addr, "kong-database", RecordType::A, edns);
        let took = started.elapsed();
        assert_eq!(reply.rcode(), 2, "SERVFAIL");
        assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(1600), "{took:?}");
        assert!(reply.recursion_available());
        assert_eq!(reply.message.queries.len(), 1, "question echoed");
        assert_eq!(reply.message.edns.is_some(), edns.is_some(), "OPT only when the query had one");
    }
    let started = Instant::now();
    assert_eq!(query_tcp(d.addr, "kong-database", RecordType::A).rcode(), 2, "TCP too");
    assert!(started.elapsed() < Duration::from_millis(1600));
    assert!(up.udp_queries() >= 2 && up.tcp_queries() >= 1);
    up.set_mode(Mode::Answer);
    let recovered = query_udp(d.addr, "kong-database", RecordType::A, None);
    assert_eq!((recovered.rcode(), recovered.answers().len()), (0, 1), "failures are never cached");
    assert!(!d.log().contains("panicked"), "log:\n{}", d.log());
}

#[test]
fn s9_2_sequential_falls_back_from_failing_upstreams_to_a_working_one() {
    let (silent, failing, working) =
        (Upstream::start(Mode::Silent), Upstream::start(Mode::ServFail), Upstream::start(Mode::Answer));
    let d = start(&[&silent, &failing, &working], &["--recursor-timeout", "300ms"]);
    let started = Instant::now();
    let reply = query_udp(d.addr, "kong-database", RecordType::A, None);
    assert_eq!(reply.answers(), [format!("kong-database. {KONG_DATABASE_TTL} IN A {KONG_DATABASE_IP}")]);
    assert!(started.elapsed() < Duration::from_millis(1600), "{:?}", started.elapsed());
    assert_eq!([silent.queries(), failing.queries(), working.queries()], [1, 1, 1], "in list order");

    let nx_first = Upstream::start(Mode::Answer);
    let d = start(&[&nx_first, &working], &[]);
    assert_eq!(query_udp(d.addr, "nope.example", RecordType::A, None).rcode(), 3);
    assert_eq!(working.queries(), 1, "NXDOMAIN is an answer: the next upstream is not asked");
}

#[test]
fn s15_client_outside_allow_recursion_is_refused_outside_the_domain_without_ra() {
    let up = Upstream::start(Mode::Answer);
    let d = start(&[&up], &["--allow-recursion", "127.0.0.1/32"]);
    let stranger = query_udp_from("127.0.0.2", d.addr, "kong-database", RecordType::A, None);
    assert_eq!((stranger.rcode(), stranger.recursion_available()), (5, false), "REFUSED, RA=0");
    assert_eq!(stranger.message.queries.len(), 1, "still a well-formed reply");
    let in_domain = query_udp_from("127.0.0.2", d.addr, "user.service.consul", RecordType::A, None);
    assert_eq!((in_domain.rcode(), in_domain.answers().len(), in_domain.recursion_available()), (0, 1, false));
    let over_tcp = query_tcp_from("127.0.0.2", d.addr, "kong-database", RecordType::A);
    assert_eq!(over_tcp.rcode(), 5, "TCP checks the same list");
    assert_eq!(up.queries(), 0, "nothing was relayed for the stranger");

    let local = query_udp_from("127.0.0.1", d.addr, "kong-database", RecordType::A, None);
    assert_eq!((local.rcode(), local.answers().len(), local.recursion_available()), (0, 1, true));
    assert_eq!(up.queries(), 1);
}

#[test]
fn s15_client_outside_allow_query_is_refused_everything() {
    let up = Upstream::start(Mode::Answer);
    let d = start(&[&up], &["--allow-query", "127.0.0.1"]);
    for (name, qtype) in [("user.service.consul", RecordType::SRV), ("kong-database", RecordType::A)] {
        let reply = query_udp_from("127.0.0.2", d.addr, name, qtype, None);
        assert_eq!((reply.rcode(), reply.answers().len(), reply.recursion_available()), (5, 0, false), "{name}");
        assert_eq!(query_tcp_from("127.0.0.2", d.addr, name, qtype).rcode(), 5, "{name} over TCP");
    }
    assert_eq!(query_udp_from("127.0.0.1", d.addr, "user.service.consul", RecordType::A, None).rcode(), 0);
    assert_eq!(up.queries(), 0);
}

#[test]
fn s3_8_unknown_reverse_names_are_relayed_known_ones_answered_here() {
    let up = Upstream::start(Mode::Answer);
    let d = start(&[&up], &[]);
    let theirs = query_udp(d.addr, "99.0.0.127.in-addr.arpa", RecordType::PTR, None);
    assert_eq!(theirs.answers(), ["99.0.0.127.in-addr.arpa. 60 IN PTR kong-database."]);
    let ours = query_udp(d.addr, "21.0.0.127.in-addr.arpa", RecordType::PTR, None);
    assert_eq!(ours.answers(), ["21.0.0.127.in-addr.arpa. 5 IN PTR n1.node.dc1.consul."]);
    assert_eq!(up.queries(), 1, "only the unknown one went upstream");
}

#[test]
fn resolv_conf_nameservers_are_the_default_recursors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.toml"), CATALOG).unwrap();
    let resolv = dir.path().join("resolv.conf");
    // Documentation addresses: nothing is sent to them, the test only reads the set-up.
    std::fs::write(&resolv, "search example.test\nnameserver 192.0.2.53\nnameserver 198.51.100.53\n").unwrap();
    let resolv = resolv.display().to_string();
    let d = Daemon::start_in(dir, &["--resolv-conf", &resolv]);
    let log = d.log();
    assert!(log.contains("Recursion on") && log.contains("192.0.2.53:53") && log.contains("198.51.100.53:53"), "{log}");
    let reply = query_udp(d.addr, "user.service.consul", RecordType::A, None);
    assert!(reply.recursion_available(), "RA: there are recursors and loopback may use them");

    let off = Daemon::start(CATALOG, &["--recursor", "none"]);
    assert!(off.log().contains("Recursion off"), "{}", off.log());
    let refused = query_udp(off.addr, "kong-database", RecordType::A, None);
    assert_eq!((refused.rcode(), refused.recursion_available()), (5, false), "S1.4: REFUSED, no RA");
}
