//! Table tests for the answer path: a snapshot built from a literal catalog, queries as
//! packets, responses decoded by hickory-proto (an independent parser) and compared section by
//! section as sorted zone-file lines.

use std::sync::Arc;

use hickory_proto::op::Message;

use super::*;
use crate::catalog::model::{Address, CatalogData, Health, Instance, Node, TaggedAddresses, Weights};
use crate::catalog::{BuildOptions, Catalog};
use crate::config::TtlTable;
use crate::dns::acl::Access;
use crate::dns::message::tests::query;

fn node(name: &str, address: &str, meta: &[(&str, &str)]) -> Node {
    Node {
        name: name.into(),
        datacenter: "dc1".into(),
        address: Address::parse(address).unwrap(),
        tagged: TaggedAddresses::default(),
        meta: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn instance(
    service: &str,
    id: &str,
    node: &str,
    address: Option<&str>,
    port: u16,
    tags: &[&str],
    health: Health,
) -> Instance {
    Instance {
        id: id.into(),
        service: service.into(),
        datacenter: "dc1".into(),
        node: Some(node.into()),
        address: address.and_then(Address::parse),
        tagged: TaggedAddresses::default(),
        port,
        tags: crate::catalog::model::tags(tags),
        weights: Weights::default(),
        health,
    }
}

/// web: three eligible instances (two share 10.0.0.2) and a critical one; db: one warning
/// instance with weights; ext: a hostname; v6: an IPv6 service address; consul: the NS set;
/// big: 200 instances.
fn catalog() -> CatalogData {
    use Health::*;
    let mut nodes = vec![
        node("node1", "10.0.0.1", &[("rack", "r1")]),
        node("node2", "10.0.0.2", &[]),
        node("server1", "10.0.0.100", &[]),
    ];
    let mut instances = vec![
        instance("web", "web-1", "node1", None, 8001, &["v1", "Primary"], Passing),
        instance("web", "web-2", "node2", None, 8002, &["v2"], Passing),
        instance("web", "web-3", "node2", Some("10.0.0.30"), 8003, &["v1"], Warning),
        instance("web", "web-4", "node2", Some("10.0.0.40"), 8004, &["v1"], Critical),
        instance("db", "db-1", "node1", None, 5432, &[], Warning),
        instance("ext", "ext-1", "node1", Some("api.example.com"), 443, &[], Passing),
        instance("v6", "v6-1", "node1", Some("2001:db8::1"), 80, &[], Passing),
        instance("down", "down-1", "node1", None, 80, &[], Critical),
        instance("consul", "consul", "server1", None, 8300, &[], Passing),
    ];
    instances[4].weights = Weights { passing: 10, warning: 2 };
    for i in 0..200 {
        let name = format!("big{i}");
        nodes.push(node(&name, &format!("10.1.{}.{}", i / 250, i % 250 + 1), &[]));
        instances.push(instance("big", &format!("big-{i}"), &name, None, 9000, &[], Passing));
    }
    CatalogData { nodes, instances, mesh: vec![] }
}

fn options() -> BuildOptions {
    BuildOptions {
        datacenter: "dc1".into(),
        node_ttl: 7,
        service_ttl: TtlTable::new(5),
        only_passing: false,
        node_meta_txt: true,
    }
}

fn settings() -> Settings {
    Settings::new(crate::dns::name::DomainName::new("consul.").unwrap())
}

/// A decoded response, sections as sorted zone-file lines.
#[derive(Debug)]
struct Response {
    rcode: u16,
    aa: bool,
    tc: bool,
    ra: bool,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    edns_size: Option<u16>,
    bytes: Vec<u8>,
}

fn lines(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut lines: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    lines.sort();
    lines
}

fn decode(bytes: Vec<u8>) -> Response {
    let msg = Message::from_vec(&bytes).expect("hickory decodes our response");
    let edns_size = msg.edns.as_ref().map(|e| e.max_payload());
    let high = msg.edns.as_ref().map_or(0, |e| e.rcode_high() as u16);
    Response {
        rcode: (high << 4) | (u16::from(msg.metadata.response_code) & 0xF),
        aa: msg.metadata.authoritative,
        tc: msg.metadata.truncation,
        ra: msg.metadata.recursion_available,
        answer: lines(&msg.answers),
        authority: lines(&msg.authorities),
        additional: lines(&msg.additionals),
        edns_size,
        bytes,
    }
}

struct Fixture {
    catalog: Catalog,
    settings: Settings,
    scratch: Scratch,
    client: Access,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(catalog(), options(), settings())
    }

    fn with(data: CatalogData, options: BuildOptions, settings: Settings) -> Fixture {
        data.validate().unwrap();
        let catalog = Catalog::new(Snapshot::build(&data, Arc::new(options)));
        Fixture { catalog, settings, scratch: Scratch::with_seed(7), client: Access::Recurse }
    }

    fn packet(&mut self, packet: &[u8], transport: Transport) -> Response {
        let mut out = Vec::new();
        let snapshot = self.catalog.load();
        let action = respond(packet, &snapshot, &self.settings, transport, self.client, &mut self.scratch, &mut out);
        assert!(matches!(action, Action::Reply(_)), "{action:?}");
        decode(out)
    }

    fn ask(&mut self, name: &str, qtype: u16) -> Response {
        self.packet(&query(name, qtype, None), Transport::Udp)
    }

    fn ask_edns(&mut self, name: &str, qtype: u16, size: u16) -> Response {
        self.packet(&query(name, qtype, Some((size, 0, &[]))), Transport::Udp)
    }
}

fn soa_line(serial: u32) -> String {
    format!("consul. 5 IN SOA ns.consul. hostmaster.consul. {serial} 3600 600 86400 5")
}

#[test]
fn s3_4_service_a_is_eligible_instances_deduplicated() {
    let mut f = Fixture::new();
    let r = f.ask("web.service.consul", rtype::A);
    assert_eq!((r.rcode, r.aa, r.tc), (rcode::NOERROR, true, false));
    assert_eq!(
        r.answer,
        [
            "web.service.consul. 5 IN A 10.0.0.1",
            "web.service.consul. 5 IN A 10.0.0.2",
            "web.service.consul. 5 IN A 10.0.0.30",
        ]
    );
    assert!(r.authority.is_empty() && r.additional.is_empty());
}

#[test]
fn s3_5_srv_targets_weights_and_glue() {
    let mut f = Fixture::new();
    let r = f.ask("web.service.consul", rtype::SRV);
    assert_eq!(
        r.answer,
        [
            "web.service.consul. 5 IN SRV 1 1 8001 node1.node.dc1.consul.",
            "web.service.consul. 5 IN SRV 1 1 8002 node2.node.dc1.consul.",
            "web.service.consul. 5 IN SRV 1 1 8003 0a00001e.addr.dc1.consul.",
        ]
    );
    assert_eq!(
        r.additional,
        [
            "0a00001e.addr.dc1.consul. 5 IN A 10.0.0.30",
            "node1.node.dc1.consul. 5 IN A 10.0.0.1",
            "node1.node.dc1.consul. 5 IN TXT rack=r1",
            "node2.node.dc1.consul. 5 IN A 10.0.0.2",
        ]
    );
    let db = f.ask("db.service.consul", rtype::SRV);
    assert_eq!(db.answer, ["db.service.consul. 5 IN SRV 1 2 5432 node1.node.dc1.consul."], "S4.4 warning weight");
}

#[test]
fn s3_5_srv_targets_answer_their_own_address_queries() {
    let mut f = Fixture::new();
    assert_eq!(f.ask("node2.node.dc1.consul", rtype::A).answer, ["node2.node.dc1.consul. 7 IN A 10.0.0.2"]);
    assert_eq!(f.ask("0a00001e.addr.dc1.consul", rtype::A).answer, ["0a00001e.addr.dc1.consul. 7 IN A 10.0.0.30"]);
    let srv_on_target = f.ask("0a00001e.addr.dc1.consul", rtype::SRV);
    assert_eq!((srv_on_target.rcode, srv_on_target.answer.len()), (rcode::NOERROR, 0), "K4 NODATA");
    assert_eq!(srv_on_target.authority, [soa_line(f.catalog.load().serial())]);
    let srv_on_node = f.ask("node2.node.dc1.consul", rtype::SRV);
    assert_eq!((srv_on_node.rcode, srv_on_node.answer.len(), srv_on_node.authority.len()), (rcode::NOERROR, 0, 1));
}

#[test]
fn s3_5_hostname_and_ipv6_targets() {
    let mut f = Fixture::new();
    let ext = f.ask("ext.service.consul", rtype::SRV);
    assert_eq!(ext.answer, ["ext.service.consul. 5 IN SRV 1 1 443 api.example.com."]);
    assert_eq!(f.ask("ext.service.consul", rtype::A).answer, ["ext.service.consul. 5 IN CNAME api.example.com."]);
    let v6 = f.ask("v6.service.consul", rtype::SRV);
    assert_eq!(v6.answer, ["v6.service.consul. 5 IN SRV 1 1 80 20010db8000000000000000000000001.addr.dc1.consul."]);
    assert_eq!(v6.additional[0], "20010db8000000000000000000000001.addr.dc1.consul. 5 IN AAAA 2001:db8::1");
    let v6_a = f.ask("v6.service.consul", rtype::A);
    assert_eq!(
        (v6_a.rcode, v6_a.answer.len(), v6_a.authority.len()),
        (rcode::NOERROR, 0, 1),
        "S3.3 no v4 fallback: NODATA"
    );
}

#[test]
fn s4_1_critical_never_answered_and_s4_5_all_down_is_nxdomain() {
    let mut f = Fixture::new();
    for _ in 0..20 {
        let r = f.ask("web.service.consul", rtype::SRV);
        assert!(r.answer.iter().all(|l| !l.contains(" 8004 ")), "{:?}", r.answer);
    }
    let down = f.ask("down.service.consul", rtype::A);
    assert_eq!((down.rcode, down.aa), (rcode::NXDOMAIN, true));
    assert_eq!(down.authority, [soa_line(f.catalog.load().serial())]);
}

#[test]
fn s4_1_only_passing_drops_warnings() {
    let mut opts = options();
    opts.only_passing = true;
    let mut f = Fixture::with(catalog(), opts, settings());
    assert_eq!(f.ask("web.service.consul", rtype::A).answer.len(), 2);
    assert_eq!(f.ask("db.service.consul", rtype::A).rcode, rcode::NXDOMAIN);
}

#[test]
fn s2_6_tag_filters_and_rfc2782() {
    let mut f = Fixture::new();
    let v1 = f.ask("v1.web.service.consul", rtype::SRV);
    assert_eq!(v1.answer.len(), 2);
    assert!(v1.answer.iter().all(|l| l.contains(" 8001 ") || l.contains(" 8003 ")));
    assert_eq!(f.ask("PRIMARY.web.service.consul", rtype::A).answer, ["PRIMARY.web.service.consul. 5 IN A 10.0.0.1"]);
    assert_eq!(f.ask("nope.web.service.consul", rtype::A).rcode, rcode::NXDOMAIN);
    assert_eq!(f.ask("_web._tcp.service.consul", rtype::SRV).answer.len(), 3);
    assert_eq!(f.ask("_web._v2.service.consul", rtype::SRV).answer.len(), 1);
    assert_eq!(f.ask("_web._tcp.consul", rtype::SRV).answer.len(), 3, "S2.3 short form");
    let two_tagged = f.ask("v1.web.service.consul", rtype::A);
    assert_eq!(two_tagged.answer.len(), 2);
}

#[test]
fn s3_2_unknown_names_are_nxdomain_with_soa() {
    let mut f = Fixture::new();
    let serial = f.catalog.load().serial();
    for name in [
        "nope.service.consul",
        "web.service.dc9.consul",
        "foo.consul",
        "nobody.node.consul",
        "geo.query.consul",
        "zz.addr.consul",
    ] {
        let r = f.ask(name, rtype::A);
        assert_eq!((r.rcode, r.aa), (rcode::NXDOMAIN, true), "{name}");
        assert_eq!(r.authority, [soa_line(serial)], "{name}");
        assert!(r.answer.is_empty() && r.additional.is_empty(), "{name}");
    }
}

#[test]
fn s3_4_other_types_on_a_service_are_nodata() {
    let mut f = Fixture::new();
    for qtype in [rtype::TXT, 15, rtype::CNAME, rtype::SOA, rtype::NS] {
        let r = f.ask("web.service.consul", qtype);
        assert_eq!((r.rcode, r.answer.len(), r.authority.len()), (rcode::NOERROR, 0, 1), "type {qtype}");
    }
}

#[test]
fn s3_6_node_lookups() {
    let mut f = Fixture::new();
    let a = f.ask("node1.node.consul", rtype::A);
    assert_eq!(a.answer, ["node1.node.consul. 7 IN A 10.0.0.1"]);
    assert_eq!(a.additional, ["node1.node.consul. 7 IN TXT rack=r1"]);
    assert_eq!(f.ask("NODE1.node.dc1.consul", rtype::TXT).answer, ["NODE1.node.dc1.consul. 7 IN TXT rack=r1"]);
    assert_eq!(f.ask("node1.node.consul", rtype::ANY).answer.len(), 2);
    let aaaa = f.ask("node1.node.consul", rtype::AAAA);
    assert_eq!((aaaa.rcode, aaaa.answer.len(), aaaa.authority.len()), (rcode::NOERROR, 0, 1));
}

#[test]
fn s3_7_addr_lookups() {
    let mut f = Fixture::new();
    assert_eq!(f.ask("0a000001.addr.consul", rtype::ANY).answer, ["0a000001.addr.consul. 7 IN A 10.0.0.1"]);
    let v6 = "20010db8000000000000000000000001.addr.dc1.consul";
    assert_eq!(f.ask(v6, rtype::AAAA).answer, [format!("{v6}. 7 IN AAAA 2001:db8::1")]);
    let wrong = f.ask("0a000001.addr.consul", rtype::AAAA);
    assert_eq!(
        (wrong.rcode, wrong.answer.len(), wrong.additional.len(), wrong.authority.len()),
        (rcode::NOERROR, 0, 0, 1)
    );
}

#[test]
fn s5_apex_soa_ns_and_s2_4_apex_nodata() {
    let mut f = Fixture::new();
    let serial = f.catalog.load().serial();
    let soa = f.ask("consul", rtype::SOA);
    assert_eq!(soa.answer, [soa_line(serial)]);
    assert_eq!(soa.authority, ["consul. 7 IN NS server1.node.dc1.consul."]);
    assert_eq!(soa.additional, ["server1.node.dc1.consul. 7 IN A 10.0.0.100"]);
    let ns = f.ask("consul", rtype::NS);
    assert_eq!(ns.answer, ["consul. 7 IN NS server1.node.dc1.consul."]);
    let a = f.ask("consul", rtype::A);
    assert_eq!(
        (a.rcode, a.answer.len(), a.authority),
        (rcode::NOERROR, 0, vec![soa_line(serial)]),
        "S15: apex is NODATA"
    );
    assert_eq!(f.ask("consul", rtype::AXFR).rcode, rcode::NOTIMP, "S3.1");
}

#[test]
fn s6_4_soa_ttl_equals_minimum() {
    let mut s = settings();
    s.negative_ttl = 30;
    let mut f = Fixture::with(catalog(), options(), s);
    let r = f.ask("nope.service.consul", rtype::A);
    assert!(r.authority[0].starts_with("consul. 30 IN SOA") && r.authority[0].ends_with(" 30"), "{:?}", r.authority);
}

#[test]
fn s6_2_service_ttl_table() {
    let mut opts = options();
    opts.service_ttl.insert("we*", 42);
    let mut f = Fixture::with(catalog(), opts, settings());
    assert!(f.ask("web.service.consul", rtype::A).answer[0].contains(" 42 IN A "));
    assert!(f.ask("db.service.consul", rtype::A).answer[0].contains(" 5 IN A "));
}

#[test]
fn s7_2_s7_5_classic_udp_is_cut_to_the_answer_limit_with_tc() {
    let mut f = Fixture::new();
    let r = f.ask("big.service.consul", rtype::A);
    assert_eq!((r.answer.len(), r.tc), (3, true));
    let srv = f.ask("big.service.consul", rtype::SRV);
    assert_eq!((srv.answer.len(), srv.additional.len(), srv.tc), (3, 3, true));
}

#[test]
fn s7_3_byte_budget_keeps_whole_records_and_sets_tc() {
    let mut s = settings();
    s.udp_answer_limit = 0;
    let mut f = Fixture::with(catalog(), options(), s);
    let r = f.ask("big.service.consul", rtype::SRV);
    assert!(r.bytes.len() <= 512, "{}", r.bytes.len());
    assert!(r.tc);
    assert_eq!(r.answer.len(), r.additional.len(), "every SRV carries its glue");
    assert!(r.answer.len() >= 7, "{}", r.answer.len());
    let a = f.ask("big.service.consul", rtype::A);
    assert!(a.bytes.len() <= 512 && a.tc);
    assert_eq!(a.answer.len(), (512 - 12 - 23) / 16);
}

#[test]
fn s7_1_edns_size_is_honoured_and_capped() {
    let mut f = Fixture::new();
    let r = f.ask_edns("big.service.consul", rtype::SRV, 1000);
    assert!(r.bytes.len() <= 1000 && r.bytes.len() > 900, "{}", r.bytes.len());
    assert!(r.tc);
    assert_eq!(r.edns_size, Some(1232), "our OPT states our own limit");
    let big = f.ask_edns("big.service.consul", rtype::SRV, 65000);
    assert!(big.bytes.len() <= 1232 && big.bytes.len() > 1100, "{}", big.bytes.len());
    let tiny = f.ask_edns("big.service.consul", rtype::SRV, 100);
    assert!(tiny.bytes.len() <= 512, "sizes below 512 count as 512");
}

#[test]
fn s7_4_tcp_answers_are_complete() {
    let mut f = Fixture::new();
    let r = f.packet(&query("big.service.consul", rtype::SRV, None), Transport::Tcp);
    assert_eq!((r.answer.len(), r.additional.len(), r.tc), (200, 200, false));
}

#[test]
fn s7_6_a_record_limit_caps_without_tc() {
    let mut s = settings();
    s.a_record_limit = 2;
    let mut f = Fixture::with(catalog(), options(), s);
    let r = f.packet(&query("big.service.consul", rtype::A, None), Transport::Tcp);
    assert_eq!((r.answer.len(), r.tc), (2, false));
}

#[test]
fn s8_opt_only_when_asked_and_badvers() {
    let mut f = Fixture::new();
    assert_eq!(f.ask("web.service.consul", rtype::A).edns_size, None, "S8.2");
    assert_eq!(f.ask_edns("web.service.consul", rtype::A, 4096).edns_size, Some(1232), "S8.1");
    let bad = f.packet(&query("web.service.consul", rtype::A, Some((4096, 1, &[]))), Transport::Udp);
    assert_eq!((bad.rcode, bad.answer.len()), (rcode::BADVERS, 0), "RFC 6891 §6.1.3");
}

#[test]
fn s8_3_client_subnet_echoed_with_scope_zero() {
    let mut f = Fixture::new();
    let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2];
    let r = f.packet(&query("web.service.consul", rtype::A, Some((1232, 0, &ecs))), Transport::Udp);
    let tail = &r.bytes[r.bytes.len() - 11..];
    assert_eq!(tail, [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]);
}

