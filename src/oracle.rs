//! The randomized oracle: a catalog reached by a stream of changes answers exactly as the same
//! catalog built from scratch.
//!
//! Random catalogs (addresses shared by several nodes and services, nodes without services,
//! services on many nodes, node-less instances, tags, every health, two datacenters, mesh
//! names) go through random sequences of changes. After each step the incrementally updated
//! snapshot and a fresh [`Snapshot::build`] of the same catalog are asked every name of a
//! generated query set in every query type over TCP (so truncation cannot pick different
//! instances), and the whole responses — rcode, flags, every section as sorted records —
//! must be equal. Seeds are fixed, so a failure names the seed and step to replay.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hickory_proto::op::Message;

use crate::backend::mirror::Mirror;
use crate::catalog::model::{
    Address, CatalogData, Health, Instance, MeshEndpoint, MeshKind, Node, TaggedAddresses, Weights,
};
use crate::catalog::{BuildOptions, Catalog, Snapshot};
use crate::dns::Settings;
use crate::dns::acl::Access;
use crate::dns::answer::{Action, Scratch, Transport, respond};
use crate::dns::message::tests::query;
use crate::dns::name::DomainName;
use crate::wire::rtype;

/// Catalogs per run and changes per catalog: with these, the reverse-map and node-lifetime
/// findings are each hit within the first seeds (measured: about a second in all).
const SEEDS: u64 = 40;
const STEPS: usize = 25;

const DCS: [&str; 2] = ["dc1", "dc2"];
const NODES: usize = 8;
const SERVICES: [&str; 5] = ["web", "api", "db", "consul", "cache"];
const TAGS: [&str; 3] = ["v1", "v2", "primary"];

fn ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))
}

/// A shared pool of addresses, so nodes and services collide on purpose.
fn address(rng: &mut fastrand::Rng) -> Address {
    match rng.u8(0..10) {
        0 => Address::Host("ext.example.com".into()),
        1 => Address::Ip("2001:db8::1".parse().expect("a valid literal")),
        _ => Address::Ip(ip(rng.u8(1..=5))),
    }
}

fn node(rng: &mut fastrand::Rng, dc: &str, i: usize) -> Node {
    let meta = if rng.bool() { vec![("rack".to_owned(), format!("r{}", rng.u8(0..3)))] } else { vec![] };
    let tagged = TaggedAddresses { ipv4: rng.u8(0..6).eq(&0).then(|| Address::Ip(ip(rng.u8(1..=5)))), ipv6: None };
    Node { name: format!("n{i}"), datacenter: dc.to_owned(), address: address(rng), tagged, meta }
}

fn health(rng: &mut fastrand::Rng) -> Health {
    [Health::Passing, Health::Passing, Health::Warning, Health::Critical][rng.usize(0..4)]
}

fn instance(rng: &mut fastrand::Rng, data: &CatalogData, dc: &str, id: usize) -> Instance {
    let nodes: Vec<&Node> = data.nodes.iter().filter(|n| n.datacenter == dc).collect();
    let node = (!nodes.is_empty() && rng.u8(0..5) > 0).then(|| nodes[rng.usize(0..nodes.len())].name.clone());
    let own = node.is_none() || rng.u8(0..3) == 0;
    Instance {
        id: format!("i{id}"),
        service: SERVICES[rng.usize(0..SERVICES.len())].to_owned(),
        datacenter: dc.to_owned(),
        node,
        address: own.then(|| address(rng)),
        tagged: TaggedAddresses::default(),
        port: 8000 + rng.u16(0..4),
        tags: TAGS.iter().filter(|_| rng.u8(0..3) == 0).map(|t| Arc::from(*t)).collect(),
        weights: Weights { passing: rng.u16(1..3), warning: rng.u16(0..2) },
        health: health(rng),
    }
}

fn catalog(rng: &mut fastrand::Rng) -> CatalogData {
    let mut data = CatalogData::default();
    for dc in DCS {
        for i in 0..rng.usize(1..NODES) {
            data.nodes.push(node(rng, dc, i));
        }
    }
    for id in 0..rng.usize(0..20) {
        let dc = DCS[rng.usize(0..DCS.len())];
        let inst = instance(rng, &data, dc, id);
        data.instances.push(inst);
    }
    refresh_mesh(rng, &mut data);
    data
}

