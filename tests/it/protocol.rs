//! Protocol details over real sockets (issue 13): CHAOS questions answered here (S8.4), the DO
//! bit copied (S8.1), OPT only in the additional section (S1.3), zone transfers (S8.5), RD=0
//! outside the domain (S1.4), and catalog addresses that only look like IPs (S3.4). Each
//! question that must not be relayed is asked with a test upstream configured, whose query
//! count proves it was not.

use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::forward::CATALOG;
use crate::support::client::query_udp_raw;
use crate::support::daemon::run_binary;
use crate::support::fake_consul::{FakeConsul, Svc};
use crate::support::http::{get, samples};
use crate::support::upstream::{Mode, Upstream};
use crate::support::{Daemon, dig, query_udp, start_consul};

const NOERROR: u16 = 0;
const FORMERR: u16 = 1;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;

fn with_upstream(up: &Upstream, extra: &[&str]) -> Daemon {
    let arg = up.arg();
    let mut args = vec!["--recursor", arg.as_str()];
    args.extend_from_slice(extra);
    Daemon::start(CATALOG, &args)
}

/// A query message: `class`, RD as given, an OPT with DO as given when `edns`.
fn message(name: &str, qtype: RecordType, class: DNSClass, rd: bool, edns: Option<bool>) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.id = fastrand::u16(..);
    msg.metadata.recursion_desired = rd;
    let mut query = Query::query(Name::from_ascii(name).unwrap(), qtype);
    query.set_query_class(class);
    msg.add_query(query);
    if let Some(dnssec_ok) = edns {
        let mut e = Edns::new();
        e.set_max_payload(1232).set_dnssec_ok(dnssec_ok);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

/// Sends `packet`, decodes the reply and checks it answers this ID.
fn ask(d: &Daemon, packet: &[u8]) -> Message {
    let bytes = query_udp_raw(d.addr, packet).expect("a UDP reply");
    assert_eq!(&bytes[..2], &packet[..2], "reply carries the query's ID");
    Message::from_vec(&bytes).expect("a decodable reply")
}

fn rcode(msg: &Message) -> u16 {
    u16::from(msg.metadata.response_code) & 0xF
}

#[test]
fn s8_4_chaos_version_bind_is_refused_by_default_and_never_relayed() {
    let up = Upstream::start(Mode::Answer);
    let d = with_upstream(&up, &[]);
    for name in ["version.bind", "id.server", "hostname.bind", "version.server"] {
        let reply = ask(&d, &message(name, RecordType::TXT, DNSClass::CH, true, None));
        assert_eq!((rcode(&reply), reply.answers.len()), (REFUSED, 0), "{name}");
    }
    assert!(dig(d.addr, &["version.bind", "TXT", "CH"]).contains("status: REFUSED"), "real dig agrees");
    assert_eq!(up.queries(), 0, "no CHAOS question reached the upstream");
    let outside = query_udp(d.addr, "kong-database", RecordType::A, None);
    assert_eq!((outside.rcode(), up.queries()), (NOERROR, 1), "the upstream works: it was just not asked");
}

#[test]
fn s8_4_chaos_version_answers_the_configured_text() {
    let up = Upstream::start(Mode::Answer);
    let d = with_upstream(&up, &["--chaos-version", "consul-dns internal"]);
    let reply = ask(&d, &message("VERSION.BIND", RecordType::TXT, DNSClass::CH, true, None));
    assert_eq!(rcode(&reply), NOERROR);
    let answers: Vec<String> = reply.answers.iter().map(|r| r.to_string()).collect();
    assert_eq!(answers, ["VERSION.BIND. 0 CH TXT consul-dns internal"]);
    let identity = ask(&d, &message("id.server", RecordType::TXT, DNSClass::CH, true, None));
    assert_eq!(rcode(&identity), REFUSED, "the identity is never told");
    assert_eq!(up.queries(), 0);
    let out = dig(d.addr, &["+short", "version.bind", "TXT", "CH"]);
    assert_eq!(out.trim(), "\"consul-dns internal\"", "real dig agrees");
}

#[test]
fn chaos_version_that_is_not_one_txt_string_is_refused_at_start() {
    let long = "x".repeat(256);
    for bad in [long.as_str(), "tab\there"] {
        let (code, _, err) = run_binary(&["--check-config", "--static", "builtin", "--chaos-version", bad]);
        assert_ne!(code, Some(0), "{bad:?}");
        assert!(err.contains("chaos_version") && err.contains("255 printable ASCII"), "{err}");
    }
}

#[test]
fn s8_1_do_bit_is_copied_into_the_reply_opt() {
    let d = Daemon::start(CATALOG, &[]);
    for dnssec_ok in [true, false] {
        let reply = ask(&d, &message("user.service.consul", RecordType::SRV, DNSClass::IN, true, Some(dnssec_ok)));
        assert_eq!(rcode(&reply), NOERROR);
        assert_eq!(reply.edns.expect("an OPT").flags().dnssec_ok, dnssec_ok, "RFC 3225 §3");
    }
    assert!(dig(d.addr, &["+dnssec", "user.service.consul", "SRV"]).contains("flags: do;"), "real dig agrees");
}

#[test]
fn s1_3_opt_in_the_answer_or_authority_section_is_formerr() {
    let d = Daemon::start(CATALOG, &[]);
    let with_opt = message("user.service.consul", RecordType::A, DNSClass::IN, true, Some(false));
    let plain = message("user.service.consul", RecordType::A, DNSClass::IN, true, None);
    let opt = &with_opt[plain.len()..]; // the OPT record hickory appended
    for (count_at, section) in [(7, "answer"), (9, "authority")] {
        let mut packet = plain.clone();
        packet.extend_from_slice(opt);
        packet[count_at] = 1;
        let reply = query_udp_raw(d.addr, &packet).expect("a reply");
        assert_eq!(reply[3] & 0x0F, FORMERR as u8, "OPT in the {section} section (RFC 6891 §6.1.1)");
    }
    let fine = ask(&d, &with_opt);
    assert_eq!(rcode(&fine), NOERROR, "the same OPT in the additional section is fine");
}

#[test]
fn s8_5_axfr_and_ixfr_agree_in_the_domain_and_are_not_relayed_outside() {
    let up = Upstream::start(Mode::Answer);
    let d = with_upstream(&up, &[]);
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let inside = ask(&d, &message("consul", qtype, DNSClass::IN, true, None));
        assert_eq!((rcode(&inside), inside.answers.len()), (NOTIMP, 0), "{qtype} in the domain");
        for outside in ["example.com", "kong-database", "9.9.9.9.in-addr.arpa"] {
            let reply = ask(&d, &message(outside, qtype, DNSClass::IN, true, None));
            assert_eq!(rcode(&reply), REFUSED, "{qtype} {outside}");
        }
    }
    assert_eq!(up.queries(), 0, "no zone transfer reached the upstream");
}

