//! Sockets: UDP worker threads and the TCP listener, all answering through
//! [`crate::dns::answer::respond`] from the snapshot current at that moment.
//!
//! UDP is our own loop (design.md, "hot path"): one OS thread per worker, each with its own
//! receive buffer, response buffer and shuffle state, no task or allocation per packet. With a
//! fixed port and several workers each worker gets its own socket in an `SO_REUSEPORT` group;
//! with port 0 (tests) the workers share one socket, because the kernel may hand a port-0
//! `SO_REUSEPORT` bind a port another process already holds. TCP runs on tokio
//! ([`crate::dns::tcp`]: framing, connection limits, eviction, timeouts).
//!
//! Questions for the recursors ([`Action::Forward`]) never hold a UDP worker: it queues them on
//! the [`UdpRelay`] (or, when that is full, sends the SERVFAIL `respond` prepared). A TCP
//! connection awaits the [`Forwarder`] in place.
//!
//! Every UDP reply a worker is about to send is screened by the response-rate limit
//! ([`crate::dns::rrl`]) with the batch's clock reading: sent, slipped (cut to header and
//! question with TC) or dropped. TCP replies are not rate limited.
//!
//! Metrics: each UDP worker counts into its own shard ([`crate::telemetry::dns`]) and reads the
//! clock twice per batch, after `recvmmsg` and after `sendmmsg`; every reply of a batch is
//! observed with the batch's time, which is the time its query spent in the server. Sampled
//! queries (`query_log_sample`) are logged after the batch's replies went out.
//!
//! Stopping ([`Running::stop`]): the UDP workers finish their batch, the TCP listeners close,
//! and connections finish the query in hand (a relayed one included) within [`TCP_DRAIN`].

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::dns::tcp::registry::Registry;
use crate::dns::tcp::{self as tcp, TcpLimits};

use crate::catalog::Catalog;
use crate::dns::Settings;
use crate::dns::answer::{Action, Scratch, Transport, respond};
use crate::dns::forward::Forwarder;
use crate::dns::forward::relay::UdpRelay;
use crate::dns::rrl::{self, Limiter, Screened};
use crate::dns::udp_batch::{BATCH, Batch};
use crate::telemetry::{self, dns::Proto};

/// How long a UDP worker blocks before looking at the stop flag.
const UDP_POLL: Duration = Duration::from_millis(200);
/// How often a port-0 bind is retried when TCP cannot take the port UDP got.
const BIND_ATTEMPTS: usize = 16;
/// How long stopping waits for TCP connections to finish the query in hand. A relayed query
/// takes at most 5 s (`forward::MAX_TOTAL`) with the default timeouts.
pub const TCP_DRAIN: Duration = Duration::from_secs(5);
// Sampled UDP queries are remembered as bits of a u32.
const _: () = assert!(BATCH <= 32);

/// Why the DNS sockets could not be set up.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Another process holds the address.
    #[error(
        "cannot listen on {addr} ({proto}): another process already uses that port (often a Consul \
         agent, whose DNS interface listens on port 8600 by default). Stop it, or choose another \
         address with --listen (`listen` in the configuration file)."
    )]
    PortTaken {
        /// "UDP" or "TCP".
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// Another bind failure.
    #[error("cannot listen on {addr} ({proto}): {cause}{hint}", hint = permission_hint(cause, addr))]
    Bind {
        /// "UDP" or "TCP".
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error (not a `source`: the message already says it once).
        cause: io::Error,
    },
}

impl ServerError {
    fn bind(proto: &'static str, addr: SocketAddr, cause: io::Error) -> ServerError {
        match cause.kind() {
            io::ErrorKind::AddrInUse => ServerError::PortTaken { proto, addr },
            _ => ServerError::Bind { proto, addr, cause },
        }
    }
}

fn permission_hint(cause: &io::Error, addr: &SocketAddr) -> &'static str {
    if cause.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024 {
        ". Ports below 1024 need root or the CAP_NET_BIND_SERVICE capability."
    } else {
        "."
    }
}

