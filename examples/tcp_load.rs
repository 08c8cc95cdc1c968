//! TCP load and abuse generator for `bench/tcp.sh` (any DNS server, loopback only).
//!
//! ```text
//! tcp_load fresh ADDR QUERIES SECONDS CONCURRENCY   one new connection per query (as Kong's client)
//! tcp_load idle  ADDR CONNECTIONS PROBES            hold idle connections, then time fresh queries
//! tcp_load drip  ADDR CONNECTIONS PERIOD SECONDS    each connection sends one query per PERIOD s;
//!                                                   a fresh query is timed every second meanwhile
//! tcp_load hog   ADDR QUERIES SECONDS               pipeline queries on one connection, never read;
//!                                                   report when the server hangs up
//! ```
//!
//! QUERIES is a dnsperf query file (`name TYPE` per line) or, for `hog`, a count of copies of a
//! large ANY question. Fresh queries ("probes") come from `PROBE_FROM` (default 127.0.0.2: a
//! different client than the attacking connections, which come from 127.0.0.1) and give up after
//! 20 s, as a resolver would. Every result is one `key value` line on stdout.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use consul_dns::wire;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcp_load: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let arg = |i: usize, what: &str| args.get(i).ok_or_else(|| format!("missing {what} (see the comment at the top)"));
    let num = |i: usize, what: &str| -> Result<u64, String> {
        arg(i, what)?.parse().map_err(|_| format!("{what} must be a whole number, not {:?}", args[i]))
    };
    let addr: SocketAddr = arg(1, "ADDR")?.parse().map_err(|_| format!("ADDR must be IP:PORT, not {:?}", args[1]))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address; this tool only loads loopback"));
    }
    raise_fd_limit();
    match arg(0, "mode")?.as_str() {
        "fresh" => fresh(addr, &read_queries(arg(2, "QUERIES")?)?, num(3, "SECONDS")?, num(4, "CONCURRENCY")?),
        "idle" => idle(addr, num(2, "CONNECTIONS")?, num(3, "PROBES")?),
        "drip" => drip(addr, num(2, "CONNECTIONS")?, num(3, "PERIOD")?, num(4, "SECONDS")?),
        "hog" => hog(addr, num(2, "QUERIES")?, num(3, "SECONDS")?),
        other => Err(format!("unknown mode {other:?}: fresh, idle, drip or hog")),
    }
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A query with its 2-byte length prefix.
fn framed_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut p = vec![0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    wire::push_name(name, &mut p).map_err(|e| format!("bad name {name:?}: {e}"))?;
    wire::push_u16(qtype, &mut p);
    wire::push_u16(1, &mut p);
    let len = (p.len() - 2) as u16;
    p[..2].copy_from_slice(&len.to_be_bytes());
    Ok(p)
}

fn qtype(text: &str) -> Option<u16> {
    Some(match text {
        "A" => wire::rtype::A,
        "AAAA" => wire::rtype::AAAA,
        "SRV" => wire::rtype::SRV,
        "ANY" => 255,
        _ => return None,
    })
}

fn read_queries(path: &str) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(t)) = (words.next(), words.next()) else { continue };
        let t = qtype(t).ok_or_else(|| format!("{path} line {}: unknown type {t:?}", i + 1))?;
        out.push(framed_query(i as u16, name, t)?);
    }
    if out.is_empty() {
        return Err(format!("{path} holds no queries"));
    }
    Ok(out)
}

/// Reads one length-prefixed reply into `buf`.
fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    buf.resize(u16::from_be_bytes(len) as usize, 0);
    stream.read_exact(buf)
}