#[test]
fn s1_4_rd0_outside_the_domain_is_refused_not_relayed() {
    let up = Upstream::start(Mode::Answer);
    let d = with_upstream(&up, &[]);
    let reply = ask(&d, &message("kong-database", RecordType::A, DNSClass::IN, false, None));
    assert_eq!((rcode(&reply), reply.answers.len()), (REFUSED, 0));
    assert!(dig(d.addr, &["+norecurse", "kong-database", "A"]).contains("status: REFUSED"), "real dig agrees");
    assert_eq!(up.queries(), 0, "RD=0 is not relayed");
    let inside = ask(&d, &message("user.service.consul", RecordType::A, DNSClass::IN, false, None));
    assert_eq!((rcode(&inside), inside.answers.len()), (NOERROR, 1), "the domain needs no RD");
    let relayed = ask(&d, &message("kong-database", RecordType::A, DNSClass::IN, true, None));
    assert_eq!((rcode(&relayed), up.queries()), (NOERROR, 1), "RD=1 is relayed");
}

#[test]
fn s3_4_a_static_address_that_only_looks_like_an_ip_is_rejected_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("services.toml");
    let text =
        "[[nodes]]\nname = \"n1\"\naddress = \"999.1.1.1\"\n[[services]]\nname = \"user\"\nnode = \"n1\"\nport = 80\n";
    std::fs::write(&catalog, text).unwrap();
    let (code, _, err) = run_binary(&["--check-config", "--static", catalog.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("\"999.1.1.1\" looks like an IP address but is not one"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn s3_4_a_consul_address_that_only_looks_like_an_ip_is_skipped_and_counted() {
    let fake = FakeConsul::start("dc1", &[]);
    fake.register_node("dc1", "good", "127.0.0.21", &[]);
    fake.register_node("dc1", "typo", "999.1.1.1", &[]);
    fake.register("dc1", "good", Svc::new("web", "web-1", 8080));
    fake.register("dc1", "typo", Svc::new("web", "web-2", 8080));
    fake.register("dc1", "good", Svc { address: "10.0.0.300".into(), ..Svc::new("api", "api-1", 80) });
    let d = start_consul(&fake.url(), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while query_udp(d.addr, "web.service.consul", RecordType::A, None).answers().is_empty() {
        assert!(Instant::now() < deadline, "never synced; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let web = query_udp(d.addr, "web.service.consul", RecordType::A, None);
    assert_eq!(web.answers(), ["web.service.consul. 5 IN A 127.0.0.21"], "no CNAME to 999.1.1.1");
    let node = query_udp(d.addr, "typo.node.consul", RecordType::A, None);
    assert_eq!((node.rcode(), node.answers().len()), (3, 0), "the node was skipped: NXDOMAIN");
    let api = query_udp(d.addr, "api.service.consul", RecordType::ANY, None);
    assert!(api.answers().iter().all(|a| !a.contains("CNAME")), "{:?}", api.answers());
    let scrape = get(d.http(), "/metrics").text();
    let skipped = samples(&scrape)
        .iter()
        .filter(|(k, _)| k.starts_with("consul_dns_sync_skipped_entries_total"))
        .map(|(_, v)| *v)
        .sum::<f64>();
    assert!(skipped >= 2.0, "the node and the instance are counted as skipped: {skipped}");
    assert!(d.log().contains("looks like an IP address but is not one"), "the reason is logged:\n{}", d.log());
}

#[test]
fn s7_1_udp_answers_never_exceed_max_udp_size_whatever_the_client_asks() {
    let catalog = crate::support::big_catalog("big", 200);
    for (max, args) in [(1232, vec![]), (4000, vec!["--max-udp-size", "4000"])] {
        let d = Daemon::start(&catalog, &args);
        for asked in [512, 1232, 4096, 65535] {
            let reply = query_udp(d.addr, "big.service.consul", RecordType::SRV, Some(asked));
            let budget = usize::from(asked).clamp(512, max);
            assert!(reply.size <= budget, "asked {asked}, max {max}: {} bytes", reply.size);
            assert!(reply.truncated(), "200 SRV records never fit: TC (asked {asked})");
        }
        let over_tcp = crate::support::query_tcp(d.addr, "big.service.consul", RecordType::SRV);
        assert_eq!(over_tcp.answers().len(), 200, "TCP has it all");
    }
}
