//! Recursion: questions outside the domain, and reverse names the catalog does not know
//! (S3.8), relayed to upstream resolvers (S9, with S15's client ACL in [`crate::dns::acl`]).
//!
//! How one question is relayed ([`Forwarder::resolve`]):
//! 1. The cache ([`cache`]) answers if it can.
//! 2. The upstreams are tried in list order (`sequential`) or in a fresh random order per
//!    question (`random`), each with `recursor_timeout`. The question goes out as received
//!    (flags, OPT record) over the client's transport (S9.2), except for the ID: each attempt
//!    uses a random one, restored in the reply, because relayed answers are cached and shared
//!    and a client-chosen ID would leave only the source port against spoofed replies.
//! 3. The first reply with NOERROR or NXDOMAIN wins (S9.3); SERVFAIL, REFUSED, other rcodes,
//!    timeouts and network errors move on to the next upstream.
//! 4. A truncated UDP reply is asked again over TCP from the same upstream, within the same
//!    attempt's deadline; the complete answer is cached and sent if it fits the client's UDP
//!    budget. Otherwise the client gets a truncated reply (the upstream's, or an empty one
//!    with TC when that is too big for it), retries over TCP, and finds the cache filled.
//!    If the TCP retry fails, the upstream's TC reply is relayed as it is (Consul does the
//!    same, hashicorp/consul#2384).
//! 5. When every upstream failed: SERVFAIL with RA, the question, and an OPT record if the
//!    query had one (S9.4). That happens at the latest after `n × recursor_timeout`, and never
//!    later than [`MAX_TOTAL`] (or one timeout, if that is longer): clients such as Kong time
//!    out after about 2 s, and an answer after they gave up is worth nothing.
//!
//! Relayed answers keep the upstream's TTLs (S6.5). The UDP worker threads never wait for an
//! upstream: they hand the packet to [`relay`], which answers from a tokio task.

pub mod cache;
pub mod exchange;
pub mod host;
pub mod relay;

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::dns::Settings;
use crate::dns::answer::{self, Transport};
use crate::dns::message::{LowerName, Request};
use crate::telemetry::{self, UpstreamError};
use crate::wire::{self, flag, rcode};
use cache::Cache;

/// Default `recursor_timeout` (Consul's).
pub const DEFAULT_TIMEOUT: Duration = crate::config::DEFAULT_RECURSOR_TIMEOUT;
/// Longest a question waits for its upstreams in total (unless one timeout is longer).
pub const MAX_TOTAL: Duration = Duration::from_secs(5);

pub use crate::config::Strategy;

/// Where and how questions are relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recursion {
    /// Upstream resolvers; empty = recursion off (REFUSED outside the domain, S1.4).
    pub upstreams: Vec<SocketAddr>,
    /// Time allowed for one upstream to answer.
    pub timeout: Duration,
    /// Order of the upstreams.
    pub strategy: Strategy,
}

impl Default for Recursion {
    fn default() -> Self {
        Recursion { upstreams: Vec::new(), timeout: DEFAULT_TIMEOUT, strategy: Strategy::Sequential }
    }
}

impl Recursion {
    /// Whether there is anyone to relay to.
    pub fn is_enabled(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// The time allowed for one question, all attempts together.
    pub fn total_timeout(&self) -> Duration {
        let all = self.timeout.saturating_mul(self.upstreams.len().max(1) as u32);
        all.min(MAX_TOTAL.max(self.timeout))
    }

    /// The upstreams in the order this question asks them.
    fn order(&self) -> Vec<SocketAddr> {
        let mut order = self.upstreams.clone();
        if self.strategy == Strategy::Random {
            fastrand::shuffle(&mut order);
        }
        order
    }
}

/// Relays questions; holds the cache. One per daemon, shared by UDP and TCP.
#[derive(Debug)]
pub struct Forwarder {
    cache: Mutex<Cache>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new(cache::DEFAULT_MAX_ENTRIES, cache::DEFAULT_MAX_BYTES)
    }
}

/// The reply an upstream gave, and how complete it is.
enum Relayed {
    /// A complete answer (cacheable).
    Complete(Vec<u8>),
    /// A UDP answer with TC whose TCP retry failed.
    Truncated(Vec<u8>),
}

