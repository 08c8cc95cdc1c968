//! The DNS behaviour of docs/behaviour.md (S1–S11) over real UDP and TCP sockets.

use std::collections::HashSet;

use hickory_proto::rr::RecordType;

use crate::support::{Daemon, big_catalog, dig, query_tcp, query_udp, query_udp_raw};

/// web: web-1 on node1, web-2 on node2 with its own address and tag v2, web-3 warning on
/// node3, web-4 critical; db on node1; nothing else.
const CATALOG: &str = r#"
datacenter = "dc1"
[[nodes]]
name = "node1"
address = "127.0.0.21"
meta = { rack = "r1" }
[[nodes]]
name = "node2"
address = "127.0.0.22"
[[nodes]]
name = "node3"
address = "127.0.0.23"
[[nodes]]
name = "server1"
address = "127.0.0.2"
[[services]]
name = "consul"
node = "server1"
port = 8300
[[services]]
name = "web"
id = "web-1"
node = "node1"
port = 8001
tags = ["v1", "primary"]
[[services]]
name = "web"
id = "web-2"
node = "node2"
address = "127.0.0.32"
port = 8002
tags = ["v2"]
[[services]]
name = "web"
id = "web-3"
node = "node3"
port = 8003
tags = ["v1"]
health = "warning"
weights = { passing = 5, warning = 2 }
[[services]]
name = "web"
id = "web-4"
node = "node3"
port = 8004
health = "critical"
[[services]]
name = "db"
node = "node1"
port = 5432
"#;