#[test]
fn s10_1_answers_are_shuffled() {
    let mut f = Fixture::new();
    let orders: std::collections::HashSet<Vec<u8>> = (0..20)
        .map(|_| {
            let mut out = Vec::new();
            let snapshot = f.catalog.load();
            respond(
                &query("web.service.consul", rtype::SRV, None),
                &snapshot,
                &f.settings,
                Transport::Udp,
                Access::Recurse,
                &mut f.scratch,
                &mut out,
            );
            out
        })
        .collect();
    assert!(orders.len() >= 3, "{} distinct orders in 20", orders.len());
}

#[test]
fn s1_5_header_and_question_echo() {
    let mut f = Fixture::new();
    let packet = query("WeB.SeRvIcE.CoNsUl", rtype::SRV, None);
    let r = f.packet(&packet, Transport::Udp);
    assert_eq!(&r.bytes[..2], &packet[..2], "ID");
    assert_eq!(&r.bytes[12..packet.len()], &packet[12..], "question byte for byte");
    assert!(r.answer[0].starts_with("WeB.SeRvIcE.CoNsUl. 5 IN SRV 1 1 "), "{:?}", r.answer);
    assert!(
        r.answer.iter().any(|l| l.ends_with(".node.dc1.CoNsUl.")),
        "S2.12 response domain as asked: {:?}",
        r.answer
    );
    assert!(r.bytes[2] & 0x01 == 1, "RD copied");
    assert!(!r.ra);
}