impl Forwarder {
    /// A forwarder whose cache holds at most `max_entries` answers and `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> Forwarder {
        Forwarder { cache: Mutex::new(Cache::new(max_entries, max_bytes)) }
    }

    /// Answers `query` (which [`answer::respond`] said to relay) into `out`, from the cache or
    /// the upstreams of `settings`; SERVFAIL when none answers. `out` is left empty only for
    /// a packet that does not parse as a query, which `respond` never hands over.
    pub async fn resolve(&self, query: &[u8], transport: Transport, settings: &Settings, out: &mut Vec<u8>) {
        let mut name = LowerName::new();
        let Ok(req) = Request::parse(query, &mut name) else { return out.clear() };
        let key = cache::key(&req);
        if let Some(key) = &key {
            let hit = self.cache().get(key, &req, std::time::Instant::now(), out);
            if hit {
                crate::telemetry::forward_cache_hit();
                return fit(&req, transport, settings, out);
            }
        }
        match ask_upstreams(&req, query, transport, &settings.recursion).await {
            Some(Relayed::Complete(reply)) => {
                if let Some(key) = key {
                    self.cache().insert(key, &reply, std::time::Instant::now());
                }
                *out = reply;
                fit(&req, transport, settings, out);
            }
            Some(Relayed::Truncated(reply)) => {
                *out = reply;
                fit(&req, transport, settings, out);
            }
            None => answer::empty_reply(&req, rcode::SERVFAIL, flag::RA, settings, out),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache stays consistent between statements; a panic elsewhere cannot break it.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Asks the upstreams in turn until one gives a usable reply (steps 2–4 of the module doc).
/// The reply carries the client's ID again, whatever ID went upstream.
async fn ask_upstreams(
    req: &Request<'_>,
    query: &[u8],
    transport: Transport,
    recursion: &Recursion,
) -> Option<Relayed> {
    let mut relayed = ask_each(req, query.to_vec(), transport, recursion).await;
    if let Some(Relayed::Complete(reply) | Relayed::Truncated(reply)) = &mut relayed {
        wire::write_u16(reply, 0, req.id);
    }
    relayed
}

async fn ask_each(
    req: &Request<'_>,
    mut query: Vec<u8>,
    transport: Transport,
    recursion: &Recursion,
) -> Option<Relayed> {
    let total = Instant::now() + recursion.total_timeout();
    for server in recursion.order() {
        let deadline = total.min(Instant::now() + recursion.timeout);
        if Instant::now() >= deadline {
            break;
        }
        // A fresh random ID per attempt: answers are cached and shared, so a spoofer must
        // guess the ID as well as the source port (the client's ID would be known to it).
        wire::write_u16(&mut query, 0, fastrand::u16(..));
        let query = &query[..];
        let attempt = match transport {
            Transport::Udp => exchange::udp(server, query, deadline).await,
            Transport::Tcp => exchange::tcp(server, query, deadline).await,
        };
        let reply = match attempt {
            Ok(reply) if usable(&reply) => reply,
            Ok(reply) => {
                let detail = format!("rcode {}", reply[3] & 0x0F);
                telemetry::upstream_failed(server, UpstreamError::Rcode, req.qtype, &detail);
                continue;
            }
            Err(e) => {
                telemetry::upstream_failed(server, e.reason(), req.qtype, &e);
                continue;
            }
        };
        if wire::read_u16(&reply, 2) & flag::TC == 0 {
            return Some(Relayed::Complete(reply));
        }
        if transport == Transport::Tcp {
            return Some(Relayed::Truncated(reply)); // nothing bigger to ask for
        }
        return Some(match exchange::tcp(server, query, deadline).await {
            Ok(full) if usable(&full) => Relayed::Complete(full),
            retry => {
                debug!(%server, ok = retry.is_ok(), "TCP retry of a truncated reply failed; relaying it truncated.");
                Relayed::Truncated(reply)
            }
        });
    }
    None
}

/// NOERROR or NXDOMAIN (S9.3).
fn usable(reply: &[u8]) -> bool {
    matches!(u16::from(reply[3] & 0x0F), rcode::NOERROR | rcode::NXDOMAIN)
}

/// Over UDP, a reply larger than the client can take (512 bytes, or its EDNS size within our
/// `max_udp_size`) becomes an empty one with TC, so the client asks again over TCP.
fn fit(req: &Request<'_>, transport: Transport, settings: &Settings, out: &mut Vec<u8>) {
    if transport == Transport::Udp && out.len() > answer::budget(req, settings, Transport::Udp) {
        let code = u16::from(out[3] & 0x0F);
        let ra = wire::read_u16(out, 2) & flag::RA;
        answer::empty_reply(req, code, flag::TC | ra, settings, out);
    }
}

#[cfg(test)]
mod tests;