fn connect_from(from: IpAddr, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SockAddr::from(SocketAddr::new(from, 0)))?;
    socket.connect_timeout(&addr.into(), timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn probe_from() -> IpAddr {
    std::env::var("PROBE_FROM").ok().and_then(|a| a.parse().ok()).unwrap_or(IpAddr::from([127, 0, 0, 2]))
}

/// One fresh connection, one query, its answer: the time it took, or why it failed.
fn probe(addr: SocketAddr, query: &[u8]) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = connect_from(probe_from(), addr, PROBE_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    let left = PROBE_TIMEOUT.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    stream.write_all(query).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    read_reply(&mut stream, &mut buf).map_err(|e| format!("read: {e}"))?;
    Ok(started.elapsed())
}

fn fresh(addr: SocketAddr, queries: &[Vec<u8>], seconds: u64, concurrency: u64) -> Result<(), String> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(queries.to_vec());
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrency.max(1))
        .map(|t| {
            let (done, errors, stop, queries) = (done.clone(), errors.clone(), stop.clone(), queries.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::with_capacity(4096);
                let mut i = t as usize * 7919;
                while !stop.load(Ordering::Relaxed) {
                    let q = &queries[i % queries.len()];
                    i += 1;
                    let ok = TcpStream::connect(addr).and_then(|mut s| {
                        s.set_nodelay(true)?;
                        s.set_read_timeout(Some(Duration::from_secs(2)))?;
                        s.write_all(q)?;
                        read_reply(&mut s, &mut buf)
                    });
                    match ok {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let completed = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    println!("completed {completed}");
    println!("errors {}", errors.load(Ordering::Relaxed));
    println!("qps {:.0}", completed as f64 / elapsed);
    Ok(())
}

/// Opens `n` connections from 127.0.0.1 without waiting for the handshakes (a server that
/// stops accepting leaves the rest in the kernel's queues, as against a real attacker).
fn open_idle(addr: SocketAddr, n: u64) -> Result<Vec<Socket>, String> {
    let mut sockets = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        match s.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(format!("connection {} failed: {e}", sockets.len() + 1)),
        }
        sockets.push(s);
    }
    Ok(sockets)
}

fn default_probe_query() -> Result<Vec<u8>, String> {
    framed_query(7, &std::env::var("PROBE_NAME").unwrap_or_else(|_| "svc0.service.consul".into()), wire::rtype::SRV)
}

fn report_probes(mut times: Vec<f64>, failed: u64) {
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let max = times.last().copied().unwrap_or(f64::NAN);
    println!("probes_answered {}", times.len());
    println!("probes_failed {failed}");
    println!("probe_median_ms {median:.1}");
    println!("probe_max_ms {max:.1}");
}

fn idle(addr: SocketAddr, n: u64, probes: u64) -> Result<(), String> {
    let query = default_probe_query()?;
    let sockets = open_idle(addr, n)?;
    // Let the handshakes the server takes complete.
    std::thread::sleep(Duration::from_millis(500));
    let (mut times, mut failed) = (Vec::new(), 0);
    for _ in 0..probes {
        match probe(addr, &query) {
            Ok(t) => times.push(t.as_secs_f64() * 1e3),
            Err(e) => {
                eprintln!("probe failed: {e}");
                failed += 1;
            }
        }
    }
    let alive = sockets.iter().filter(|s| still_open(s.as_raw_fd())).count();
    println!("idle_connections {n}");
    println!("idle_still_open {alive}");
    report_probes(times, failed);
    Ok(())
}

/// Whether the peer has neither closed nor reset the connection.
fn still_open(fd: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 0 || p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) == 0
}

fn drip(addr: SocketAddr, n: u64, period: u64, seconds: u64) -> Result<(), String> {
    let query = default_probe_query()?;
    let stop = Arc::new(AtomicBool::new(false));
    let reconnects = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (stop, reconnects, query) = (stop.clone(), reconnects.clone(), query.clone());
        std::thread::spawn(move || {
            let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
            let gap = Duration::from_secs(period.max(1)).div_f64(n.max(1) as f64);
            let mut sink = [0u8; 4096];
            let mut next = Instant::now();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let slot = &mut conns[i % n as usize];
                i += 1;
                if slot.is_none() {
                    *slot = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok().inspect(|s| {
                        let _ = s.set_nonblocking(true);
                    });
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(s) = slot {
                    // Drain replies; a closed or reset connection is opened again next time.
                    let alive = loop {
                        match s.read(&mut sink) {
                            Ok(0) => break false,
                            Ok(_) => continue,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                            Err(_) => break false,
                        }
                    };
                    if !alive || s.write_all(&query).is_err() {
                        *slot = None;
                    }
                }
                next += gap;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    let started = Instant::now();
    let (mut times, mut failed) = (Vec::new(), 0);
    // Let the connections build up for one period before probing.
    std::thread::sleep(Duration::from_secs(period.min(seconds)));
    while started.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        match probe(addr, &query) {
            Ok(t) => times.push(t.as_secs_f64() * 1e3),
            Err(e) => {
                eprintln!("probe failed: {e}");
                failed += 1;
            }
        }
        if let Some(wait) = Duration::from_secs(1).checked_sub(tick.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = attacker.join();
    println!("drip_connections {n}");
    println!("drip_connects {}", reconnects.load(Ordering::Relaxed));
    report_probes(times, failed);
    Ok(())
}

fn hog(addr: SocketAddr, count: u64, seconds: u64) -> Result<(), String> {
    let mut query = framed_query(9, "svc0.service.consul", 255)?;
    // An EDNS OPT record (4096 bytes) makes the answer as large as the server will give.
    query.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    query[11] = 1; // ARCOUNT
    let len = (query.len() - 2) as u16;
    query[..2].copy_from_slice(&len.to_be_bytes());
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let fd = stream.as_raw_fd();
    let started = Instant::now();
    let limit = Duration::from_secs(seconds);
    let (mut sent, mut offset) = (0u64, 0usize);
    let mut last_write = started;
    while started.elapsed() < limit {
        if sent < count {
            match stream.write(&query[offset..]) {
                Ok(k) => {
                    offset += k;
                    last_write = Instant::now();
                    if offset == query.len() {
                        (sent, offset) = (sent + 1, 0);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        if !still_open(fd) {
            break;
        }
        let mut p = libc::pollfd { fd, events: libc::POLLRDHUP | libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 50) };
    }
    let open = still_open(fd);
    println!("hog_queries_sent {sent}");
    println!("hog_seconds_since_last_write {:.1}", last_write.elapsed().as_secs_f64());
    if open {
        println!("hog_still_connected_after_s {:.1}", started.elapsed().as_secs_f64());
    } else {
        println!("hog_disconnected_after_s {:.1}", started.elapsed().as_secs_f64());
    }
    Ok(())
}
