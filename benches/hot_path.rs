//! Hot-path benchmarks, step by step: request parsing, name classification, the snapshot
//! lookup, then whole answers for a 3-, 1,000- and 5,000-instance service (UDP without EDNS,
//! so truncated, and TCP, complete), a negative answer, and one full UDP round trip on
//! loopback through the real server loop. Snapshot building is measured too (1,000 × 3).

use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::Arc;

use arc_swap::ArcSwap;
use consul_dns::catalog::model::CatalogData;
use consul_dns::catalog::{BuildOptions, Catalog, Snapshot};
use consul_dns::dns::Settings;
use consul_dns::dns::acl::Access;
use consul_dns::dns::answer::{Action, Scratch, Transport, respond};
use consul_dns::dns::forward::Forwarder;
use consul_dns::dns::message::{LowerName, Request};
use consul_dns::dns::name::{DomainName, classify};
use consul_dns::dns::server::{self, Shared};
use consul_dns::wire;
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support/synthetic.rs"]
mod synthetic;
use synthetic::catalog;

fn snapshot(data: &CatalogData) -> Snapshot {
    let options = BuildOptions::new("dc1", 5);
    Snapshot::build(data, Arc::new(options))
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    wire::push_name(name, &mut p).unwrap();
    wire::push_u16(qtype, &mut p);
    wire::push_u16(1, &mut p);
    p
}

fn settings() -> Settings {
    Settings::new(DomainName::new("consul.").unwrap())
}

fn bench_steps(c: &mut Criterion) {
    let domain = DomainName::new("consul.").unwrap();
    let snap = snapshot(&catalog(1000, 3));
    let mut group = c.benchmark_group("step");
    let srv = query("svc1.service.consul", wire::rtype::SRV);
    group.bench_function("parse", |b| {
        b.iter(|| {
            let mut name = LowerName::new();
            Request::parse(black_box(&srv), &mut name).unwrap().qtype
        })
    });
    for (label, name, qtype) in [
        ("classify_service", "svc1.service.consul", wire::rtype::SRV),
        ("classify_tag_dc", "primary.svc1.service.dc1.consul", wire::rtype::A),
        ("classify_rfc2782", "_svc1._tcp.service.consul", wire::rtype::SRV),
        ("classify_outside", "www.example.com", wire::rtype::A),
    ] {
        let packet = query(name, qtype);
        let mut name = LowerName::new();
        let req = Request::parse(&packet, &mut name).unwrap();
        group
            .bench_function(label, |b| b.iter(|| classify(black_box(req.name()), req.qtype, &[&domain]).domain_offset));
    }
    group.bench_function("lookup", |b| {
        b.iter(|| snap.datacenter(None).and_then(|dc| dc.services.get(black_box(&b"svc1"[..]))).is_some())
    });
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let data = catalog(1000, 3);
    c.bench_function("snapshot_build_1000x3", |b| b.iter(|| snapshot(black_box(&data)).counts().instances));
}

fn bench_answer(c: &mut Criterion) {
    let small = snapshot(&catalog(1000, 3));
    let large = snapshot(&catalog(1, 1000));
    let huge = snapshot(&catalog(1, 5000));
    let settings = settings();
    let mut scratch = Scratch::with_seed(1);
    let mut out = Vec::with_capacity(65535);
    let mut group = c.benchmark_group("answer");
    let cases = [
        ("srv_3_udp", &small, query("svc1.service.consul", wire::rtype::SRV), Transport::Udp),
        ("a_3_udp", &small, query("svc1.service.consul", wire::rtype::A), Transport::Udp),
        ("nxdomain_udp", &small, query("missing1.service.consul", wire::rtype::A), Transport::Udp),
        ("srv_1000_udp_truncated", &large, query("svc0.service.consul", wire::rtype::SRV), Transport::Udp),
        ("srv_1000_tcp", &large, query("svc0.service.consul", wire::rtype::SRV), Transport::Tcp),
        ("a_1000_tcp", &large, query("svc0.service.consul", wire::rtype::A), Transport::Tcp),
        ("srv_5000_udp_truncated", &huge, query("svc0.service.consul", wire::rtype::SRV), Transport::Udp),
        ("srv_5000_tcp", &huge, query("svc0.service.consul", wire::rtype::SRV), Transport::Tcp),
    ];
    for (label, snap, packet, transport) in cases {
        group.bench_function(label, |b| {
            b.iter(|| {
                let action =
                    respond(black_box(&packet), snap, &settings, transport, Access::Recurse, &mut scratch, &mut out);
                assert!(matches!(action, Action::Reply(_)));
            })
        });
    }
    group.finish();
}

fn bench_round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let shared = Shared {
        catalog: Arc::new(Catalog::new(snapshot(&catalog(1000, 3)))),
        settings: Arc::new(ArcSwap::from_pointee(settings())),
        forwarder: Arc::new(Forwarder::default()),
    };
    let bound = server::bind(&["127.0.0.1:0".parse().unwrap()], 1).unwrap();
    let addr = bound[0].addr;
    let running = runtime.block_on(async { server::start(bound, &shared, Default::default()) }).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(addr).unwrap();
    let packet = query("svc1.service.consul", wire::rtype::SRV);
    let mut buf = [0u8; 4096];
    c.bench_function("udp_round_trip_srv_3", |b| {
        b.iter(|| {
            client.send(&packet).unwrap();
            client.recv(&mut buf).unwrap()
        })
    });
    runtime.block_on(running.stop());
}

criterion_group!(benches, bench_steps, bench_answer, bench_build, bench_round_trip);
criterion_main!(benches);