#[test]
fn s1_4_outside_the_domain_is_refused() {
    let mut f = Fixture::new();
    let r = f.ask("example.com", rtype::A);
    assert_eq!((r.rcode, r.aa, r.ra), (rcode::REFUSED, false, false));
    let search = f.ask("web.service.consul.default.svc.cluster.local", rtype::SRV);
    assert_eq!(search.rcode, rcode::REFUSED, "K6: an immediate answer for search-suffixed names");
}

#[test]
fn s3_8_reverse_lookups() {
    let mut f = Fixture::new();
    let r = f.ask("1.0.0.10.in-addr.arpa", rtype::PTR);
    assert_eq!(r.answer, ["1.0.0.10.in-addr.arpa. 7 IN PTR node1.node.dc1.consul."]);
    let svc = f.ask("30.0.0.10.in-addr.arpa", rtype::PTR);
    assert_eq!(svc.answer, ["30.0.0.10.in-addr.arpa. 7 IN PTR web.service.dc1.consul."]);
    let unknown = f.ask("9.9.9.9.in-addr.arpa", rtype::PTR);
    assert_eq!(unknown.rcode, rcode::NXDOMAIN);
    assert!(unknown.authority[0].starts_with("consul. 5 IN SOA"), "{:?}", unknown.authority);
}

