//! The relay logic against fake upstreams on loopback (UDP, in-process). The daemon-level
//! behaviour (TC → TCP, ACLs, the UDP hand-off) is tested in `tests/it/forward.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::*;
use crate::dns::message::tests::query;
use crate::dns::name::DomainName;
use crate::wire::{self, rtype};

/// A fake upstream: answers every query with `rcode` and, for NOERROR, one A record
/// 192.0.2.<last octet of its own port> with TTL 60, padded to `pad` answer records.
struct Fake {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    ids: Arc<std::sync::Mutex<Vec<u16>>>,
}

async fn fake(rcode: u16, pad: usize) -> Fake {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (counter, seen) = (Arc::clone(&queries), Arc::clone(&ids));
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else { return };
            counter.fetch_add(1, Ordering::Relaxed);
            seen.lock().unwrap().push(wire::read_u16(&buf, 0));
            let reply = reply_to(&buf[..len], rcode, pad.max(1), addr.port() as u8);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    Fake { addr, queries, ids }
}

/// A socket that never answers.
async fn silent() -> (SocketAddr, UdpSocket) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    (socket.local_addr().unwrap(), socket)
}

fn reply_to(query: &[u8], code: u16, answers: usize, octet: u8) -> Vec<u8> {
    let question_end = 12 + query[12..].iter().position(|&b| b == 0).unwrap() + 1 + 4;
    let mut reply = query[..question_end].to_vec();
    reply[2] |= 0x80;
    reply[3] = 0x80 | code as u8;
    let answers = if code == rcode::NOERROR { answers } else { 0 };
    wire::write_u16(&mut reply, 6, answers as u16);
    wire::write_u16(&mut reply, 10, 0);
    for _ in 0..answers {
        reply.extend_from_slice(&[0xC0, 12]);
        wire::push_u16(rtype::A, &mut reply);
        wire::push_u16(1, &mut reply);
        wire::push_u32(60, &mut reply);
        wire::push_u16(4, &mut reply);
        reply.extend_from_slice(&[192, 0, 2, octet]);
    }
    reply
}

fn settings(upstreams: &[SocketAddr], timeout_ms: u64, strategy: Strategy) -> Settings {
    let mut settings = Settings::new(DomainName::new("consul.").unwrap());
    settings.recursion =
        Recursion { upstreams: upstreams.to_vec(), timeout: Duration::from_millis(timeout_ms), strategy };
    settings
}

async fn ask(f: &Forwarder, settings: &Settings, packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    f.resolve(packet, Transport::Udp, settings, &mut out).await;
    out
}

#[test]
fn total_timeout_is_n_tries_capped() {
    let addr: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let recursion = |n: usize, ms: u64| Recursion {
        upstreams: vec![addr; n],
        timeout: Duration::from_millis(ms),
        strategy: Strategy::Sequential,
    };
    assert_eq!(recursion(1, 2000).total_timeout(), Duration::from_secs(2));
    assert_eq!(recursion(2, 2000).total_timeout(), Duration::from_secs(4));
    assert_eq!(recursion(5, 2000).total_timeout(), MAX_TOTAL, "capped");
    assert_eq!(recursion(2, 8000).total_timeout(), Duration::from_secs(8), "never below one try");
}

#[test]
fn strategies_parse() {
    assert_eq!("Random".parse::<Strategy>(), Ok(Strategy::Random));
    assert_eq!("sequential".parse::<Strategy>(), Ok(Strategy::Sequential));
    assert!("round-robin".parse::<Strategy>().is_err());
}

#[tokio::test]
async fn s9_3_sequential_moves_past_servfail_and_refused() {
    let (servfail, refused, good) = (fake(rcode::SERVFAIL, 1).await, fake(rcode::REFUSED, 1).await, fake(0, 1).await);
    let s = settings(&[servfail.addr, refused.addr, good.addr], 500, Strategy::Sequential);
    let f = Forwarder::default();
    let reply = ask(&f, &s, &query("kong-database", rtype::A, None)).await;
    assert_eq!(reply[3] & 0x0F, 0, "NOERROR from the third");
    assert_eq!(reply[reply.len() - 1], good.addr.port() as u8, "the working upstream's record");
    let asked = [&servfail, &refused, &good].map(|u| u.queries.load(Ordering::Relaxed));
    assert_eq!(asked, [1, 1, 1]);
}

