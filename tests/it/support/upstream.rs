//! A small upstream resolver for the recursion tests: UDP and TCP on one loopback port, built
//! on hickory-proto (independent of the code under test).
//!
//! It knows `kong-database.` (A 127.0.0.99, TTL 300; other types NODATA), `big.example.`
//! (60 A records, too many for 512 bytes), and `99.0.0.127.in-addr.arpa.` (PTR
//! `kong-database.`); everything else is NXDOMAIN. Negative answers carry an SOA with TTL 60
//! and MINIMUM 30. A [`Mode`] makes it misbehave, and it counts what it is asked.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// TTL of `kong-database.`'s A record.
pub const KONG_DATABASE_TTL: u32 = 300;
/// The address of `kong-database.`.
pub const KONG_DATABASE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 99);
/// How many A records `big.example.` has.
pub const BIG_RECORDS: usize = 60;

/// How the upstream behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers properly on both transports.
    Answer,
    /// Over UDP, every answer comes back empty with TC set; TCP answers properly.
    TruncateUdp,
    /// SERVFAIL for everything.
    ServFail,
    /// Never answers (UDP datagrams are read and dropped, TCP connections left hanging).
    Silent,
}

#[derive(Debug)]
struct State {
    mode: Mutex<Mode>,
    udp: AtomicUsize,
    tcp: AtomicUsize,
    stop: AtomicBool,
    kong_database: Ipv4Addr,
}

/// A running upstream; stops on drop.
#[derive(Debug)]
pub struct Upstream {
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    state: Arc<State>,
    /// The network namespace it listens in (`None`: this machine's loopback).
    netns: Option<String>,
}

impl Upstream {
    /// Starts one on 127.0.0.1 with a free port (UDP first, then TCP on the port UDP got).
    pub fn start(mode: Mode) -> Upstream {
        let (udp, tcp) = bind_pair();
        Upstream::serve(udp, tcp, mode, KONG_DATABASE_IP, None)
    }

    /// Starts one on `addr` inside the network namespace `netns`, answering `kong-database.`
    /// with `kong_database` (as Docker's DNS at 127.0.0.11 answers a container's name).
    pub fn start_in_netns(netns: &str, addr: SocketAddr, kong_database: Ipv4Addr) -> Upstream {
        let (udp, tcp) = super::netns::within(netns, move || {
            let udp = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("upstream cannot bind {addr}/udp: {e}"));
            let tcp = TcpListener::bind(addr).unwrap_or_else(|e| panic!("upstream cannot bind {addr}/tcp: {e}"));
            (udp, tcp)
        });
        Upstream::serve(udp, tcp, Mode::Answer, kong_database, Some(netns.to_owned()))
    }

    fn serve(udp: UdpSocket, tcp: TcpListener, mode: Mode, kong_database: Ipv4Addr, netns: Option<String>) -> Upstream {
        let addr = udp.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            udp: AtomicUsize::new(0),
            tcp: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            kong_database,
        });
        udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let s = Arc::clone(&state);
        std::thread::spawn(move || serve_udp(udp, s));
        let s = Arc::clone(&state);
        std::thread::spawn(move || serve_tcp(tcp, s));
        Upstream { addr, state, netns }
    }

    /// Changes how it behaves from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Queries received over UDP so far.
    pub fn udp_queries(&self) -> usize {
        self.state.udp.load(Ordering::SeqCst)
    }

    /// Queries received over TCP so far.
    pub fn tcp_queries(&self) -> usize {
        self.state.tcp.load(Ordering::SeqCst)
    }

    /// All queries so far.
    pub fn queries(&self) -> usize {
        self.udp_queries() + self.tcp_queries()
    }

    /// `--recursor ADDR` as an argument value.
    pub fn arg(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let addr = self.addr;
        match &self.netns {
            None => drop(TcpStream::connect(addr)), // wakes the accept loop
            Some(ns) => {
                let ns = ns.clone();
                let _ = std::thread::spawn(move || {
                    if super::netns::try_enter(&ns).is_ok() {
                        let _ = TcpStream::connect(addr);
                    }
                })
                .join();
            }
        }
    }
}

fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..16 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

fn serve_udp(socket: UdpSocket, state: Arc<State>) {
    let mut buf = vec![0u8; 65535];
    while !state.stop.load(Ordering::SeqCst) {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else { continue };
        state.udp.fetch_add(1, Ordering::SeqCst);
        let mode = *state.mode.lock().unwrap();
        if let Some(reply) = answer(&buf[..len], mode, false, state.kong_database) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    for stream in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            loop {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).is_err() {
                    return;
                }
                let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                if stream.read_exact(&mut query).is_err() {
                    return;
                }
                state.tcp.fetch_add(1, Ordering::SeqCst);
                let mode = *state.mode.lock().unwrap();
                let Some(reply) = answer(&query, mode, true, state.kong_database) else { continue };
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if stream.write_all(&framed).is_err() {
                    return;
                }
            }
        });
    }
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

/// The reply to `packet` in `mode`, `None` for silence.
fn answer(packet: &[u8], mode: Mode, tcp: bool, kong_database: Ipv4Addr) -> Option<Vec<u8>> {
    if mode == Mode::Silent {
        return None;
    }
    let query = Message::from_vec(packet).ok()?;
    let question = query.queries.first()?.clone();
    let mut reply = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    if let Some(edns) = &query.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(edns.max_payload().max(512));
        reply.set_edns(ours);
    }
    if mode == Mode::ServFail {
        reply.metadata.response_code = ResponseCode::ServFail;
        return reply.to_vec().ok();
    }
    let owner = question.name().to_lowercase();
    let qtype = question.query_type();
    let records: Option<Vec<Record>> = match owner.to_ascii().as_str() {
        "kong-database." => Some(match qtype {
            RecordType::A => vec![a(&owner, KONG_DATABASE_TTL, kong_database)],
            _ => vec![],
        }),
        "big.example." => Some(match qtype {
            RecordType::A => (0..BIG_RECORDS).map(|i| a(&owner, 120, Ipv4Addr::new(127, 2, 0, i as u8 + 1))).collect(),
            _ => vec![],
        }),
        "99.0.0.127.in-addr.arpa." => Some(match qtype {
            RecordType::PTR => vec![Record::from_rdata(owner.clone(), 60, RData::PTR(PTR(name("kong-database."))))],
            _ => vec![],
        }),
        _ => None,
    };
    match records {
        Some(records) if !records.is_empty() => reply.answers = records,
        Some(_) => reply.authorities = vec![soa()],
        None => {
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.authorities = vec![soa()];
        }
    }
    let bytes = reply.to_vec().ok()?;
    let limit = query.edns.as_ref().map_or(512, |e| e.max_payload().max(512) as usize);
    if !tcp && (mode == Mode::TruncateUdp || bytes.len() > limit) {
        reply.answers.clear();
        reply.authorities.clear();
        reply.metadata.truncation = true;
        return reply.to_vec().ok();
    }
    Some(bytes)
}

fn a(owner: &Name, ttl: u32, ip: Ipv4Addr) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::A(A(ip)))
}

fn soa() -> Record {
    let rdata = SOA::new(name("ns.upstream.test."), name("hostmaster.upstream.test."), 1, 3600, 600, 86400, 30);
    Record::from_rdata(name("."), 60, RData::SOA(rdata))
}
