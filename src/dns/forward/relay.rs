//! The hand-off from the UDP worker threads to tokio: a worker must never wait for an upstream
//! (design.md, "hot path"), so it queues the packet with the peer and its socket and goes back
//! to `recv_from`; a tokio task relays the question and sends the reply from that socket.
//!
//! The queue is bounded ([`QUEUE`]) and so is the number of questions being relayed at once
//! ([`IN_FLIGHT`]): when upstreams are slow, the queue fills and [`UdpRelay::submit`] fails at
//! once, and the worker sends the SERVFAIL that `respond` prepared. Nothing grows without
//! bound and nothing blocks a worker.
//!
//! One client address may hold at most [`PER_CLIENT`] of those places (queued or in flight),
//! so one busy or hostile client among those allowed to recurse cannot fill the queue for
//! everyone else: its extra questions get that SERVFAIL. The counts live in a fixed table of
//! atomics hashed by address; addresses that collide share a count, which can only refuse
//! them sooner.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use arc_swap::ArcSwap;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Forwarder;
use crate::dns::Settings;
use crate::dns::answer::Transport;
use crate::telemetry;

/// Questions waiting for a relay task.
pub const QUEUE: usize = 1024;
/// Questions being relayed at once.
pub const IN_FLIGHT: usize = 1024;
/// Questions one client address may have queued or in flight at once.
pub const PER_CLIENT: u32 = 64;
/// Counts in the per-client table.
const CLIENT_SLOTS: usize = 4096;

#[derive(Debug)]
struct Job {
    packet: Box<[u8]>,
    peer: SocketAddr,
    socket: Arc<UdpSocket>,
    _held: Held,
}

/// How many questions each client address has in the relay, by hashed address.
#[derive(Debug)]
struct Clients {
    counts: Box<[AtomicU32]>,
    key: u64,
    limit: u32,
}

/// One place taken by a client; given back when dropped (answered, refused, or shut down).
#[derive(Debug)]
struct Held {
    clients: Arc<Clients>,
    slot: usize,
}

impl Clients {
    fn new(limit: u32) -> Clients {
        Clients { counts: (0..CLIENT_SLOTS).map(|_| AtomicU32::new(0)).collect(), key: fastrand::u64(..), limit }
    }

    fn slot(&self, ip: IpAddr) -> usize {
        let bits = match ip.to_canonical() {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                (bits as u64) ^ ((bits >> 64) as u64).rotate_left(31)
            }
        };
        let mixed = (bits ^ self.key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - CLIENT_SLOTS.trailing_zeros())) as usize
    }

    /// Takes a place for `ip`, unless it holds `limit` already.
    fn hold(self: &Arc<Clients>, ip: IpAddr) -> Option<Held> {
        let slot = self.slot(ip);
        if self.counts[slot].fetch_add(1, Relaxed) >= self.limit {
            self.counts[slot].fetch_sub(1, Relaxed);
            return None;
        }
        Some(Held { clients: Arc::clone(self), slot })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.clients.counts[self.slot].fetch_sub(1, Relaxed);
    }
}

/// The sending side, one clone per UDP worker.
#[derive(Debug, Clone)]
pub struct UdpRelay {
    jobs: mpsc::Sender<Job>,
    clients: Arc<Clients>,
}

impl UdpRelay {
    /// Starts the task that takes jobs off the queue (inside a tokio runtime). It stops when
    /// `cancel` fires or every [`UdpRelay`] is dropped; questions in flight then finish on their
    /// own, bounded by the recursor timeouts.
    pub fn start(
        forwarder: Arc<Forwarder>,
        settings: Arc<ArcSwap<Settings>>,
        cancel: CancellationToken,
    ) -> (UdpRelay, JoinHandle<()>) {
        UdpRelay::with_limits(forwarder, settings, cancel, QUEUE, IN_FLIGHT, PER_CLIENT)
    }

    fn with_limits(
        forwarder: Arc<Forwarder>,
        settings: Arc<ArcSwap<Settings>>,
        cancel: CancellationToken,
        queue: usize,
        in_flight: usize,
        per_client: u32,
    ) -> (UdpRelay, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue);
        let dispatch = dispatch(rx, forwarder, settings, cancel, in_flight);
        let clients = Arc::new(Clients::new(per_client));
        (UdpRelay { jobs: tx, clients }, crate::supervise::spawn("forward_relay", dispatch))
    }

    /// Queues `packet` from `peer`; its reply will leave from `socket`. `false` when the queue
    /// is full or stopped, or `peer` has [`PER_CLIENT`] questions in already: the caller
    /// answers by itself. Never blocks; copies the packet.
    pub fn submit(&self, packet: &[u8], peer: SocketAddr, socket: &Arc<UdpSocket>) -> bool {
        let Some(held) = self.clients.hold(peer.ip()) else { return false };
        let job = Job { packet: packet.into(), peer, socket: Arc::clone(socket), _held: held };
        self.jobs.try_send(job).is_ok()
    }
}