/// The bound sockets of one listen address.
#[derive(Debug)]
pub struct Bound {
    /// The address actually bound (port resolved).
    pub addr: SocketAddr,
    udp: Vec<UdpSocket>,
    tcp: StdTcpListener,
}

/// Binds UDP and TCP on every address: UDP first, then TCP on the port UDP resolved.
pub fn bind(addrs: &[SocketAddr], workers: usize) -> Result<Vec<Bound>, ServerError> {
    addrs.iter().map(|addr| bind_one(*addr, workers.max(1))).collect()
}

fn bind_one(addr: SocketAddr, workers: usize) -> Result<Bound, ServerError> {
    let udp_err = |cause| ServerError::bind("UDP", addr, cause);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let reuse_port = workers > 1 && addr.port() != 0;
        let first = udp_socket(addr, reuse_port).map_err(udp_err)?;
        let resolved = first.local_addr().map_err(udp_err)?;
        let tcp = match tcp_listener(resolved) {
            Ok(tcp) => tcp,
            Err(e) if addr.port() == 0 && attempt < BIND_ATTEMPTS && e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(cause) => return Err(ServerError::bind("TCP", resolved, cause)),
        };
        let mut udp = vec![first];
        for _ in 1..workers {
            let extra = if reuse_port { udp_socket(resolved, true) } else { udp[0].try_clone() };
            udp.push(extra.map_err(udp_err)?);
        }
        return Ok(Bound { addr: resolved, udp, tcp });
    }
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Bursts of queries should wait in the kernel rather than be dropped.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(UDP_POLL))?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<StdTcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Accepted sockets inherit these: replies go out without waiting for more (our writes are
    // already whole batches), and what one client can make us queue is bounded.
    socket.set_tcp_nodelay(true)?;
    let _ = socket.set_send_buffer_size(tcp::SOCKET_BUFFER);
    let _ = socket.set_recv_buffer_size(tcp::SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What every worker reads: the catalog, the (reloadable) DNS settings, and the forwarder.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The live catalog.
    pub catalog: Arc<Catalog>,
    /// DNS settings, swapped on reload.
    pub settings: Arc<ArcSwap<Settings>>,
    /// Relays questions outside the domain; holds their cache.
    pub forwarder: Arc<Forwarder>,
}

/// Running DNS service: UDP threads and TCP tasks. Stop it with [`Running::stop`].
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cancel: CancellationToken,
    connections: Arc<Registry>,
}

/// Starts the UDP workers and TCP acceptors on already-bound sockets, TCP within `limits`
/// (shared by every address). Must run inside a tokio runtime (for TCP).
pub fn start(bound: Vec<Bound>, shared: &Shared, limits: TcpLimits) -> io::Result<Running> {
    let stop = Arc::new(AtomicBool::new(false));
    let cancel = CancellationToken::new();
    let mut threads = Vec::new();
    let connections = Arc::new(tcp::registry(&limits));
    let (relay, relay_task) =
        UdpRelay::start(Arc::clone(&shared.forwarder), Arc::clone(&shared.settings), cancel.clone());
    let mut tasks = vec![relay_task];
    let rrl_table = Arc::new(rrl::Table::new()); // one per process: limits hold across workers
    for b in bound {
        info!(addr = %b.addr, udp_workers = b.udp.len(), "DNS listening.");
        for (i, socket) in b.udp.into_iter().enumerate() {
            let (shared, relay, stop) = (shared.clone(), relay.clone(), Arc::clone(&stop));
            let limiter = Limiter::new(Arc::clone(&rrl_table));
            let handle = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || udp_worker(socket, shared, relay, limiter, stop))?;
            threads.push(handle);
        }
        // SAFETY: the listener owns its descriptor, which stays open and the same for as long as
        // the AsyncFd that takes the listener exists.
        let listener = unsafe { AsyncFd::register_with_interest(b.tcp, Interest::READABLE) }?;
        let (shared, cancel, connections) = (shared.clone(), cancel.clone(), Arc::clone(&connections));
        let accept = tcp::accept_loop(listener, shared, limits, connections, cancel);
        tasks.push(crate::supervise::spawn("tcp_accept", accept));
    }
    Ok(Running { stop, threads, tasks, cancel, connections })
}