#[test]
fn s2_1_alt_domain_answers_under_its_own_name() {
    let mut s = settings();
    s.alt_domain = crate::dns::name::DomainName::new("example.org");
    let mut f = Fixture::with(catalog(), options(), s);
    let r = f.ask("web.service.example.org", rtype::SRV);
    assert!(r.answer.iter().any(|l| l.ends_with(".node.dc1.example.org.")), "{:?}", r.answer);
}

#[test]
fn not_synced_is_servfail_not_nxdomain() {
    let settings = settings();
    let snapshot = Snapshot::empty(Arc::new(options()), false);
    let mut out = Vec::new();
    let outcome = respond(
        &query("web.service.consul", rtype::A, None),
        &snapshot,
        &settings,
        Transport::Udp,
        Access::Recurse,
        &mut Scratch::with_seed(1),
        &mut out,
    );
    assert_eq!(outcome, Action::Reply(Outcome { rcode: rcode::SERVFAIL, truncated: false, qtype: rtype::A }));
}

#[test]
fn s1_3_malformed_queries_get_formerr_or_nothing() {
    let mut f = Fixture::new();
    let mut two = query("web.service.consul", rtype::A, None);
    two[5] = 2;
    let r = f.packet(&two, Transport::Udp);
    assert_eq!(r.rcode, rcode::FORMERR);
    let mut notify = query("web.service.consul", rtype::A, None);
    notify[2] |= 4 << 3;
    let mut out = Vec::new();
    let snapshot = f.catalog.load();
    respond(&notify, &snapshot, &f.settings, Transport::Udp, Access::Recurse, &mut f.scratch, &mut out);
    assert_eq!(out[3] & 0x0F, rcode::NOTIMP as u8);
    assert_eq!(&out[12..], &notify[12..], "question echoed");
    let mut response = query("web.service.consul", rtype::A, None);
    response[2] |= 0x80;
    let ignored = respond(&response, &snapshot, &f.settings, Transport::Udp, Access::Recurse, &mut f.scratch, &mut out);
    assert_eq!(ignored, Action::Ignore);
}