#[tokio::test]
async fn s9_3_nxdomain_is_final() {
    let (nx, good) = (fake(rcode::NXDOMAIN, 1).await, fake(0, 1).await);
    let s = settings(&[nx.addr, good.addr], 500, Strategy::Sequential);
    let reply = ask(&Forwarder::default(), &s, &query("nope.example", rtype::A, None)).await;
    assert_eq!(reply[3] & 0x0F, rcode::NXDOMAIN as u8);
    assert_eq!(good.queries.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn s9_4_all_failed_is_servfail_with_ra_question_and_opt_in_bounded_time() {
    let (dead, _keep) = silent().await;
    let servfail = fake(rcode::SERVFAIL, 1).await;
    let s = settings(&[dead, servfail.addr], 150, Strategy::Sequential);
    let f = Forwarder::default();
    for edns in [None, Some((1232, 0, &[][..]))] {
        let packet = query("kong-database", rtype::A, edns);
        let started = std::time::Instant::now();
        let reply = ask(&f, &s, &packet).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150) && took < Duration::from_millis(1000), "{took:?}");
        let msg = hickory_proto::op::Message::from_vec(&reply).unwrap();
        assert_eq!(u16::from(msg.metadata.response_code), rcode::SERVFAIL);
        assert!(msg.metadata.recursion_available);
        assert_eq!(msg.metadata.id, 0x1234);
        let question = 12..12 + 15 + 4; // kong-database: 13 letters, two length bytes, type, class
        assert_eq!(&reply[question.clone()], &packet[question], "question echoed");
        assert_eq!(msg.edns.is_some(), edns.is_some(), "OPT only when the query had one");
    }
}

#[tokio::test]
async fn random_strategy_spreads_the_first_choice() {
    let (a, b) = (fake(0, 1).await, fake(0, 1).await);
    let s = settings(&[a.addr, b.addr], 500, Strategy::Random);
    let f = Forwarder::default();
    for i in 0..24 {
        ask(&f, &s, &query(&format!("n{i}.example"), rtype::A, None)).await;
    }
    let counts = [&a, &b].map(|u| u.queries.load(Ordering::Relaxed));
    assert_eq!(counts[0] + counts[1], 24);
    assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
}

#[tokio::test]
async fn repeated_question_is_answered_from_the_cache() {
    let good = fake(0, 1).await;
    let s = settings(&[good.addr], 500, Strategy::Sequential);
    let f = Forwarder::default();
    ask(&f, &s, &query("kong-database", rtype::A, None)).await;
    let mut again = query("KONG-database", rtype::A, None);
    again[0] = 0x77;
    let reply = ask(&f, &s, &again).await;
    assert_eq!(good.queries.load(Ordering::Relaxed), 1, "one upstream query");
    assert_eq!(reply[0], 0x77, "ID patched");
    assert_eq!(&reply[13..17], b"KONG", "question as asked");
    ask(&f, &s, &query("kong-database", rtype::A, Some((1232, 0, &[])))).await;
    assert_eq!(good.queries.load(Ordering::Relaxed), 2, "an EDNS query has its own entry");
}

#[tokio::test]
async fn answer_too_big_for_a_classic_udp_client_becomes_tc() {
    let big = fake(0, 40).await; // 40 × 16 bytes: more than 512
    let s = settings(&[big.addr], 500, Strategy::Sequential);
    let reply = ask(&Forwarder::default(), &s, &query("big.example", rtype::A, None)).await;
    assert!(reply.len() <= 512, "{}", reply.len());
    assert_ne!(reply[2] & 0x02, 0, "TC: ask again over TCP");
    assert_eq!(wire::read_u16(&reply, 6), 0);
    assert_eq!(reply[3] & 0x0F, 0, "rcode kept");
}

#[tokio::test]
async fn upstream_sees_a_random_id_the_client_gets_its_own_back() {
    let good = fake(0, 1).await;
    let s = settings(&[good.addr], 500, Strategy::Sequential);
    let f = Forwarder::default();
    for i in 0..5 {
        let reply = ask(&f, &s, &query(&format!("n{i}.example"), rtype::A, None)).await;
        assert_eq!(wire::read_u16(&reply, 0), 0x1234, "the client's ID");
        assert_eq!(reply[3] & 0x0F, 0);
    }
    let ids = good.ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().any(|&id| id != 0x1234), "upstream IDs are our own: {ids:?}");
    assert!(ids.windows(2).any(|w| w[0] != w[1]), "and change: {ids:?}");
}
