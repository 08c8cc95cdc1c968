//! The Consul path's oracle: a daemon that followed a random stream of registrations,
//! deregistrations, check flips, maintenance and node removals answers exactly as a second
//! daemon that synced the final state from scratch (every name and type asked, answers
//! compared modulo order, SOA serials aside). Seeded: a failure names its seed.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::support::fake_consul::{FakeConsul, Svc};
use crate::support::{Daemon, query_tcp, start_consul};

const NODES: usize = 5;
const SERVICES: [&str; 4] = ["web", "api", "db", "cache"];
/// Rounds of changes per seed, changes per round, seeds: 3 × 25 × 6 (about 10 s in all).
const ROUNDS: usize = 3;
const CHANGES: usize = 25;
const SEEDS: u64 = 6;

fn address(rng: &mut fastrand::Rng) -> String {
    format!("127.0.0.{}", 61 + rng.u8(0..4))
}

/// One random change to the fake's catalog of dc1.
fn change(rng: &mut fastrand::Rng, fake: &FakeConsul, registered: &mut Vec<(String, String)>) {
    let node = format!("node-{}", rng.usize(0..NODES));
    match rng.u8(0..10) {
        0 | 1 => fake.register_node("dc1", &node, &address(rng), &[("rack", &format!("r{}", rng.u8(0..2)))]),
        2..=4 => {
            fake.register_node("dc1", &node, &address(rng), &[]);
            let name = SERVICES[rng.usize(0..SERVICES.len())];
            let id = format!("{name}-{}", rng.u8(0..3));
            let mut svc = Svc::new(name, &id, 8000 + rng.u16(0..3));
            if rng.bool() {
                svc.address = address(rng);
            }
            if rng.bool() {
                svc.tags = vec!["v1".into()];
            }
            fake.register("dc1", &node, svc);
            registered.push((node, id));
        }
        5 if !registered.is_empty() => {
            let (node, id) = registered.swap_remove(rng.usize(0..registered.len()));
            fake.deregister("dc1", &node, &id);
        }
        6 | 7 if !registered.is_empty() => {
            let (node, id) = registered[rng.usize(0..registered.len())].clone();
            let status = ["passing", "warning", "critical"][rng.usize(0..3)];
            fake.set_check("dc1", &node, &format!("service:{id}"), &id, status);
        }
        8 => fake.node_maintenance("dc1", &node, rng.bool()),
        _ => {
            fake.deregister_node("dc1", &node);
            registered.retain(|(n, _)| *n != node);
        }
    }
}

fn questions() -> Vec<(String, RecordType)> {
    let mut names = vec!["consul.".to_owned()];
    for service in SERVICES {
        names.push(format!("{service}.service.consul."));
        names.push(format!("v1.{service}.service.consul."));
    }
    for i in 0..NODES {
        names.push(format!("node-{i}.node.consul."));
    }
    for last in 61..65 {
        names.push(format!("{last}.0.0.127.in-addr.arpa."));
        names.push(format!("7f0000{last:02x}.addr.consul."));
    }
    let types = [RecordType::A, RecordType::SRV, RecordType::TXT, RecordType::PTR];
    names.iter().flat_map(|n| types.iter().map(move |t| (n.clone(), *t))).collect()
}

/// Everything a client sees of one answer, order aside.
fn seen(d: &Daemon, name: &str, qtype: RecordType) -> String {
    let reply = query_tcp(d.addr, name, qtype);
    let sorted = |mut lines: Vec<String>| {
        for line in &mut lines {
            if line.contains(" SOA ") {
                *line = "SOA".into(); // serials number publishes, not contents
            }
        }
        lines.sort();
        lines.join(" | ")
    };
    format!(
        "rcode {} aa {}: {} / {} / {}",
        reply.rcode(),
        reply.authoritative(),
        sorted(reply.answers()),
        sorted(reply.authorities()),
        sorted(reply.additionals())
    )
}

pub(crate) fn difference(a: &Daemon, b: &Daemon, questions: &[(String, RecordType)]) -> Option<String> {
    questions.iter().find_map(|(name, qtype)| {
        let (got, want) = (seen(a, name, *qtype), seen(b, name, *qtype));
        (got != want).then(|| format!("{name} {qtype}:\n  followed: {got}\n  fresh:    {want}"))
    })
}

fn start(fake: &FakeConsul) -> Daemon {
    start_consul(&fake.url(), &[])
}

/// Finding 1 of the seam issue: a node removed from the catalog kept answering on the daemon
/// that followed the change, while a fresh daemon had no such node.
#[test]
fn a_daemon_following_changes_answers_as_one_synced_from_scratch() {
    let questions = questions();
    for seed in 0..SEEDS {
        let mut rng = fastrand::Rng::with_seed(seed);
        let fake = FakeConsul::start("dc1", &[]);
        fake.register_node("dc1", "server-1", "127.0.0.60", &[]);
        fake.register("dc1", "server-1", Svc::new("consul", "consul", 8300));
        let followed = start(&fake);
        let mut registered = Vec::new();
        for round in 0..ROUNDS {
            for _ in 0..CHANGES {
                change(&mut rng, &fake, &mut registered);
                std::thread::sleep(Duration::from_millis(rng.u64(0..15)));
            }
            let fresh = start(&fake);
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Some(diff) = difference(&followed, &fresh, &questions) {
                assert!(Instant::now() < deadline, "seed {seed}, round {round}: {diff}\nlog:\n{}", followed.log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