#[test]
fn never_panics_on_random_and_mutated_packets() {
    let mut f = Fixture::new();
    let mut rng = fastrand::Rng::with_seed(42);
    let seeds = [
        query("web.service.consul", rtype::SRV, Some((1232, 0, &[0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]))),
        query("_web._tcp.service.consul", rtype::SRV, None),
        query("1.0.0.10.in-addr.arpa", rtype::PTR, None),
    ];
    let snapshot = f.catalog.load();
    let mut out = Vec::new();
    for round in 0..20_000 {
        let mut packet = seeds[round % seeds.len()].clone();
        for _ in 0..rng.usize(1..6) {
            let at = rng.usize(..packet.len());
            packet[at] = rng.u8(..);
        }
        if round % 7 == 0 {
            packet.truncate(rng.usize(..packet.len()));
        }
        let action =
            respond(&packet, &snapshot, &f.settings, Transport::Udp, Access::Recurse, &mut f.scratch, &mut out);
        if action != Action::Ignore {
            assert!(out.len() >= 12);
            assert!(out.len() <= 1232 || out.len() <= packet.len() + 1232);
        }
    }
}

#[test]
fn s7_4_tcp_srv_glue_past_16_kib_spells_out_its_owner() {
    let mut data = catalog();
    for i in 0..1000 {
        let name = format!("huge{i}");
        data.nodes.push(node(&name, &format!("10.2.{}.{}", i / 250, i % 250 + 1), &[("rack", "r")]));
        data.instances.push(instance("huge", &format!("huge-{i}"), &name, None, 9000, &[], Health::Passing));
    }
    let mut f = Fixture::with(data, options(), settings());
    let r = f.packet(&query("huge.service.consul", rtype::SRV, None), Transport::Tcp);
    assert!(r.bytes.len() > 0x4000, "the answer reaches past what a pointer can address");
    let targets: std::collections::HashSet<String> =
        r.answer.iter().map(|l| l.rsplit(' ').next().unwrap().to_owned()).collect();
    let glue_a: Vec<&String> = r.additional.iter().filter(|l| l.contains(" IN A ")).collect();
    assert_eq!(glue_a.len(), r.answer.len(), "every SRV in the reply has its address");
    for line in glue_a {
        let owner = line.split(' ').next().unwrap();
        assert!(targets.contains(owner), "glue owner {owner} is one of the targets");
    }
}

