//! TCP under abuse: the caps on connections (all clients, one client), eviction of the oldest
//! idle connection, the idle and write timeouts, and pipelined queries read and answered in
//! batches. Caps and timeouts are set low so that modest numbers of real sockets reach them;
//! the assertions are on behaviour (answered, disconnected), with generous time bounds.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use socket2::{Domain, Socket, Type};

use crate::support::client::{packet, query_tcp_from, read_framed};
use crate::support::daemon::run_binary;
use crate::support::{Daemon, big_catalog};

const CATALOG: &str = "\
[[nodes]]\nname = \"n1\"\naddress = \"127.0.0.21\"\n\
[[services]]\nname = \"web\"\nid = \"web-1\"\nnode = \"n1\"\nport = 80\n";

/// A connection from `source` (a loopback address), optionally with a small receive buffer.
fn connect(source: &str, addr: SocketAddr, recv_buffer: Option<usize>) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let local: SocketAddr = (source.parse::<std::net::IpAddr>().unwrap(), 0).into();
    socket.bind(&local.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

fn framed(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut query = packet(name, qtype, None);
    query[..2].copy_from_slice(&id.to_be_bytes());
    let mut out = (query.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&query);
    out
}

/// Asks one question on `stream` and returns the reply's ID, or `None` if the connection is
/// gone.
fn ask(stream: &mut TcpStream, id: u16) -> Option<u16> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(&framed(id, "web.service.consul", RecordType::A)).ok()?;
    read_framed(stream).map(|reply| u16::from_be_bytes([reply[0], reply[1]]))
}

/// Whether the server closes (or resets) `stream` within `within`, with nothing sent.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted),
    }
}

#[test]
fn a_client_at_its_cap_gives_up_its_oldest_idle_connection() {
    let d = Daemon::start(CATALOG, &["--tcp-max-per-client", "3", "--tcp-idle-timeout", "60s"]);
    let mut held: Vec<TcpStream> = (0..3u16)
        .map(|i| {
            let mut s = connect("127.0.0.1", d.addr, None);
            assert_eq!(ask(&mut s, i), Some(i), "connection {i} is served");
            s
        })
        .collect();
    // A fourth from the same address is served; the one idle longest makes room for it.
    let mut fourth = connect("127.0.0.1", d.addr, None);
    assert_eq!(ask(&mut fourth, 9), Some(9));
    assert!(closed_within(&mut held[0], Duration::from_secs(10)), "the oldest idle connection is closed");
    for (i, s) in held.iter_mut().enumerate().skip(1) {
        assert_eq!(ask(s, 20 + i as u16), Some(20 + i as u16), "connection {i} stays");
    }
    // Another address is another client: not affected by this one's cap.
    let others: Vec<TcpStream> = (0..3).map(|_| connect("127.0.0.2", d.addr, None)).collect();
    assert_eq!(query_tcp_from("127.0.0.2", d.addr, "web.service.consul", RecordType::A).answers().len(), 1);
    assert_eq!(ask(&mut fourth, 10), Some(10));
    drop(others);
}

#[test]
fn a_prefix_length_makes_neighbours_one_client() {
    let d = Daemon::start(
        CATALOG,
        &["--tcp-max-per-client", "2", "--tcp-client-prefix-v4", "24", "--tcp-idle-timeout", "60s"],
    );
    let mut first = connect("127.0.0.1", d.addr, None);
    assert_eq!(ask(&mut first, 1), Some(1));
    let mut second = connect("127.0.0.2", d.addr, None);
    assert_eq!(ask(&mut second, 2), Some(2));
    let mut third = connect("127.0.0.3", d.addr, None);
    assert_eq!(ask(&mut third, 3), Some(3));
    assert!(closed_within(&mut first, Duration::from_secs(10)), "127.0.0.1 and .3 share 127.0.0.0/24's cap");
    assert_eq!(ask(&mut second, 4), Some(4));
}

#[test]
fn hundreds_of_idle_connections_neither_keep_out_a_fresh_query_nor_stay_open() {
    let cap = 40;
    let cap_text = cap.to_string();
    let flags = ["--tcp-max-connections", &cap_text, "--tcp-max-per-client", "1000", "--tcp-idle-timeout", "60s"];
    let d = Daemon::start(CATALOG, &flags);
    // 400 connections from one address that never send a byte, opened without waiting (as an
    // attacker would: beyond the cap the kernel's queue holds them).
    let idle: Vec<Socket> = (0..400)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            match s.connect(&d.addr.into()) {
                Ok(()) => {}
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINPROGRESS), "{e}"),
            }
            s
        })
        .collect();
    // A fresh query from another client is answered: an idle connection makes room for it.
    let reply = query_tcp_from("127.0.0.2", d.addr, "web.service.consul", RecordType::A);
    assert_eq!(reply.answers().len(), 1);
    // The server works through its accept queue by closing idle connections: in the end it
    // holds no more than its cap of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let open = loop {
        let open = idle.iter().filter(|s| still_open(s.as_raw_fd())).count();
        if open <= cap || Instant::now() > deadline {
            break open;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(open <= cap, "{open} of the idle connections are still open (cap {cap})");
    assert_eq!(query_tcp_from("127.0.0.3", d.addr, "web.service.consul", RecordType::A).answers().len(), 1);
}

