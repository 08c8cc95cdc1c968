//! DNS over TCP: 2-byte length framing, many queries per connection (S1.2), and limits that
//! keep one client from crowding out the others.
//!
//! Limits ([`TcpLimits`]): at most `max_connections` open, at most `max_per_client` from one
//! client prefix (an IPv4 address or an IPv6 /64 by default). A connection over either cap
//! closes the oldest idle connection of the same prefix (or of all) in its favour, as Knot and
//! Unbound do, rather than waiting in the kernel's accept queue; only when every connection
//! is in the middle of a query is the newcomer closed at once. A connection that has not
//! completed a query within `idle_timeout` of its last reply (or of its opening) is closed,
//! however slowly its bytes trickle in; a reply the client does not take within
//! `write_timeout` closes it too. What one connection can make the server hold is bounded: a
//! read buffer of one query, at most [`FLUSH_AT`] bytes of replies before they are written,
//! and the kernel buffers the listener sets ([`SOCKET_BUFFER`]).
//!
//! Speed: queries a client pipelines are read together (one `read` for as many as arrived),
//! answered in a row and their replies written with one `write`. A connection whose single
//! query is waiting when it is accepted (Kong's client opens one per lookup) is answered in the
//! accept loop itself and looked at again after the current burst of accepts: by then most
//! such clients have closed, and the connection ends without a task or a registration with the
//! runtime. Otherwise the first read and every write are tried on the socket at once; only when
//! it would block does the connection wait for the runtime's readiness event. Buffers live as
//! long as the connection: nothing is allocated per query.

pub(crate) mod registry;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

pub use crate::config::tcp::TcpLimits;
use crate::dns::answer::{Action, Scratch, Transport, respond};
use crate::dns::server::Shared;
use crate::telemetry::{self, dns::Proto};
use registry::{Caps, Registry};

/// Bytes of replies gathered before they are written, when a client pipelines many queries.
pub(crate) const FLUSH_AT: usize = 16 * 1024;
/// Send and receive buffer of every accepted socket (set on the listener, which they inherit;
/// Linux doubles it for its own bookkeeping).
pub(crate) const SOCKET_BUFFER: usize = 64 * 1024;
/// The read buffer a connection starts with; it grows only for a query that needs more.
const READ_BUFFER: usize = 2048;

/// The connection table `limits` describe.
pub(crate) fn registry(limits: &TcpLimits) -> Registry {
    Registry::new(Caps {
        total: limits.max_connections,
        per_client: limits.max_per_client,
        prefix_v4: limits.client_prefix_v4,
        prefix_v6: limits.client_prefix_v6,
    })
}

/// Most connections taken from the accept queue before the parked ones are looked at again.
const ACCEPT_BURST: usize = 64;

/// A connection answered in the accept loop, looked at again after the current burst: most
/// clients that open a connection per query have closed it by then, and it ends without ever
/// being registered with the runtime or given a task.
struct Parked {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: u32,
    input: Input,
}

