//! What Kong's DNS clients need (docs/behaviour.md, K1–K16): one test per item
//! (`kong_k<n>_…`), and Kong's lookup sequences played query by query, old client
//! (`dns_order = SRV,LAST,A,CNAME`) and new client (`_svc._tcp` SRV, then A per target).

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use crate::support::client::{Reply, packet, query_udp_raw};
use crate::support::upstream::{KONG_DATABASE_IP, Mode, Upstream};
use crate::support::{Daemon, big_catalog, query_tcp, query_udp};

/// Instances of `user`: even ones use their node's address (SRV target `<node>.node.dc1`), odd
/// ones have their own address (target `<hex>.addr.dc1`); one more is critical.
const USERS: usize = 40;

/// The catalog, and the (address, port) pairs Kong must end up with.
fn kong_catalog() -> (String, BTreeSet<(IpAddr, u16)>) {
    let mut text = String::from("datacenter = \"dc1\"\n");
    let mut expected = BTreeSet::new();
    for i in 0..USERS {
        let node_ip = format!("127.3.0.{}", i + 1);
        text.push_str(&format!("[[nodes]]\nname = \"k{i}\"\naddress = \"{node_ip}\"\n"));
        let port = 9000 + i as u16;
        let tags = if i % 4 == 0 { "[\"v1\"]" } else { "[]" };
        text.push_str(&format!(
            "[[services]]\nname = \"user\"\nid = \"user-{i}\"\nnode = \"k{i}\"\nport = {port}\ntags = {tags}\n"
        ));
        if i % 2 == 1 {
            let own = format!("127.4.0.{}", i + 1);
            text.push_str(&format!("address = \"{own}\"\n"));
            expected.insert((own.parse().unwrap(), port));
        } else {
            expected.insert((node_ip.parse().unwrap(), port));
        }
    }
    text.push_str(
        "[[services]]\nname = \"user\"\nid = \"user-down\"\nnode = \"k0\"\nport = 9999\nhealth = \"critical\"\n",
    );
    (text, expected)
}

/// One lookup as Kong's resolver (lua-resty-dns) makes it: UDP without EDNS, RD set; on TC
/// the same query again over TCP.
fn kong_query(d: &Daemon, name: &str, qtype: RecordType) -> Reply {
    let udp = query_udp(d.addr, name, qtype, None);
    assert!(udp.size <= 512, "{name} {qtype}: {} bytes over UDP to a client without EDNS", udp.size);
    assert!(udp.message.edns.is_none(), "K7: no OPT added");
    if udp.truncated() { query_tcp(d.addr, name, qtype) } else { udp }
}

/// (owner, priority, weight, port, target) of every SRV in the answer.
fn srv_records(reply: &Reply) -> Vec<(String, u16, u16, u16, String)> {
    reply
        .message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((r.name.to_string(), srv.priority, srv.weight, srv.port, srv.target.to_string())),
            _ => None,
        })
        .collect()
}