/// Whether the peer has neither closed nor reset the connection (a connection still waiting
/// in the server's queue counts as open).
fn still_open(fd: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 0 || p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) == 0
}

#[test]
fn a_query_trickled_byte_by_byte_does_not_outlast_the_idle_timeout() {
    let d = Daemon::start(CATALOG, &["--tcp-idle-timeout", "1s"]);
    let mut s = connect("127.0.0.1", d.addr, None);
    assert_eq!(ask(&mut s, 1), Some(1), "a prompt query is answered");
    // The next query, one byte every 200 ms: 7 s in all, each gap far below the timeout.
    let query = framed(2, "web.service.consul", RecordType::A);
    let started = Instant::now();
    let mut cut = false;
    for byte in &query[..query.len() - 1] {
        if s.write_all(std::slice::from_ref(byte)).is_err() || closed_within(&mut s, Duration::from_millis(200)) {
            cut = true;
            break;
        }
    }
    assert!(cut, "the connection outlived a {}-byte trickle", query.len());
    assert!(started.elapsed() < Duration::from_secs(6), "cut after {:?}", started.elapsed());
}

#[test]
fn a_client_that_pipelines_and_never_reads_is_disconnected() {
    let d = Daemon::start(
        &big_catalog("big", 120),
        &["--tcp-write-timeout", "500ms", "--tcp-idle-timeout", "60s", "--tcp-max-per-client", "1000"],
    );
    // Large answers (120 SRV records and their addresses) into a small receive window.
    let mut hog = connect("127.0.0.1", d.addr, Some(4096));
    hog.set_nonblocking(true).unwrap();
    let query = framed(7, "big.service.consul", RecordType::SRV);
    let started = Instant::now();
    let (mut sent, mut offset) = (0usize, 0usize);
    let disconnected = loop {
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        match hog.write(&query[offset..]) {
            Ok(n) => {
                offset += n;
                if offset == query.len() {
                    (sent, offset) = (sent + 1, 0);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if !still_open(hog.as_raw_fd()) {
                    break true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => break true, // reset or broken pipe: the server hung up
        }
    };
    assert!(disconnected, "still connected after {sent} pipelined queries and {:?}", started.elapsed());
    // Others are served all along.
    assert_eq!(query_tcp_from("127.0.0.2", d.addr, "big.service.consul", RecordType::SRV).answers().len(), 120);
}

#[test]
fn pipelined_queries_split_anywhere_are_answered_in_order() {
    let d = Daemon::start(CATALOG, &[]);
    let mut stream = connect("127.0.0.1", d.addr, None);
    let mut bytes = Vec::new();
    for id in 0..200u16 {
        bytes.extend_from_slice(&framed(id, "web.service.consul", RecordType::A));
        if id == 100 {
            // A 3,000-byte message that is a response (QR set): dropped without a reply, and
            // larger than the connection's first read buffer.
            let mut junk = vec![0u8; 3000];
            junk[2] = 0x80;
            bytes.extend_from_slice(&(junk.len() as u16).to_be_bytes());
            bytes.extend_from_slice(&junk);
        }
    }
    // Written in uneven pieces: lengths and messages split across writes.
    let mut rng = fastrand::Rng::with_seed(3);
    let mut at = 0;
    while at < bytes.len() {
        let n = rng.usize(1..700).min(bytes.len() - at);
        stream.write_all(&bytes[at..at + n]).unwrap();
        at += n;
        if rng.bool() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for id in 0..200u16 {
        let reply = read_framed(&mut stream).unwrap_or_else(|| panic!("reply {id}"));
        assert_eq!(u16::from_be_bytes([reply[0], reply[1]]), id, "replies come in the queries' order");
    }
}

#[test]
fn zero_tcp_timeouts_are_refused_with_the_key_named() {
    for key in ["--tcp-idle-timeout", "--tcp-write-timeout"] {
        let (code, _, stderr) = run_binary(&["--check-config", "--static", "builtin", key, "0"]);
        assert_ne!(code, Some(0), "{key} 0 accepted");
        assert!(stderr.contains(&key[2..].replace('-', "_")) && stderr.contains("must be above 0"), "{stderr}");
    }
}