impl Running {
    /// Stops accepting, lets TCP connections finish the query in hand for up to [`TCP_DRAIN`]
    /// (and says whether they did), lets UDP workers finish their batch, waits for them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let open = self.connections.open();
        if self.connections.drained(TCP_DRAIN).await {
            info!(connections = open, "TCP connections drained.");
        } else {
            let cut = self.connections.open();
            warn!(connections = open, cut, drain_secs = TCP_DRAIN.as_secs(), "TCP drain timed out; connections cut.");
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// One UDP worker: take a batch of queries, answer each from the current snapshot (or hand it
/// to the relay for recursion), send the replies in one go, each screened by the rate limit
/// (S1.7). Nothing is allocated per packet.
fn udp_worker(socket: UdpSocket, shared: Shared, relay: UdpRelay, mut limiter: Limiter, stop: Arc<AtomicBool>) {
    let socket = Arc::new(socket); // shared with the relay tasks that answer from it
    let mut batch = Batch::new();
    let mut scratch = Scratch::default();
    let counters = telemetry::metrics().udp_worker();
    let mut rng = fastrand::Rng::new();
    while !stop.load(Ordering::Relaxed) {
        let received = match batch.receive(&socket) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                debug!(error = %e, "UDP receive failed.");
                continue;
            }
        };
        let started = Instant::now();
        let snapshot = shared.catalog.load();
        let settings = shared.settings.load();
        let mut sampled = 0u32; // bit i: log slot i once the replies are out
        for i in 0..received {
            let Some(peer) = batch.peer(i) else { continue };
            let client = settings.acl.access(peer.ip());
            let (Some(packet), reply) = batch.slot(i) else { continue };
            // A bug must cost one query, not a worker.
            let answered = catch_unwind(AssertUnwindSafe(|| {
                respond(packet, &snapshot, &settings, Transport::Udp, client, &mut scratch, reply)
            }));
            let send = match answered {
                Ok(Action::Reply(o)) => {
                    counters.answered(o.qtype, o.rcode, o.truncated);
                    true
                }
                Ok(Action::Forward(o)) if relay.submit(packet, peer, &socket) => {
                    counters.forwarded(o.qtype);
                    false
                }
                Ok(Action::Forward(o)) => {
                    counters.answered(o.qtype, o.rcode, o.truncated); // queue full: the prepared SERVFAIL
                    true
                }
                Ok(Action::Ignore) => false,
                Err(_) => {
                    error!(%peer, len = packet.len(), "Answering a UDP query panicked; query dropped.");
                    scratch = Scratch::default();
                    false
                }
            };
            let send = send
                && match limiter.screen(settings.rrl.as_ref(), peer.ip(), client, started, reply) {
                    Screened::Pass => true,
                    Screened::Slipped => {
                        counters.rate_limited(true);
                        true
                    }
                    Screened::Dropped => {
                        counters.rate_limited(false);
                        false
                    }
                };
            if !settings.query_log.is_off() && settings.query_log.hit(&mut rng) {
                sampled |= 1 << i;
            }
            batch.set_ready(i, send);
        }
        drop((snapshot, settings));
        let sent = batch.send(&socket, received);
        counters.observe(started.elapsed(), sent as u64);
        if sampled != 0 {
            log_sampled(&batch, sampled);
        }
    }
}

/// Writes the query log lines of a batch's sampled slots (their replies are out already).
fn log_sampled(batch: &Batch, mut sampled: u32) {
    while sampled != 0 {
        let i = sampled.trailing_zeros() as usize;
        sampled &= sampled - 1;
        if let (Some(peer), (Some(packet), reply)) = (batch.peer(i), batch.view(i)) {
            telemetry::query_logged(Proto::Udp, peer.ip(), packet, reply);
        }
    }
}