/// The A records owned by `name` in the answer (Kong keeps only those, K3).
fn a_records(reply: &Reply, name: &str) -> Vec<IpAddr> {
    reply
        .message
        .answers
        .iter()
        .filter(|r| r.name.to_string().eq_ignore_ascii_case(name))
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

fn is_nodata(reply: &Reply) -> bool {
    reply.rcode() == 0 && reply.message.answers.is_empty() && reply.authorities().len() == 1
}

/// Kong's old client resolving one SRV target with `SRV,LAST,A,CNAME` (K4): SRV first (must
/// be NODATA, not an error or silence), then A.
fn old_client_target(d: &Daemon, target: &str) -> IpAddr {
    let srv = kong_query(d, target, RecordType::SRV);
    assert!(is_nodata(&srv), "K4: SRV on target {target} is NODATA: {:?}", srv.message);
    let a = kong_query(d, target, RecordType::A);
    let ips = a_records(&a, target);
    assert_eq!(ips.len(), 1, "{target}: {:?}", a.answers());
    ips[0]
}

fn dir_with(catalog: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.toml"), catalog).unwrap();
    dir
}

#[test]
fn kong_old_client_sequence_srv_last_a_cname_reaches_every_instance() {
    let (catalog, expected) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    let name = "user.service.consul";
    let udp = query_udp(d.addr, name, RecordType::SRV, None);
    assert!(udp.truncated(), "{USERS} instances do not fit 512 bytes: TC");
    let srv = kong_query(&d, name, RecordType::SRV);
    assert!(!srv.truncated(), "complete over TCP");
    let records = srv_records(&srv);
    assert_eq!(records.len(), USERS);
    let mut got = BTreeSet::new();
    for (owner, priority, weight, port, target) in records {
        assert_eq!((owner.as_str(), priority), ("user.service.consul.", 1));
        assert!(weight >= 1);
        got.insert((old_client_target(&d, &target), port));
    }
    assert_eq!(got, expected, "Kong balances over exactly the catalog's instances");
}

#[test]
fn kong_new_client_sequence_rfc2782_srv_then_a_per_target() {
    let (catalog, expected) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    let srv = kong_query(&d, "_user._tcp.service.consul", RecordType::SRV);
    let mut got = BTreeSet::new();
    for (owner, _, weight, port, target) in srv_records(&srv) {
        assert_eq!(owner, "_user._tcp.service.consul.");
        assert!(weight >= 1);
        let a = kong_query(&d, &target, RecordType::A); // never the additional section (K3)
        let ips = a_records(&a, &target);
        assert_eq!(ips.len(), 1, "{target}");
        got.insert((ips[0], port));
    }
    assert_eq!(got, expected);
}

#[test]
fn kong_old_client_resolves_kong_database_through_the_forwarder() {
    let up = Upstream::start(Mode::Answer);
    let (catalog, _) = kong_catalog();
    let d = Daemon::start(&catalog, &["--recursor", &up.arg()]);
    let srv = kong_query(&d, "kong-database", RecordType::SRV);
    assert!(is_nodata(&srv), "SRV first (dns_order): a prompt NODATA, so Kong moves on: {:?}", srv.message);
    let a = kong_query(&d, "kong-database", RecordType::A);
    assert_eq!(a_records(&a, "kong-database."), [IpAddr::V4(KONG_DATABASE_IP)]);
    assert!(a.recursion_available());
    assert_eq!(up.queries(), 2);
}

#[test]
fn kong_k1_every_query_gets_a_prompt_well_formed_reply() {
    let up = Upstream::start(Mode::Answer);
    let (catalog, _) = kong_catalog();
    let with_recursion = Daemon::start(&catalog, &["--recursor", &up.arg()]);
    let without = Daemon::start(&catalog, &[]);
    let mut queries: Vec<(String, u16, DNSClass, Option<u16>)> = Vec::new();
    for name in [
        "user.service.consul",
        "_user._tcp.service.consul",
        "k0.node.dc1.consul",
        "7f040002.addr.dc1.consul",
        "nope.service.consul",
        "consul",
        "kong-database",
        "user.service.consul.default.svc.cluster.local",
        "k0.node.dc1.consul.svc.cluster.local",
        "example.com",
        "1.0.3.127.in-addr.arpa",
    ] {
        for qtype in [1u16, 28, 33, 5, 16, 255, 257, 65280] {
            queries.push((name.to_owned(), qtype, DNSClass::IN, None));
        }
        queries.push((name.to_owned(), 1, DNSClass::IN, Some(1232)));
    }
    queries.push(("version.bind".into(), 16, DNSClass::CH, None));
    for d in [&with_recursion, &without] {
        for (name, qtype, class, edns) in &queries {
            let mut msg = Message::query();
            msg.metadata.id = fastrand::u16(..);
            msg.metadata.recursion_desired = true;
            let mut q = Query::query(Name::from_ascii(name).unwrap(), RecordType::from(*qtype));
            q.set_query_class(*class);
            msg.add_query(q);
            let mut bytes = msg.to_vec().unwrap();
            if let Some(size) = edns {
                bytes = packet(name, RecordType::from(*qtype), Some(*size));
                bytes[..2].copy_from_slice(&msg.metadata.id.to_be_bytes());
            }
            let started = Instant::now();
            let raw = query_udp_raw(d.addr, &bytes).unwrap_or_else(|| panic!("no reply to {name} {qtype}"));
            // Kong's resolver gives up after 2 s and then aborts the whole lookup (K1).
            assert!(started.elapsed() < Duration::from_secs(2), "{name} {qtype}: {:?}", started.elapsed());
            let reply = Message::from_vec(&raw).unwrap_or_else(|e| panic!("{name} {qtype}: undecodable: {e}"));
            assert_eq!(reply.metadata.id, msg.metadata.id, "{name} {qtype}: ID");
            assert_eq!(reply.metadata.message_type, hickory_proto::op::MessageType::Response);
            assert_eq!(reply.queries.len(), 1, "{name} {qtype}: exactly one question");
            assert_eq!(reply.queries[0].query_class(), *class, "{name} {qtype}");
            assert!(reply.queries[0].name().to_string().eq_ignore_ascii_case(&format!("{name}.")), "{name}");
            assert_eq!(reply.edns.is_some(), edns.is_some(), "{name} {qtype}: OPT only when asked");
        }
    }
    let mut newer_edns = packet("user.service.consul", RecordType::SRV, Some(1232));
    let version_at = newer_edns.len() - 6;
    newer_edns[version_at] = 1;
    let badvers = Message::from_vec(&query_udp_raw(without.addr, &newer_edns).unwrap()).unwrap();
    assert_eq!((badvers.queries.len(), badvers.metadata.id), (1, u16::from_be_bytes([newer_edns[0], newer_edns[1]])));
}

#[test]
fn kong_k2_service_srv_one_record_per_healthy_instance_owner_as_asked() {
    let (catalog, expected) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    let srv = kong_query(&d, "UsEr.service.CONSUL", RecordType::SRV);
    let records = srv_records(&srv);
    assert_eq!(records.len(), USERS, "one per healthy instance; the critical one is left out");
    let ports: BTreeSet<u16> = records.iter().map(|r| r.3).collect();
    assert_eq!(ports, expected.iter().map(|(_, port)| *port).collect(), "real ports");
    for (owner, priority, weight, _, _) in &records {
        assert_eq!((owner.as_str(), *priority), ("UsEr.service.CONSUL.", 1), "owner as asked, one priority");
        assert!(*weight >= 1);
    }
}

#[test]
fn kong_k3_srv_targets_resolve_by_a_direct_a_query_to_the_service_address() {
    let (catalog, expected) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    let srv = kong_query(&d, "user.service.consul", RecordType::SRV);
    for (_, _, _, port, target) in srv_records(&srv) {
        assert_ne!(target, "user.service.consul.", "never the query name");
        let i = usize::from(port - 9000);
        let kind = if i % 2 == 0 { ".node.dc1.consul." } else { ".addr.dc1.consul." };
        assert!(target.ends_with(kind), "instance {i}: {target}");
        let a = query_udp(d.addr, &target, RecordType::A, None);
        let ip = a_records(&a, &target)[0];
        assert!(expected.contains(&(ip, port)), "{target} → {ip}:{port} is the service's address");
    }
}

#[test]
fn kong_k4_other_types_for_existing_names_are_nodata() {
    let up = Upstream::start(Mode::Answer);
    let (catalog, _) = kong_catalog();
    let d = Daemon::start(&catalog, &["--recursor", &up.arg()]);
    for (name, qtype) in [
        ("k0.node.dc1.consul", RecordType::SRV),
        ("k0.node.dc1.consul", RecordType::AAAA),
        ("7f040002.addr.dc1.consul", RecordType::SRV),
        ("7f040002.addr.dc1.consul", RecordType::AAAA),
        ("user.service.consul", RecordType::AAAA),
        ("user.service.consul", RecordType::TXT),
    ] {
        let reply = query_udp(d.addr, name, qtype, None);
        assert!(is_nodata(&reply), "{name} {qtype}: {:?}", reply.message);
    }
    let hosts_file_name = query_udp(d.addr, "kong-database", RecordType::SRV, None);
    assert!(is_nodata(&hosts_file_name), "a hosts-file name's SRV gets an answer too");
    let off = Daemon::start(&catalog, &[]);
    let refused = query_udp(off.addr, "kong-database", RecordType::SRV, None);
    assert_eq!(refused.rcode(), 5, "without recursion: REFUSED at once, Kong goes on to LAST/A");
}

#[test]
fn kong_k5_unknown_names_nxdomain_known_names_noerror() {
    let (catalog, _) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    for name in ["nope.service.consul", "v9.user.service.consul", "nobody.node.consul", "zz.addr.consul"] {
        for qtype in [RecordType::SRV, RecordType::A] {
            assert_eq!(query_udp(d.addr, name, qtype, None).rcode(), 3, "{name} {qtype}");
        }
    }
    for name in ["user.service.consul", "v1.user.service.consul", "k1.node.consul"] {
        let reply = query_udp(d.addr, name, RecordType::A, None);
        assert_eq!((reply.rcode(), reply.answers().is_empty()), (0, false), "{name}");
    }
}

#[test]
fn kong_k6_names_outside_consul_are_forwarded_or_refused_at_once() {
    let up = Upstream::start(Mode::Answer);
    let (catalog, _) = kong_catalog();
    let d = Daemon::start(&catalog, &["--recursor", &up.arg()]);
    let db = query_udp(d.addr, "kong-database", RecordType::A, None);
    assert_eq!(a_records(&db, "kong-database."), [IpAddr::V4(KONG_DATABASE_IP)], "KONG_PG_HOST keeps working");
    for suffixed in ["user.service.consul.default.svc.cluster.local", "k0.node.dc1.consul.svc.cluster.local"] {
        let started = Instant::now();
        let reply = query_udp(d.addr, suffixed, RecordType::SRV, None);
        assert_eq!(reply.rcode(), 3, "{suffixed}: the upstream's NXDOMAIN, so Kong tries the next name");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let off = Daemon::start(&catalog, &[]);
    let refused = query_udp(off.addr, "user.service.consul.default.svc.cluster.local", RecordType::SRV, None);
    assert_eq!((refused.rcode(), refused.message.queries.len()), (5, 1), "REFUSED with the question");
}

#[test]
fn kong_k7_udp_at_most_512_with_tc_then_everything_over_tcp_no_opt_added() {
    let (catalog, _) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    for qtype in [RecordType::SRV, RecordType::A] {
        let udp = query_udp(d.addr, "user.service.consul", qtype, None);
        assert!(udp.size <= 512 && udp.truncated() && udp.message.edns.is_none(), "{qtype}: {} bytes", udp.size);
        let tcp = query_tcp(d.addr, "user.service.consul", qtype);
        assert_eq!((tcp.answers().len(), tcp.truncated()), (USERS, false), "{qtype}");
        assert!(tcp.message.edns.is_none());
    }
}

#[test]
fn kong_k8_a_query_for_a_service_returns_the_instance_addresses() {
    let (catalog, expected) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    let a = kong_query(&d, "user.service.consul", RecordType::A);
    let got: BTreeSet<IpAddr> = a_records(&a, "user.service.consul.").into_iter().collect();
    assert_eq!(got, expected.iter().map(|(ip, _)| *ip).collect());
}

#[test]
fn kong_k9_rfc2782_srv_names() {
    let (catalog, expected) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    let all = srv_records(&kong_query(&d, "_user._tcp.service.consul", RecordType::SRV));
    assert_eq!(all.len(), expected.len());
    let tagged = srv_records(&kong_query(&d, "_user._v1.service.dc1.consul", RecordType::SRV));
    assert_eq!(tagged.len(), USERS.div_ceil(4), "_<svc>._<tag> filters on the tag");
    assert!(tagged.iter().all(|r| (r.3 - 9000) % 4 == 0));
}

#[test]
fn kong_k10_srv_and_a_answers_are_shuffled() {
    let d = Daemon::start(&big_catalog("small", 4), &[]);
    for qtype in [RecordType::SRV, RecordType::A] {
        let firsts: HashSet<String> =
            (0..30).map(|_| query_udp(d.addr, "small.service.consul", qtype, None).answers()[0].clone()).collect();
        assert!(firsts.len() >= 3, "{qtype}: {} different first records in 30 replies", firsts.len());
    }
}

#[test]
fn kong_k11_default_ttl_is_non_zero_and_configurable() {
    let (catalog, _) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    let srv = kong_query(&d, "user.service.consul", RecordType::SRV);
    assert!(srv.answer_ttls().iter().all(|&t| t == 5), "{:?}", srv.answer_ttls());
    let target = srv_records(&srv)[0].4.clone();
    assert_eq!(query_udp(d.addr, &target, RecordType::A, None).answer_ttls(), [5]);
    let strict = Daemon::start(&catalog, &["--service-ttl", "0", "--node-ttl", "0"]);
    let srv = query_tcp(strict.addr, "user.service.consul", RecordType::SRV);
    assert!(srv.answer_ttls().iter().all(|&t| t == 0), "0 stays available for strict Consul behaviour");
}

#[test]
fn kong_k12_additional_section_carries_every_target_address_with_the_srv_ttl() {
    let (catalog, _) = kong_catalog();
    let d = Daemon::start(&catalog, &["--service-ttl", "17s"]);
    let srv = query_tcp(d.addr, "user.service.consul", RecordType::SRV);
    let glue: Vec<(String, u32)> = srv
        .message
        .additionals
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .map(|r| (r.name.to_string(), r.ttl))
        .collect();
    for (_, _, _, _, target) in srv_records(&srv) {
        assert!(glue.contains(&(target.clone(), 17)), "{target} has its A in additional, TTL 17: {glue:?}");
    }
}

#[test]
fn kong_k13_known_service_never_turns_into_nxdomain_when_the_catalog_breaks() {
    let (catalog, _) = kong_catalog();
    let d = Daemon::start_in(dir_with(&catalog), &[]);
    let answered = |d: &Daemon| {
        let reply = query_tcp(d.addr, "user.service.consul", RecordType::SRV);
        assert_eq!(reply.rcode(), 0, "never NXDOMAIN (Kong would drop the service for 30 s)");
        reply.answers().len()
    };
    assert_eq!(answered(&d), USERS);
    d.write_catalog("[[nodes]]\nname = \"k0\"\naddres = \"127.3.0.1\"\n"); // a broken edit
    assert!(d.wait_for_log("Catalog source failed", Duration::from_secs(3)), "{}", d.log());
    for _ in 0..20 {
        assert_eq!(answered(&d), USERS, "last good data keeps serving");
    }
    std::fs::remove_file(d.catalog_path()).unwrap(); // the source disappears altogether
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(answered(&d), USERS);
    }
}

#[test]
fn kong_k14_bursts_of_identical_queries_and_thousands_of_instances_over_tcp() {
    let up = Upstream::start(Mode::Answer);
    let d = Daemon::start(&big_catalog("big", 1500), &["--recursor", &up.arg()]);
    let addr = d.addr;
    let first = query_udp(addr, "big.service.consul.svc.cluster.local", RecordType::SRV, None);
    assert_eq!((first.rcode(), up.queries()), (3, 1), "forwarded once, NXDOMAIN cached per its SOA");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let reply = query_udp(addr, "big.service.consul", RecordType::SRV, None);
                    assert!(reply.rcode() == 0 && reply.truncated());
                    let suffixed = query_udp(addr, "big.service.consul.svc.cluster.local", RecordType::SRV, None);
                    assert_eq!(suffixed.rcode(), 3);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("every query of the burst answered");
    }
    assert_eq!(up.queries(), 1, "400 more identical forwarded questions cost no upstream query (cache)");

    let tcp = query_tcp(d.addr, "big.service.consul", RecordType::SRV);
    let srv = srv_records(&tcp);
    assert!(srv.len() >= 1000, "{} SRV records in one TCP answer", srv.len());
    assert_eq!(tcp.truncated(), srv.len() < 1500, "TC exactly when some were left out");
    let glue: HashSet<String> = tcp.message.additionals.iter().map(|r| r.name.to_string()).collect();
    assert!(srv.iter().all(|r| glue.contains(&r.4)), "every SRV in the answer has its glue");
}