async fn dispatch(
    mut jobs: mpsc::Receiver<Job>,
    forwarder: Arc<Forwarder>,
    settings: Arc<ArcSwap<Settings>>,
    cancel: CancellationToken,
    in_flight: usize,
) {
    let in_flight = Arc::new(Semaphore::new(in_flight));
    loop {
        let job = tokio::select! {
            _ = cancel.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (forwarder, settings) = (Arc::clone(&forwarder), settings.load_full());
        tokio::spawn(async move {
            let _permit = permit;
            let started = std::time::Instant::now();
            let mut out = Vec::new();
            forwarder.resolve(&job.packet, Transport::Udp, &settings, &mut out).await;
            // A blocking std socket (shared with its worker thread), but a UDP send only waits
            // when the kernel's send buffer is full, and then briefly.
            if out.len() < 4 {
                return;
            }
            if let Err(e) = job.socket.send_to(&out, job.peer) {
                debug!(peer = %job.peer, error = %e, "UDP send of a relayed answer failed.");
                return;
            }
            let (rcode, truncated) = (u16::from(out[3] & 0x0F), out[2] & 0x02 != 0);
            telemetry::metrics().udp_relay().responded(rcode, truncated, started.elapsed());
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dns::forward::Recursion;
    use crate::dns::message::tests::query;
    use crate::dns::name::DomainName;
    use crate::wire::rtype;

    fn silent_settings(silent: SocketAddr) -> Arc<ArcSwap<Settings>> {
        let mut settings = Settings::new(DomainName::new("consul.").unwrap());
        settings.recursion =
            Recursion { upstreams: vec![silent], timeout: Duration::from_millis(300), ..Recursion::default() };
        Arc::new(ArcSwap::from_pointee(settings))
    }

    #[tokio::test]
    async fn full_queue_refuses_at_once_and_relayed_answers_reach_the_client() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap(); // never read: an upstream that never answers
        let settings = silent_settings(silent.local_addr().unwrap());
        let cancel = CancellationToken::new();
        let (relay, task) = UdpRelay::with_limits(Arc::new(Forwarder::default()), settings, cancel.clone(), 1, 1, 64);
        let server = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = client.local_addr().unwrap();
        let packet = query("kong-database", rtype::A, None);
        let mut accepted = 0;
        for _ in 0..10 {
            if relay.submit(&packet, peer, &server) {
                accepted += 1;
            }
            tokio::task::yield_now().await;
        }
        assert!((1..=3).contains(&accepted), "one in flight, one waiting for it, one queued: {accepted}");
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (reply, from) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 512];
            let (len, from) = client.recv_from(&mut buf).expect("the relayed question is answered");
            buf.truncate(len);
            (buf, from)
        })
        .await
        .unwrap();
        assert_eq!(from, server.local_addr().unwrap(), "from the socket the question came to");
        assert_eq!((&reply[..2], reply[3] & 0x0F), (&packet[..2], 2), "same ID, SERVFAIL (the upstream is silent)");
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn one_client_holds_at_most_its_share_and_gets_it_back_when_answered() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let settings = silent_settings(silent.local_addr().unwrap());
        let cancel = CancellationToken::new();
        let (relay, task) =
            UdpRelay::with_limits(Arc::new(Forwarder::default()), settings, cancel.clone(), 100, 100, 5);
        let server = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let (busy, other) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.2:0").unwrap());
        let packet = query("kong-database", rtype::A, None);
        let accepted = (0..20).filter(|_| relay.submit(&packet, busy.local_addr().unwrap(), &server)).count();
        assert_eq!(accepted, 5, "one address holds at most its share");
        assert!(relay.submit(&packet, other.local_addr().unwrap(), &server), "another client still gets in");
        busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let answered = tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 512];
            (0..5).filter(|_| busy.recv(&mut buf).is_ok()).count()
        })
        .await
        .unwrap();
        assert_eq!(answered, 5, "each held question is answered (SERVFAIL: the upstream is silent)");
        let peer = "127.0.0.1:9".parse().unwrap(); // the busy client's address, another port
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !relay.submit(&packet, peer, &server) {
            // a place comes back once its task has sent the reply and ended
            assert!(std::time::Instant::now() < deadline, "answered questions give their places back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        task.await.unwrap();
    }
}