fn with_recursors() -> Settings {
    let mut s = settings();
    s.recursion.upstreams = vec!["127.0.0.1:53".parse().unwrap()];
    s
}

/// Runs `respond` for `client`; the action and the decoded `out`.
fn respond_as(f: &mut Fixture, client: Access, name: &str, qtype: u16) -> (Action, Response) {
    let mut out = Vec::new();
    let snapshot = f.catalog.load();
    let action =
        respond(&query(name, qtype, None), &snapshot, &f.settings, Transport::Udp, client, &mut f.scratch, &mut out);
    (action, decode(out))
}

#[test]
fn s1_4_s9_outside_names_are_forwarded_for_recursing_clients_with_servfail_ready() {
    let mut f = Fixture::with(catalog(), options(), with_recursors());
    for name in ["kong-database", "user.service.consul.default.svc.cluster.local", "example.com"] {
        let (action, prepared) = respond_as(&mut f, Access::Recurse, name, rtype::A);
        assert!(matches!(action, Action::Forward(_)), "{name}");
        assert_eq!(
            (prepared.rcode, prepared.ra, prepared.aa),
            (rcode::SERVFAIL, true, false),
            "fallback for a full queue"
        );
    }
    let (action, web) = respond_as(&mut f, Access::Recurse, "web.service.consul", rtype::A);
    assert!(matches!(action, Action::Reply(_)));
    assert!(web.ra && web.aa, "RA for a client that may recurse when recursors exist (S1.5)");
}

#[test]
fn s15_clients_not_allowed_to_recurse_get_refused_outside_and_no_ra() {
    let mut f = Fixture::with(catalog(), options(), with_recursors());
    let (action, outside) = respond_as(&mut f, Access::Query, "kong-database", rtype::A);
    assert_eq!(action, Action::Reply(Outcome { rcode: rcode::REFUSED, truncated: false, qtype: rtype::A }));
    assert_eq!((outside.rcode, outside.ra, outside.aa), (rcode::REFUSED, false, false));
    let (_, inside) = respond_as(&mut f, Access::Query, "web.service.consul", rtype::A);
    assert_eq!((inside.rcode, inside.ra, inside.answer.len()), (rcode::NOERROR, false, 3), "the domain is for all");
}

#[test]
fn s15_clients_outside_allow_query_are_refused_everything() {
    let mut f = Fixture::with(catalog(), options(), with_recursors());
    for (name, qtype) in [("web.service.consul", rtype::SRV), ("kong-database", rtype::A), ("consul", rtype::SOA)] {
        let (action, r) = respond_as(&mut f, Access::Refused, name, qtype);
        assert_eq!(action, Action::Reply(Outcome { rcode: rcode::REFUSED, truncated: false, qtype }), "{name}");
        assert_eq!((r.rcode, r.ra, r.aa, r.answer.len()), (rcode::REFUSED, false, false, 0), "{name}");
    }
    let packet = query("WeB.service.consul", rtype::A, None);
    let mut out = Vec::new();
    let snapshot = f.catalog.load();
    respond(&packet, &snapshot, &f.settings, Transport::Udp, Access::Refused, &mut f.scratch, &mut out);
    assert_eq!(&out[12..], &packet[12..], "still a well-formed reply with the question (K1)");
}