#[test]
fn kong_k15_case_insensitive_everywhere_owner_echoes_the_question() {
    let (catalog, _) = kong_catalog();
    let d = Daemon::start(&catalog, &[]);
    let srv = kong_query(&d, "USER.Service.Consul", RecordType::SRV);
    assert!(srv_records(&srv).iter().all(|r| r.0 == "USER.Service.Consul."));
    let target = srv_records(&srv)[0].4.to_ascii_uppercase();
    assert_eq!(a_records(&query_udp(d.addr, &target, RecordType::A, None), &target).len(), 1, "{target}");
    assert_eq!(srv_records(&kong_query(&d, "_USER._TCP.service.consul", RecordType::SRV)).len(), USERS);
    let lower = query_udp(d.addr, "k1.NODE.dc1.consul", RecordType::A, None);
    assert_eq!(lower.message.answers[0].name.to_string(), "k1.NODE.dc1.consul.");
}

#[test]
fn kong_k16_readme_tells_kong_users_how_to_set_up_both_clients() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme.find("## Use with Kong").expect("a \"Use with Kong\" section");
    let section = &readme[start..readme[start + 3..].find("\n## ").map_or(readme.len(), |end| start + 3 + end)];
    for needle in [
        "KONG_DNS_RESOLVER=",
        "KONG_DNS_ORDER=LAST,SRV,A,CNAME",
        "SRV,LAST,A,CNAME",
        "KONG_NEW_DNS_CLIENT=on",
        "KONG_RESOLVER_ADDRESS=",
        "_user._tcp.service.consul",
        "trailing dot",
        "user.service.consul.",
        "KONG_DNS_VALID_TTL",
        "(#ttls-why-5-seconds-and-not-consuls-0)",
        "kong-database",
        "--allow-recursion",
    ] {
        assert!(section.contains(needle), "the Kong section mentions {needle:?}");
    }
    assert!(readme.contains("### TTLs: why 5 seconds and not Consul's 0"), "the linked TTL section exists");
}