fn short(daemon: &Daemon, args: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = dig(daemon.addr, &[args, &["+short"]].concat()).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn s1_1_udp_and_tcp_on_one_port() {
    let d = Daemon::start(CATALOG, &[]);
    let udp = query_udp(d.addr, "web.service.consul", RecordType::A, None);
    let tcp = query_tcp(d.addr, "web.service.consul", RecordType::A);
    assert_eq!(udp.answers().len(), 3);
    assert_eq!(tcp.answers().len(), 3);
    assert!(dig(d.addr, &["+tcp", "web.service.consul", "A"]).contains("status: NOERROR"));
}

#[test]
fn s1_2_tcp_connection_carries_many_queries() {
    use std::io::Write;
    let d = Daemon::start(CATALOG, &[]);
    let mut stream = std::net::TcpStream::connect(d.addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    for name in ["web.service.consul", "db.service.consul", "node1.node.consul"] {
        let bytes = crate::support::client::packet(name, RecordType::A, None);
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).unwrap();
        let reply = crate::support::client::read_framed(&mut stream).expect("a reply on the same connection");
        assert_eq!(&reply[..2], &bytes[..2], "{name}");
    }
}

#[test]
fn s1_3_screening_formerr_notimp_and_dropped_responses() {
    let d = Daemon::start(CATALOG, &[]);
    let mut two_questions = crate::support::client::packet("web.service.consul", RecordType::A, None);
    two_questions[5] = 2;
    let reply = query_udp_raw(d.addr, &two_questions).expect("FORMERR reply");
    assert_eq!(reply[3] & 0x0F, 1);
    let mut notify = crate::support::client::packet("web.service.consul", RecordType::A, None);
    notify[2] |= 4 << 3;
    let reply = query_udp_raw(d.addr, &notify).expect("NOTIMP reply");
    assert_eq!(reply[3] & 0x0F, 4);
    let mut response = crate::support::client::packet("web.service.consul", RecordType::A, None);
    response[2] |= 0x80;
    assert_eq!(query_udp_raw(d.addr, &response), None, "QR=1 is dropped");
}

#[test]
fn s1_4_outside_the_domain_is_refused_without_aa_or_ra() {
    let d = Daemon::start(CATALOG, &[]);
    let out = dig(d.addr, &["example.com", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    assert!(!out.contains(" aa") && !out.contains(" ra"), "{out}");
    let reply = query_udp(d.addr, "web.service.consul.default.svc.cluster.local", RecordType::SRV, None);
    assert_eq!(reply.rcode(), 5, "K6: search-suffixed names answered at once");
    assert_eq!(reply.message.queries.len(), 1, "question echoed");
}

#[test]
fn s1_5_s2_12_question_case_echoed_and_owner_as_asked() {
    let d = Daemon::start(CATALOG, &[]);
    let out = dig(d.addr, &["UsEr.SeRvIcE.CoNsUl", "SRV", "+noall", "+question"]);
    assert!(out.contains("UsEr.SeRvIcE.CoNsUl."), "{out}");
    let web = dig(d.addr, &["WeB.SeRvIcE.CoNsUl", "SRV", "+noall", "+answer"]);
    assert!(web.lines().all(|l| l.starts_with("WeB.SeRvIcE.CoNsUl.")), "{web}");
    assert!(web.contains("node1.node.dc1.CoNsUl."), "targets use the domain as asked: {web}");
    let flags = dig(d.addr, &["web.service.consul", "A"]);
    assert!(flags.contains("flags: qr aa rd;"), "{flags}");
}

#[test]
fn s2_6_tag_filters_and_rfc2782_names() {
    let d = Daemon::start(CATALOG, &[]);
    assert_eq!(short(&d, &["v1.web.service.consul", "A"]), ["127.0.0.21", "127.0.0.23"]);
    assert_eq!(short(&d, &["PRIMARY.web.service.consul", "A"]), ["127.0.0.21"]);
    assert_eq!(short(&d, &["_web._v2.service.consul", "SRV"]), ["1 1 8002 7f000020.addr.dc1.consul."]);
    assert_eq!(short(&d, &["_web._tcp.service.consul", "SRV"]).len(), 3);
    assert_eq!(short(&d, &["_web._tcp.dc1.consul", "SRV"]).len(), 3, "S2.3");
    assert!(dig(d.addr, &["v9.web.service.consul", "A"]).contains("status: NXDOMAIN"));
}

#[test]
fn s2_11_datacenters() {
    let d = Daemon::start(CATALOG, &[]);
    assert_eq!(short(&d, &["db.service.dc1.consul", "A"]), ["127.0.0.21"]);
    assert!(dig(d.addr, &["db.service.dc2.consul", "A"]).contains("status: NXDOMAIN"));
}

#[test]
fn s3_4_service_a_and_s4_1_health() {
    let d = Daemon::start(CATALOG, &[]);
    assert_eq!(short(&d, &["web.service.consul", "A"]), ["127.0.0.21", "127.0.0.23", "127.0.0.32"]);
    let passing_only = Daemon::start(CATALOG, &["--only-passing"]);
    assert_eq!(short(&passing_only, &["web.service.consul", "A"]), ["127.0.0.21", "127.0.0.32"]);
}

#[test]
fn s3_5_srv_answers_with_targets_and_glue() {
    let d = Daemon::start(CATALOG, &[]);
    assert_eq!(
        short(&d, &["web.service.consul", "SRV"]),
        ["1 1 8001 node1.node.dc1.consul.", "1 1 8002 7f000020.addr.dc1.consul.", "1 2 8003 node3.node.dc1.consul."]
    );
    let reply = query_udp(d.addr, "web.service.consul", RecordType::SRV, Some(1232));
    let mut glue = reply.additionals();
    glue.sort();
    assert!(glue.contains(&"7f000020.addr.dc1.consul. 5 IN A 127.0.0.32".to_owned()), "{glue:?}");
    assert!(glue.contains(&"node1.node.dc1.consul. 5 IN A 127.0.0.21".to_owned()), "{glue:?}");
    assert!(glue.contains(&"node1.node.dc1.consul. 5 IN TXT rack=r1".to_owned()), "{glue:?}");
}

#[test]
fn s3_5_every_srv_target_answers_its_own_a_query() {
    let d = Daemon::start(CATALOG, &[]);
    let reply = query_udp(d.addr, "web.service.consul", RecordType::SRV, None);
    let targets: Vec<String> = reply.answers().iter().map(|l| l.rsplit(' ').next().unwrap().to_owned()).collect();
    assert!(
        targets.iter().any(|t| t.contains(".node.")) && targets.iter().any(|t| t.contains(".addr.")),
        "{targets:?}"
    );
    for target in targets {
        let a = short(&d, &[&target, "A"]);
        assert_eq!(a.len(), 1, "{target} → {a:?}");
        assert!(a[0].starts_with("127.0.0."), "{target} → {a:?}");
        let srv = dig(d.addr, &[&target, "SRV"]);
        assert!(srv.contains("status: NOERROR") && srv.contains("ANSWER: 0"), "K4 NODATA for SRV on {target}: {srv}");
    }
}

#[test]
fn s3_6_s3_7_nodes_and_addr_names() {
    let d = Daemon::start(CATALOG, &[]);
    assert_eq!(short(&d, &["node1.node.consul", "A"]), ["127.0.0.21"]);
    assert_eq!(short(&d, &["node1.node.dc1.consul", "TXT"]), ["\"rack=r1\""]);
    assert_eq!(short(&d, &["7f000001.addr.consul", "A"]), ["127.0.0.1"]);
    let aaaa = dig(d.addr, &["node1.node.consul", "AAAA"]);
    assert!(aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0") && aaaa.contains("SOA"), "{aaaa}");
}

#[test]
fn s3_8_reverse_lookup() {
    let d = Daemon::start(CATALOG, &[]);
    assert_eq!(short(&d, &["-x", "127.0.0.21"]), ["node1.node.dc1.consul."]);
    assert_eq!(short(&d, &["-x", "127.0.0.32"]), ["web.service.dc1.consul."]);
    assert!(dig(d.addr, &["-x", "192.0.2.1"]).contains("status: NXDOMAIN"));
}

#[test]
fn s5_4_without_a_consul_service_the_apex_ns_is_this_daemon() {
    let catalog = "[[nodes]]\nname = \"n1\"\naddress = \"127.0.0.21\"\n\
                   [[services]]\nname = \"web\"\nnode = \"n1\"\nport = 80\n";
    let plain = Daemon::start(catalog, &[]);
    let ns = dig(plain.addr, &["consul", "NS"]);
    assert!(ns.contains("status: NOERROR") && ns.contains("ANSWER: 0"), "no ns_name: NODATA as before: {ns}");
    let d = Daemon::start(catalog, &["--ns-name", "ns.consul.", "--ns-address", "127.0.0.53"]);
    assert_eq!(short(&d, &["consul", "NS"]), ["ns.consul."]);
    let full = dig(d.addr, &["consul", "NS"]);
    assert!(full.contains("ns.consul.\t\t5\tIN\tA\t127.0.0.53"), "glue in the additional section: {full}");
    assert_eq!(short(&d, &["NS.consul", "A"]), ["127.0.0.53"], "the name answers for itself, any case");
    let aaaa = dig(d.addr, &["ns.consul", "AAAA"]);
    assert!(aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"), "NODATA for the other family: {aaaa}");
    let soa = dig(d.addr, &["consul", "SOA"]);
    assert!(soa.contains("AUTHORITY: 1") && soa.contains("127.0.0.53"), "SOA carries the NS and its glue: {soa}");
    let (code, _, err) = crate::support::daemon::run_binary(&["--check-config", "--ns-name", "ns.consul."]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("ns_address"), "{err}");
    let (code, _, err) = crate::support::daemon::run_binary(&[
        "--check-config",
        "--ns-name",
        "ns.example.",
        "--ns-address",
        "127.0.0.1",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not below the domain"), "{err}");
}

#[test]
fn s5_apex_soa_ns_and_s15_apex_nodata() {
    let d = Daemon::start(CATALOG, &[]);
    let soa = short(&d, &["consul", "SOA"]);
    assert_eq!(soa.len(), 1);
    assert!(soa[0].starts_with("ns.consul. hostmaster.consul. "), "{soa:?}");
    assert_eq!(short(&d, &["consul", "NS"]), ["server1.node.dc1.consul."]);
    let apex_a = dig(d.addr, &["consul", "A"]);
    assert!(
        apex_a.contains("status: NOERROR") && apex_a.contains("ANSWER: 0") && apex_a.contains("AUTHORITY: 1"),
        "{apex_a}"
    );
}

#[test]
fn s6_ttls_default_and_configured() {
    let d = Daemon::start(CATALOG, &[]);
    let answer = dig(d.addr, &["web.service.consul", "A", "+noall", "+answer"]);
    assert!(answer.lines().all(|l| l.split_whitespace().nth(1) == Some("5")), "{answer}");
    let custom = Daemon::start(CATALOG, &["--service-ttl", "30s", "--node-ttl", "0", "--negative-ttl", "1m"]);
    let answer = dig(custom.addr, &["web.service.consul", "A", "+noall", "+answer"]);
    assert!(answer.lines().all(|l| l.split_whitespace().nth(1) == Some("30")), "{answer}");
    let node = dig(custom.addr, &["node1.node.consul", "A", "+noall", "+answer"]);
    assert_eq!(node.split_whitespace().nth(1), Some("0"), "{node}");
    let negative = query_udp(custom.addr, "nope.service.consul", RecordType::A, None);
    assert!(
        negative.authorities()[0].contains(" 60 IN SOA ") && negative.authorities()[0].ends_with(" 60"),
        "S6.4 {:?}",
        negative.authorities()
    );
}

#[test]
fn s7_5_200_instances_truncated_over_udp_complete_over_tcp() {
    let d = Daemon::start(&big_catalog("big", 200), &["--udp-answer-limit", "0"]);
    let udp = query_udp(d.addr, "big.service.consul", RecordType::SRV, None);
    assert!(udp.size <= 512, "{} bytes", udp.size);
    assert!(udp.truncated(), "TC set when answers were dropped (S7.5, S15)");
    assert!(udp.answers().len() >= 5, "{}", udp.answers().len());
    assert_eq!(udp.answers().len(), udp.additionals().len(), "whole records, each SRV with its glue");
    let tcp = query_tcp(d.addr, "big.service.consul", RecordType::SRV);
    assert_eq!((tcp.answers().len(), tcp.truncated()), (200, false));
    let targets: HashSet<String> = tcp.answers().iter().map(|l| l.rsplit(' ').next().unwrap().to_owned()).collect();
    assert_eq!(targets.len(), 200);
    let dig_tcp = dig(d.addr, &["big.service.consul", "SRV", "+noedns"]);
    assert!(dig_tcp.contains("ANSWER: 200"), "dig retries over TCP on TC: {dig_tcp}");
}

#[test]
fn s7_2_default_answer_limit_cuts_classic_udp_with_tc() {
    let d = Daemon::start(&big_catalog("big", 10), &[]);
    let udp = query_udp(d.addr, "big.service.consul", RecordType::A, None);
    assert_eq!((udp.answers().len(), udp.truncated()), (3, true));
    let edns = query_udp(d.addr, "big.service.consul", RecordType::A, Some(1232));
    assert_eq!((edns.answers().len(), edns.truncated()), (10, false), "EDNS clients get no count cut");
}

#[test]
fn s7_1_edns_size_honoured() {
    let d = Daemon::start(&big_catalog("big", 200), &["--max-udp-size", "4096"]);
    for size in [700u16, 1232, 4096] {
        let reply = query_udp(d.addr, "big.service.consul", RecordType::SRV, Some(size));
        assert!(reply.size <= size as usize && reply.size > size as usize - 100, "asked {size}, got {}", reply.size);
        assert!(reply.truncated());
        assert_eq!(reply.message.edns.as_ref().map(|e| e.max_payload()), Some(4096), "S8.1 our OPT");
    }
    let capped = query_udp(d.addr, "big.service.consul", RecordType::SRV, Some(65000));
    assert!(capped.size <= 4096, "capped at --max-udp-size: {}", capped.size);
}

#[test]
fn s8_opt_record_only_when_the_query_had_one() {
    let d = Daemon::start(CATALOG, &[]);
    assert!(query_udp(d.addr, "web.service.consul", RecordType::A, None).message.edns.is_none(), "S8.2, K7");
    assert!(query_udp(d.addr, "web.service.consul", RecordType::A, Some(1232)).message.edns.is_some(), "S8.1");
}

#[test]
fn s10_1_order_shuffled_across_20_queries() {
    let d = Daemon::start(&big_catalog("big", 5), &["--udp-answer-limit", "0"]);
    let orders: HashSet<Vec<String>> =
        (0..20).map(|_| query_udp(d.addr, "big.service.consul", RecordType::SRV, None).answers()).collect();
    assert!(orders.len() >= 5, "{} distinct orders in 20 queries", orders.len());
    let a_orders: HashSet<Vec<String>> =
        (0..20).map(|_| query_udp(d.addr, "big.service.consul", RecordType::A, Some(1232)).answers()).collect();
    assert!(a_orders.len() >= 5, "{} distinct A orders in 20 queries", a_orders.len());
}

#[test]
fn s11_response_codes() {
    let d = Daemon::start(CATALOG, &[]);
    let cases = [
        (vec!["web.service.consul", "A"], "NOERROR", "ANSWER: 3"),
        (vec!["web.service.consul", "TXT"], "NOERROR", "ANSWER: 0"),
        (vec!["nope.service.consul", "A"], "NXDOMAIN", "AUTHORITY: 1"),
        (vec!["nobody.node.consul", "A"], "NXDOMAIN", "AUTHORITY: 1"),
        (vec!["zz.addr.consul", "A"], "NXDOMAIN", "AUTHORITY: 1"),
        (vec!["example.org", "A"], "REFUSED", "ANSWER: 0"),
    ];
    for (args, status, section) in cases {
        let out = dig(d.addr, &args);
        assert!(out.contains(&format!("status: {status}")) && out.contains(section), "{args:?}: {out}");
    }
    assert_eq!(query_tcp(d.addr, "consul", RecordType::AXFR).rcode(), 4, "S3.1 AXFR is NOTIMP");
}
