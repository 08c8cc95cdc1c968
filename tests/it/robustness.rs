//! Bad input loses nothing: random and mutated packets over UDP and TCP never take the daemon
//! down, and it still answers a valid query afterwards.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::client::packet;
use crate::support::{Daemon, query_tcp, query_udp};

const CATALOG: &str = "[[nodes]]\nname = \"n1\"\naddress = \"127.0.0.21\"\nmeta = { a = \"b\" }\n[[services]]\nname = \"web\"\nnode = \"n1\"\nport = 80\ntags = [\"v1\"]\n";

fn mutated(rng: &mut fastrand::Rng, seeds: &[Vec<u8>], round: usize) -> Vec<u8> {
    if round % 5 == 0 {
        let len = rng.usize(0..600);
        return (0..len).map(|_| rng.u8(..)).collect();
    }
    let mut p = seeds[round % seeds.len()].clone();
    for _ in 0..rng.usize(1..8) {
        let at = rng.usize(..p.len());
        p[at] = rng.u8(..);
    }
    if round % 3 == 0 {
        p.truncate(rng.usize(..p.len()));
    }
    if round % 7 == 0 && p.len() > 2 {
        p[2] &= 0x7F; // keep it a query so it goes deeper than the QR check
    }
    p
}

#[test]
fn survives_10000_random_and_mutated_packets_over_udp_and_tcp() {
    let mut d = Daemon::start(CATALOG, &[]);
    let seeds = vec![
        packet("web.service.consul", RecordType::SRV, Some(1232)),
        packet("_web._v1.service.consul", RecordType::SRV, None),
        packet("n1.node.consul", RecordType::TXT, Some(512)),
        packet("1.0.0.127.in-addr.arpa", RecordType::PTR, None),
        packet("7f000001.addr.consul", RecordType::ANY, None),
    ];
    let mut rng = fastrand::Rng::with_seed(2026);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut buf = [0u8; 65535];
    for round in 0..10_000 {
        udp.send_to(&mutated(&mut rng, &seeds, round), d.addr).unwrap();
        let _ = udp.recv_from(&mut buf); // drain whatever came back
    }
    let mut tcp_sent = 0;
    while tcp_sent < 2_000 {
        let mut stream = TcpStream::connect(d.addr).unwrap();
        for _ in 0..100 {
            let p = mutated(&mut rng, &seeds, tcp_sent);
            let mut framed = (p.len() as u16).to_be_bytes().to_vec();
            if tcp_sent % 11 == 0 {
                framed[0] = 0xFF; // a length that lies
            }
            framed.extend_from_slice(&p);
            tcp_sent += 1;
            if stream.write_all(&framed).is_err() {
                break;
            }
        }
    }
    assert!(d.is_running(), "daemon died; log:\n{}", d.log());
    assert_eq!(query_udp(d.addr, "web.service.consul", RecordType::SRV, None).answers().len(), 1);
    assert_eq!(query_tcp(d.addr, "web.service.consul", RecordType::A).answers().len(), 1);
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