/// Accepts connections until `cancel`, admitting each into `registry` (which may evict an idle
/// one for it). A connection whose only query has arrived is answered right here; the others,
/// and answered ones that stay open, are served on their own task.
pub(crate) async fn accept_loop(
    listener: AsyncFd<std::net::TcpListener>,
    shared: Shared,
    limits: TcpLimits,
    registry: Arc<Registry>,
    cancel: CancellationToken,
) {
    let ctx = Ctx { shared, limits, registry, cancel };
    let cancel = &ctx.cancel;
    let mut here = Inline { scratch: Scratch::default(), out: Vec::new(), pending: Vec::new() };
    let mut parked: Vec<Parked> = Vec::with_capacity(ACCEPT_BURST);
    loop {
        let mut guard = tokio::select! {
            _ = cancel.cancelled() => break,
            ready = listener.readable() => match ready {
                Ok(guard) => guard,
                Err(e) => {
                    warn!(error = %e, "TCP listener failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        for _ in 0..ACCEPT_BURST {
            let accepted = match guard.try_io(|l| l.get_ref().accept()) {
                Err(_would_block) => break, // readiness cleared: wait for the next connection
                Ok(accepted) => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if let Some(p) = admit(stream, peer, &ctx, &mut here) {
                        parked.push(p);
                    }
                }
                Err(e) => {
                    // Out of file descriptors, mostly: the queue waits in the kernel meanwhile.
                    warn!(error = %e, "TCP accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
        drop(guard);
        for p in parked.drain(..) {
            look_again(p, &ctx);
        }
        tokio::task::yield_now().await;
    }
}

/// What the accept loop and the connections' tasks share.
struct Ctx {
    shared: Shared,
    limits: TcpLimits,
    registry: Arc<Registry>,
    cancel: CancellationToken,
}

/// Buffers of the accept loop's own answers.
struct Inline {
    scratch: Scratch,
    out: Vec<u8>,
    pending: Vec<u8>,
}

/// Admits one accepted connection and answers its query if that is all it sent; returns it
/// parked, or `None` when it was handed to a task or closed.
fn admit(stream: std::net::TcpStream, peer: SocketAddr, ctx: &Ctx, here: &mut Inline) -> Option<Parked> {
    let (registry, shared) = (&ctx.registry, &ctx.shared);
    stream.set_nonblocking(true).ok()?;
    // What the client sent already: a connection with a query waiting is not idle, so a flood
    // of idle connections queued behind it cannot evict it before it is served.
    let mut input = Input::new();
    match (&stream).read(input.spare()) {
        Ok(0) => return None, // closed already
        Ok(n) => input.end = n,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
        Err(_) => return None,
    }
    let admitted = match registry.admit(peer.ip(), input.has_query()) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            debug!(%peer, ?refusal, "TCP connection closed at once: every connection is busy.");
            return None;
        }
    };
    if admitted.evicted {
        debug!(%peer, "An idle TCP connection was closed to make room for a new one.");
    }
    let mut p = Parked { stream, peer, slot: admitted.slot, input };
    if p.input.only_one_query() {
        let before = p.input.start;
        let (from, to) = p.input.next_query()?;
        let counters = telemetry::metrics().tcp();
        let started = Instant::now();
        here.pending.clear();
        match answer_one(shared, peer, &p.input.buf[from..to], &mut here.scratch, &mut here.out, &counters) {
            Answered::Reply { rcode, truncated, log } => {
                frame(&mut here.pending, &here.out);
                registry.idle(p.slot);
                let written = (&p.stream).write(&here.pending).unwrap_or(0);
                counters.responded(rcode, truncated, started.elapsed());
                if log {
                    telemetry::query_logged(Proto::Tcp, peer.ip(), &p.input.buf[from..to], Some(&here.out));
                }
                if written < here.pending.len() {
                    // The rest waits for the client on the connection's own task.
                    let rest = here.pending[written..].to_vec();
                    spawn(p, rest, ctx);
                    return None;
                }
            }
            Answered::Nothing => registry.idle(p.slot),
            Answered::Forward { .. } => p.input.start = before, // answered on its task, which may wait
            Answered::Panicked => {
                registry.release(p.slot);
                return None;
            }
        }
    }
    Some(p)
}

/// A parked connection after the burst: closed if the client closed, else given a task.
fn look_again(mut p: Parked, ctx: &Ctx) {
    let registry = &ctx.registry;
    if !p.input.has_query() {
        match (&p.stream).read(p.input.spare()) {
            Ok(0) => return registry.release(p.slot),
            Ok(n) => p.input.end += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(_) => return registry.release(p.slot),
        }
    }
    spawn(p, Vec::new(), ctx);
}

/// Serves a connection on its own task from where the accept loop left it.
fn spawn(p: Parked, pending: Vec<u8>, ctx: &Ctx) {
    let stream = match TcpStream::from_std(p.stream) {
        Ok(stream) => stream,
        Err(e) => {
            debug!(peer = %p.peer, error = %e, "A TCP connection could not be registered.");
            return ctx.registry.release(p.slot);
        }
    };
    let (shared, registry) = (ctx.shared.clone(), Arc::clone(&ctx.registry));
    let (limits, cancel) = (ctx.limits, ctx.cancel.clone());
    tokio::spawn(async move {
        let held = Held { registry: &registry, slot: p.slot };
        let mut conn = Connection::new(stream, p.input, p.peer, &shared, &limits, &registry, p.slot);
        conn.pending = pending;
        if let Err(e) = conn.serve(&cancel).await {
            debug!(peer = %p.peer, error = %e, "TCP connection ended with an error.");
        }
        drop(held);
    });
}

fn frame(pending: &mut Vec<u8>, reply: &[u8]) {
    pending.extend_from_slice(&(reply.len() as u16).to_be_bytes());
    pending.extend_from_slice(reply);
}

/// What answering one query gave.
enum Answered {
    /// `out` holds the reply; `log`: the query log samples it.
    Reply { rcode: u16, truncated: bool, log: bool },
    /// Not ours: relay it (only a task may wait for that).
    Forward { qtype: u16 },
    /// No reply (a response, a runt).
    Nothing,
    /// A bug; the connection is closed.
    Panicked,
}

fn answer_one(
    shared: &Shared,
    peer: SocketAddr,
    query: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
    counters: &telemetry::dns::SharedCounters,
) -> Answered {
    let snapshot = shared.catalog.load();
    let settings = shared.settings.load();
    let client = settings.acl.access(peer.ip());
    let log = !settings.query_log.is_off() && settings.query_log.hit(&mut fastrand::Rng::new());
    let answered =
        catch_unwind(AssertUnwindSafe(|| respond(query, &snapshot, &settings, Transport::Tcp, client, scratch, out)));
    match answered {
        Ok(Action::Reply(o)) if !out.is_empty() => {
            counters.request(o.qtype);
            Answered::Reply { rcode: o.rcode, truncated: o.truncated, log }
        }
        Ok(Action::Reply(o)) => {
            counters.request(o.qtype);
            Answered::Nothing
        }
        Ok(Action::Forward(o)) => Answered::Forward { qtype: o.qtype },
        Ok(Action::Ignore) => Answered::Nothing,
        Err(_) => {
            error!(len = query.len(), "Answering a TCP query panicked; connection closed.");
            *scratch = Scratch::default();
            Answered::Panicked
        }
    }
}

/// Gives the slot back however the task ends (a panic included).
struct Held<'a> {
    registry: &'a Registry,
    slot: u32,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.registry.release(self.slot);
    }
}

/// Bytes read from the client, holding zero or more complete queries and perhaps a partial one.
struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    fn new() -> Input {
        Input { buf: Vec::new(), start: 0, end: 0 }
    }

    /// The next complete query, taken out of the buffer.
    fn next_query(&mut self) -> Option<(usize, usize)> {
        let have = &self.buf[self.start..self.end];
        let len = usize::from(u16::from_be_bytes([*have.first()?, *have.get(1)?]));
        if have.len() < 2 + len {
            return None;
        }
        let at = self.start + 2;
        self.start = at + len;
        Some((at, at + len))
    }

    /// Whether the buffer holds exactly one complete query and nothing else.
    fn only_one_query(&self) -> bool {
        match &self.buf[self.start..self.end] {
            [a, b, rest @ ..] => rest.len() == usize::from(u16::from_be_bytes([*a, *b])),
            _ => false,
        }
    }

    fn has_query(&self) -> bool {
        let have = &self.buf[self.start..self.end];
        match have {
            [a, b, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*a, *b])),
            _ => false,
        }
    }

    /// Room to read into, enough for the query being received.
    fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.buf.len() > READ_BUFFER {
                // Back to the usual size after one large query.
                self.buf = Vec::new();
            }
        }
        let have = &self.buf[self.start..self.end];
        let needed = match have {
            [a, b, ..] => 2 + usize::from(u16::from_be_bytes([*a, *b])),
            _ => 2,
        };
        if self.start + needed > self.buf.len() || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buf.len() < needed.max(READ_BUFFER) {
            self.buf.resize(needed.max(READ_BUFFER), 0);
        }
        &mut self.buf[self.end..]
    }
}