/// Some instances also answer `<service>.connect` (as proxies) or `.ingress`.
fn refresh_mesh(rng: &mut fastrand::Rng, data: &mut CatalogData) {
    data.mesh.clear();
    for inst in &data.instances {
        if rng.u8(0..6) != 0 {
            continue;
        }
        let kind = if rng.bool() { MeshKind::Connect } else { MeshKind::Ingress };
        let service = SERVICES[rng.usize(0..SERVICES.len())].to_owned();
        data.mesh.push(MeshEndpoint { kind, service, instance: inst.clone() });
    }
}

/// One random change, keeping the catalog valid (instances only on existing nodes).
fn change(rng: &mut fastrand::Rng, data: &mut CatalogData, next_id: &mut usize) {
    match rng.u8(0..9) {
        0 if !data.nodes.is_empty() => {
            let gone = data.nodes.remove(rng.usize(0..data.nodes.len()));
            let on_it = |i: &Instance| i.datacenter == gone.datacenter && i.node.as_deref() == Some(&gone.name);
            data.instances.retain(|i| !on_it(i));
            data.mesh.retain(|m| !on_it(&m.instance));
        }
        1 => {
            let dc = DCS[rng.usize(0..DCS.len())];
            let i = (0..NODES).find(|i| !data.nodes.iter().any(|n| n.datacenter == dc && n.name == format!("n{i}")));
            if let Some(i) = i {
                let node = node(rng, dc, i);
                data.nodes.push(node);
            }
        }
        2 if !data.nodes.is_empty() => {
            let at = rng.usize(0..data.nodes.len());
            let (dc, i) = (data.nodes[at].datacenter.clone(), data.nodes[at].name[1..].parse().unwrap_or(0));
            data.nodes[at] = node(rng, &dc, i);
        }
        3 | 4 => {
            let dc = DCS[rng.usize(0..DCS.len())];
            *next_id += 1;
            let inst = instance(rng, data, dc, *next_id);
            data.instances.push(inst);
        }
        5 if !data.instances.is_empty() => {
            data.instances.remove(rng.usize(0..data.instances.len()));
        }
        6 | 7 if !data.instances.is_empty() => {
            let at = rng.usize(0..data.instances.len());
            let inst = &mut data.instances[at];
            match rng.u8(0..4) {
                0 => inst.health = health(rng),
                1 => inst.tags = TAGS.iter().filter(|_| rng.bool()).map(|t| Arc::from(*t)).collect(),
                2 => inst.address = rng.bool().then(|| address(rng)),
                _ => inst.port = 8000 + rng.u16(0..4),
            }
            if inst.node.is_none() && inst.address.is_none() {
                inst.address = Some(Address::Ip(ip(9)));
            }
        }
        _ => refresh_mesh(rng, data),
    }
}

/// Every name worth asking of these catalogs, in every type worth asking.
fn questions() -> Vec<(String, u16)> {
    let mut names = vec!["consul.".to_owned(), "nope.service.consul.".to_owned(), "n99.node.consul.".to_owned()];
    for dc in ["", "dc2.", "dc9."] {
        for service in SERVICES {
            names.push(format!("{service}.service.{dc}consul."));
            names.push(format!("v1.{service}.service.{dc}consul."));
            names.push(format!("_{service}._tcp.service.{dc}consul."));
            names.push(format!("{service}.connect.{dc}consul."));
            names.push(format!("{service}.ingress.{dc}consul."));
        }
        for i in 0..NODES {
            names.push(format!("n{i}.node.{dc}consul."));
        }
        for last in [1u8, 2, 5, 9] {
            names.push(format!("0a0000{last:02x}.addr.{dc}consul."));
        }
    }
    for last in [1u8, 2, 3, 4, 5, 9] {
        names.push(format!("{last}.0.0.10.in-addr.arpa."));
    }
    let types = [rtype::A, rtype::AAAA, rtype::SRV, rtype::TXT, rtype::ANY, rtype::PTR];
    let mut questions: Vec<(String, u16)> =
        names.iter().flat_map(|name| types.iter().map(move |t| (name.clone(), *t))).collect();
    questions.extend([("consul.".to_owned(), rtype::NS), ("consul.".to_owned(), rtype::SOA)]);
    questions
}

/// A response as comparable text: rcode and flags, then each section sorted (SOA serials, which
/// number publishes rather than describe the catalog, blanked).
fn answer(snapshot: &Snapshot, settings: &Settings, name: &str, qtype: u16) -> (Action, Vec<u8>) {
    let (mut scratch, mut out) = (Scratch::with_seed(1), Vec::new());
    let packet = query(name, qtype, None);
    let action = respond(&packet, snapshot, settings, Transport::Tcp, Access::Query, &mut scratch, &mut out);
    (action, out)
}