#[test]
fn s3_8_unknown_reverse_names_are_forwarded_known_ones_answered() {
    let mut f = Fixture::with(catalog(), options(), with_recursors());
    let (unknown, _) = respond_as(&mut f, Access::Recurse, "9.9.9.9.in-addr.arpa", rtype::PTR);
    assert!(matches!(unknown, Action::Forward(_)));
    let (partial, _) = respond_as(&mut f, Access::Recurse, "10.in-addr.arpa", rtype::NS);
    assert!(matches!(partial, Action::Forward(_)), "not a whole address: not ours either");
    let (known, r) = respond_as(&mut f, Access::Recurse, "1.0.0.10.in-addr.arpa", rtype::PTR);
    assert!(matches!(known, Action::Reply(_)));
    assert_eq!(r.answer, ["1.0.0.10.in-addr.arpa. 7 IN PTR node1.node.dc1.consul."]);
    let (not_allowed, r) = respond_as(&mut f, Access::Query, "9.9.9.9.in-addr.arpa", rtype::PTR);
    assert!(matches!(not_allowed, Action::Reply(_)));
    assert_eq!(r.rcode, rcode::NXDOMAIN, "without recursion: NXDOMAIN with our SOA, as before");
}

#[test]
fn s1_4_without_recursors_nobody_recurses() {
    let mut f = Fixture::new();
    let (action, r) = respond_as(&mut f, Access::Recurse, "kong-database", rtype::A);
    assert!(matches!(action, Action::Reply(_)));
    assert_eq!((r.rcode, r.ra), (rcode::REFUSED, false));
}

#[test]
fn forwarded_query_with_opt_gets_servfail_with_opt_ready() {
    let mut f = Fixture::with(catalog(), options(), with_recursors());
    let mut out = Vec::new();
    let snapshot = f.catalog.load();
    let packet = query("kong-database", rtype::A, Some((1232, 0, &[])));
    let action = respond(&packet, &snapshot, &f.settings, Transport::Udp, Access::Recurse, &mut f.scratch, &mut out);
    assert!(matches!(action, Action::Forward(_)));
    assert_eq!(decode(out).edns_size, Some(1232));
}

#[test]
fn s3_4_s3_5_duplicates_collapse_but_tag_filters_still_see_the_second_twin() {
    use Health::Passing;
    let mut data = catalog();
    data.instances.push(instance("twin", "twin-1", "node1", None, 7000, &["a"], Passing));
    data.instances.push(instance("twin", "twin-2", "node1", None, 7000, &["b"], Passing));
    data.instances.push(instance("twin", "twin-3", "node2", None, 7001, &["b"], Passing));
    let mut f = Fixture::with(data, options(), settings());
    assert_eq!(f.ask_edns("twin.service.consul", rtype::A, 1232).answer.len(), 2, "one A per address");
    assert_eq!(f.ask_edns("twin.service.consul", rtype::SRV, 1232).answer.len(), 2, "one SRV per target+port");
    let b = f.ask_edns("b.twin.service.consul", rtype::SRV, 1232);
    assert_eq!(b.answer.len(), 2, "twin-2 is answered although its twin twin-1 lacks tag b: {:?}", b.answer);
    assert_eq!(f.ask_edns("a.twin.service.consul", rtype::A, 1232).answer, ["a.twin.service.consul. 5 IN A 10.0.0.1"]);
}

/// Finding: two instances on one node repeated the node's A and TXT records in the additional
/// section (RFC 2181 §5.5: no duplicate records in an RRset), over TCP for every instance.
#[test]
fn s3_5_srv_glue_holds_each_distinct_record_once() {
    let mut data = catalog();
    data.nodes.push(node("node-a", "10.0.5.1", &[("rack", "r9"), ("zone", "z1")]));
    for i in 0..40u16 {
        data.instances.push(instance("dup", &format!("dup-{i}"), "node-a", None, 7000 + i, &[], Health::Passing));
    }
    data.instances.push(instance("dup", "dup-own", "node2", Some("10.0.5.9"), 7100, &[], Health::Passing));
    data.instances.push(instance("dup", "dup-own2", "node1", Some("10.0.5.9"), 7101, &[], Health::Passing));
    let mut f = Fixture::with(data, options(), settings());
    for (transport, answers) in [(Transport::Udp, 3), (Transport::Tcp, 42)] {
        let r = f.packet(&query("dup.service.consul", rtype::SRV, None), transport);
        assert_eq!(r.answer.len(), answers, "{transport:?}");
        let mut distinct = r.additional.clone();
        distinct.dedup();
        assert_eq!(distinct, r.additional, "{transport:?}: duplicate additional records");
    }
    let tcp = f.packet(&query("dup.service.consul", rtype::SRV, None), Transport::Tcp);
    assert_eq!(
        tcp.additional,
        [
            "0a000509.addr.dc1.consul. 5 IN A 10.0.5.9",
            "node-a.node.dc1.consul. 5 IN A 10.0.5.1",
            "node-a.node.dc1.consul. 5 IN TXT rack=r9",
            "node-a.node.dc1.consul. 5 IN TXT zone=z1",
            "node1.node.dc1.consul. 5 IN TXT rack=r1",
        ]
    );
}