/// Why a connection stopped waiting for its client.
enum Wait {
    /// Bytes arrived.
    Read(usize),
    /// The client closed, the idle timeout passed, the connection was evicted or the server
    /// is stopping.
    End,
}

struct Connection<'a> {
    stream: TcpStream,
    peer: SocketAddr,
    shared: &'a Shared,
    limits: &'a TcpLimits,
    registry: &'a Registry,
    slot: u32,
    input: Input,
    /// Framed replies not written yet.
    pending: Vec<u8>,
    /// One reply as `respond` writes it.
    out: Vec<u8>,
    scratch: Scratch,
}

impl<'a> Connection<'a> {
    fn new(
        stream: TcpStream,
        input: Input,
        peer: SocketAddr,
        shared: &'a Shared,
        limits: &'a TcpLimits,
        registry: &'a Registry,
        slot: u32,
    ) -> Connection<'a> {
        Connection {
            stream,
            peer,
            shared,
            limits,
            registry,
            slot,
            input,
            pending: Vec::new(),
            out: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// Serves queries until the client closes, the idle or write timeout passes, the
    /// connection is evicted or the server stops. A query in hand when stopping starts is
    /// answered first; relayed ones are awaited here.
    async fn serve(&mut self, cancel: &CancellationToken) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.flush().await?;
        }
        loop {
            let deadline = tokio::time::Instant::now() + self.limits.idle_timeout;
            while !self.input.has_query() {
                match self.read(deadline, cancel).await? {
                    Wait::Read(n) => self.input.end += n,
                    Wait::End => return Ok(()),
                }
            }
            self.registry.slot(self.slot).busy();
            self.answer_all().await?;
            // Idle from before the replies go out: a client that has its reply may open its
            // next connection at once, and finds this one evictable.
            self.registry.idle(self.slot);
            self.flush().await?;
        }
    }

    /// Reads what has arrived: at once if the socket holds bytes, else after waiting for them
    /// until `deadline`.
    async fn read(&mut self, deadline: tokio::time::Instant, cancel: &CancellationToken) -> io::Result<Wait> {
        // A query begun is received and answered even when stopping has started.
        let may_stop = self.input.start == self.input.end;
        let spare = self.input.spare();
        match (&*SockRef::from(&self.stream)).read(spare) {
            Ok(0) => return Ok(Wait::End),
            Ok(n) => return Ok(Wait::Read(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Wait::Read(0)),
            Err(e) => return Err(e),
        }
        let slot = self.registry.slot(self.slot);
        let evicted = slot.evicted_signal();
        tokio::pin!(evicted);
        evicted.as_mut().enable();
        if slot.evicted() {
            return Ok(Wait::End);
        }
        let stream = &self.stream;
        let read = async {
            loop {
                stream.readable().await?;
                match stream.try_read(spare) {
                    Ok(n) => return Ok(n),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled(), if may_stop => Ok(Wait::End),
            _ = &mut evicted => Ok(Wait::End),
            read = tokio::time::timeout_at(deadline, read) => match read {
                Err(_) => Ok(Wait::End), // idle too long
                Ok(Ok(0)) => Ok(Wait::End),
                Ok(Ok(n)) => Ok(Wait::Read(n)),
                Ok(Err(e)) => Err(e),
            },
        }
    }

    /// Answers the complete queries in the buffer (until [`FLUSH_AT`] bytes of replies wait).
    async fn answer_all(&mut self) -> io::Result<()> {
        let counters = telemetry::metrics().tcp();
        while self.pending.len() < FLUSH_AT {
            let Some((from, to)) = self.input.next_query() else { break };
            let started = Instant::now();
            let query = &self.input.buf[from..to];
            let (rcode, truncated, log) =
                match answer_one(self.shared, self.peer, query, &mut self.scratch, &mut self.out, &counters) {
                    Answered::Reply { rcode, truncated, log } => (rcode, truncated, log),
                    Answered::Nothing => continue,
                    Answered::Panicked => return Err(io::Error::other("answering a query panicked")),
                    Answered::Forward { qtype } => {
                        counters.request(qtype);
                        counters.forwarded();
                        let settings = self.shared.settings.load_full();
                        self.shared.forwarder.resolve(query, Transport::Tcp, &settings, &mut self.out).await;
                        match self.out.get(..4) {
                            Some(header) => (u16::from(header[3] & 0x0F), header[2] & 0x02 != 0, false),
                            None => continue,
                        }
                    }
                };
            if self.out.is_empty() {
                continue;
            }
            frame(&mut self.pending, &self.out);
            counters.responded(rcode, truncated, started.elapsed());
            if log {
                telemetry::query_logged(Proto::Tcp, self.peer.ip(), query, Some(&self.out));
            }
        }
        Ok(())
    }

    /// Writes the pending replies: at once when the socket takes them, else within the write
    /// timeout (or the connection ends with an error).
    async fn flush(&mut self) -> io::Result<()> {
        let mut done = 0;
        match (&*SockRef::from(&self.stream)).write(&self.pending) {
            Ok(n) => done = n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
        if done < self.pending.len() {
            let (stream, pending) = (&self.stream, &self.pending);
            let rest = async {
                while done < pending.len() {
                    stream.writable().await?;
                    match stream.try_write(&pending[done..]) {
                        Ok(n) => done += n,
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            };
            match tokio::time::timeout(self.limits.write_timeout, rest).await {
                Ok(written) => written?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took no reply within the write timeout",
                    ));
                }
            }
        }
        self.pending.clear();
        Ok(())
    }
}