/// [`answer`] as text; the bytes of two equal responses can differ only in order.
fn text((action, out): &(Action, Vec<u8>)) -> String {
    if !matches!(action, Action::Reply(_)) {
        return format!("{action:?}");
    }
    let message = Message::from_vec(out).expect("our responses decode");
    let section = |records: &[hickory_proto::rr::Record]| {
        let mut lines: Vec<String> = records.iter().map(|r| blank_serial(&r.to_string())).collect();
        lines.sort();
        lines.join("\n")
    };
    let m = &message.metadata;
    format!(
        "{:?} aa={} tc={}\n{}\n--\n{}\n--\n{}",
        m.response_code,
        m.authoritative,
        m.truncation,
        section(&message.answers),
        section(&message.authorities),
        section(&message.additionals)
    )
}

fn blank_serial(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.get(3) {
        Some(&"SOA") if words.len() > 6 => {
            let mut words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            words[6] = "SERIAL".into();
            words.join(" ")
        }
        _ => line.to_owned(),
    }
}

/// The first question the two snapshots answer differently.
fn first_difference(incremental: &Snapshot, full: &Snapshot, questions: &[(String, u16)]) -> Option<String> {
    let settings = Settings::new(DomainName::new("consul.").expect("a valid literal"));
    questions.iter().find_map(|(name, qtype)| {
        let (got, want) = (answer(incremental, &settings, name, *qtype), answer(full, &settings, name, *qtype));
        if got == want {
            return None; // the same bytes: the same response (the usual case, and cheap)
        }
        let (got, want) = (text(&got), text(&want));
        (got != want).then(|| format!("{name} type {qtype}:\n--- incremental\n{got}\n--- full build\n{want}"))
    })
}

fn options() -> Arc<BuildOptions> {
    Arc::new(BuildOptions::new("dc1", 5))
}

#[test]
fn incremental_updates_answer_as_a_full_build() {
    let questions = questions();
    for seed in 0..SEEDS {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut data = catalog(&mut rng);
        data.validate().expect("generated catalogs are valid");
        let mut mirror = Mirror::seeded(data.clone());
        let mut served = Snapshot::build(&data, options());
        let mut next_id = 100;
        for step in 0..STEPS {
            for _ in 0..rng.usize(1..4) {
                change(&mut rng, &mut data, &mut next_id);
            }
            data.validate().expect("changes keep the catalog valid");
            mirror.replace(data.clone());
            let dirty = mirror.take_dirty();
            served = served.update(&mirror.update(&dirty), options());
            let full = Snapshot::build(&data, options());
            if let Some(difference) = first_difference(&served, &full, &questions) {
                panic!("seed {seed}, step {step}: {difference}\ncatalog: {data:#?}");
            }
        }
    }
}

/// The same through the publisher, as the database sources use it: each full read is diffed
/// and published as an update.
#[tokio::test]
async fn the_publisher_publishes_full_reads_as_updates_that_answer_as_a_full_build() {
    let questions = questions();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut data = catalog(&mut rng);
    let catalog = Arc::new(Catalog::new(Snapshot::empty(options(), false)));
    let (_options_tx, options_rx) = tokio::sync::watch::channel(options());
    let backend = crate::telemetry::Backend("oracle");
    let mut publisher = crate::backend::publish::Publisher::new(backend, Arc::clone(&catalog), options_rx, None, None);
    let mut next_id = 100;
    for step in 0..STEPS {
        publisher.full(data.clone(), "test").await.expect("valid");
        let full = Snapshot::build(&data, options());
        if let Some(difference) = first_difference(&catalog.load(), &full, &questions) {
            panic!("step {step}: {difference}");
        }
        change(&mut rng, &mut data, &mut next_id);
    }
    let mut broken = data.clone();
    broken.nodes.push(broken.nodes.first().cloned().unwrap_or_else(|| node(&mut rng, "dc1", 0)));
    broken.nodes.push(broken.nodes[0].clone());
    let before = catalog.load().serial();
    assert!(publisher.full(broken, "test").await.is_err(), "a duplicate node is rejected whole");
    assert_eq!(catalog.load().serial(), before, "and nothing is published");
}