/// A query in `qclass` (the `query` helper asks class IN), RD as given.
fn query_in(name: &str, qtype: u16, qclass: u16, rd: bool) -> Vec<u8> {
    let mut packet = query(name, qtype, None);
    let at = packet.len() - 2;
    packet[at..].copy_from_slice(&qclass.to_be_bytes());
    if !rd {
        packet[2] &= !0x01;
    }
    packet
}

fn act(f: &mut Fixture, packet: &[u8]) -> (Action, Response) {
    let mut out = Vec::new();
    let snapshot = f.catalog.load();
    let action = respond(packet, &snapshot, &f.settings, Transport::Udp, f.client, &mut f.scratch, &mut out);
    (action, decode(out))
}

#[test]
fn s8_4_chaos_questions_are_refused_or_answered_locally_never_forwarded() {
    let mut f = Fixture::with(catalog(), options(), with_recursors());
    for name in ["version.bind", "id.server", "hostname.bind", "version.server", "kong-database"] {
        let (action, r) = act(&mut f, &query_in(name, rtype::TXT, crate::wire::CLASS_CH, true));
        assert!(matches!(action, Action::Reply(_)), "{name}: not relayed");
        assert_eq!((r.rcode, r.answer.len()), (rcode::REFUSED, 0), "{name}: REFUSED by default");
    }
    f.settings.chaos_version = Some("consul-dns 0.1".into());
    let (_, r) = act(&mut f, &query_in("VERSION.bind", rtype::TXT, crate::wire::CLASS_CH, true));
    assert_eq!((r.rcode, r.aa), (rcode::NOERROR, true));
    assert_eq!(r.answer, ["VERSION.bind. 0 CH TXT consul-dns 0.1"]);
    let (_, r) = act(&mut f, &query_in("id.server", rtype::TXT, crate::wire::CLASS_CH, true));
    assert_eq!(r.rcode, rcode::REFUSED, "the identity is never told");
    let (action, _) = act(&mut f, &query_in("kong-database", rtype::A, 4, true));
    assert!(matches!(action, Action::Reply(_)), "class HS outside the domain is not relayed either");
}

#[test]
fn s8_5_zone_transfers_agree_and_are_never_forwarded() {
    let mut f = Fixture::with(catalog(), options(), with_recursors());
    for qtype in [rtype::AXFR, rtype::IXFR] {
        let (action, r) = act(&mut f, &query("consul", qtype, None));
        assert_eq!((r.rcode, r.answer.len()), (rcode::NOTIMP, 0), "{qtype} in the domain");
        assert!(matches!(action, Action::Reply(_)));
        for outside in ["example.com", "9.9.9.9.in-addr.arpa"] {
            let (action, r) = act(&mut f, &query(outside, qtype, None));
            assert!(matches!(action, Action::Reply(_)), "{qtype} {outside}: not relayed");
            assert_eq!(r.rcode, rcode::REFUSED, "{qtype} {outside}");
        }
    }
}

#[test]
fn s1_4_without_rd_outside_names_are_refused_not_forwarded() {
    let mut f = Fixture::with(catalog(), options(), with_recursors());
    let (action, r) = act(&mut f, &query_in("kong-database", rtype::A, CLASS_IN, false));
    assert!(matches!(action, Action::Reply(_)), "RD=0: not relayed");
    assert_eq!((r.rcode, r.ra), (rcode::REFUSED, true), "RA still says recursion is available");
    let (action, _) = act(&mut f, &query_in("kong-database", rtype::A, CLASS_IN, true));
    assert!(matches!(action, Action::Forward(_)), "RD=1: relayed");
    let (_, r) = act(&mut f, &query_in("web.service.consul", rtype::A, CLASS_IN, false));
    assert_eq!((r.rcode, r.answer.len()), (rcode::NOERROR, 3), "the domain needs no RD");
}

#[test]
fn s8_1_do_bit_is_copied_into_the_opt() {
    let mut f = Fixture::new();
    for dnssec_ok in [false, true] {
        let mut packet = query("web.service.consul", rtype::A, Some((1232, 0, &[])));
        let do_at = packet.len() - 11 + 7; // OPT: root, type, size, ext-rcode, version, then DO
        packet[do_at] = if dnssec_ok { 0x80 } else { 0 };
        let (_, r) = act(&mut f, &packet);
        let msg = Message::from_vec(&r.bytes).unwrap();
        assert_eq!(msg.edns.unwrap().flags().dnssec_ok, dnssec_ok);
    }
}
