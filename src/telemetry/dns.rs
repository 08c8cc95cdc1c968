//! DNS counters: requests by query type, responses by rcode, truncations, relayed questions and
//! a latency histogram, for one transport.
//!
//! The UDP hot path must not pay for a lock, a label lookup or a contended cache line per
//! query (design.md, "hot path"), so every UDP worker owns its own [`DnsCounters`], aligned to
//! its own cache lines, and is its only writer: [`WorkerCounters`] increments with a relaxed
//! load and store, which compiles to plain moves (no locked instruction). Labels are array
//! indexes worked out by a `match`. A scrape sums the shards. TCP connections and the UDP relay
//! are tokio tasks on any thread; they share one shard per transport through
//! [`SharedCounters`] (`fetch_add`), which is fine at their rates.
//!
//! Label sets are fixed: query types outside [`QTYPES`] count as `other`, rcodes outside
//! [`RCODES`] as `other`, so a client cannot grow the series count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::wire::{rcode, rtype};

/// The transport, the `proto` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP (also the relayed answers sent back over UDP).
    Udp,
    /// TCP.
    Tcp,
}

impl Proto {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// Query types with their own `qtype` label; the rest are `other`.
pub const QTYPES: [(u16, &str); 12] = [
    (rtype::A, "A"),
    (rtype::AAAA, "AAAA"),
    (rtype::SRV, "SRV"),
    (rtype::ANY, "ANY"),
    (rtype::PTR, "PTR"),
    (rtype::SOA, "SOA"),
    (rtype::NS, "NS"),
    (rtype::TXT, "TXT"),
    (rtype::CNAME, "CNAME"),
    (15, "MX"),
    (64, "SVCB"),
    (65, "HTTPS"),
];
/// `qtype` label values: [`QTYPES`] then `other`.
pub const QTYPE_LABELS: usize = QTYPES.len() + 1;

/// Response codes with their own `rcode` label; the rest are `other`.
pub const RCODES: [(u16, &str); 7] = [
    (rcode::NOERROR, "NOERROR"),
    (rcode::FORMERR, "FORMERR"),
    (rcode::SERVFAIL, "SERVFAIL"),
    (rcode::NXDOMAIN, "NXDOMAIN"),
    (rcode::NOTIMP, "NOTIMP"),
    (rcode::REFUSED, "REFUSED"),
    (rcode::BADVERS, "BADVERS"),
];
/// `rcode` label values: [`RCODES`] then `other`.
pub const RCODE_LABELS: usize = RCODES.len() + 1;

/// Upper bounds of the latency histogram's buckets, in seconds (`+Inf` is implied). Finer than
/// CoreDNS's (which start at 250 µs): an answer from the snapshot takes microseconds, and the
/// interesting question is how far the tail drifts from that; relayed questions fill the top.
pub const DURATION_BUCKETS: [f64; 16] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const BUCKET_NANOS: [u64; 16] = {
    let mut nanos = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        nanos[i] = (DURATION_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

/// The `qtype` label index of a query type.
#[inline]
pub fn qtype_index(qtype: u16) -> usize {
    match qtype {
        rtype::A => 0,
        rtype::AAAA => 1,
        rtype::SRV => 2,
        rtype::ANY => 3,
        rtype::PTR => 4,
        rtype::SOA => 5,
        rtype::NS => 6,
        rtype::TXT => 7,
        rtype::CNAME => 8,
        15 => 9,
        64 => 10,
        65 => 11,
        _ => QTYPES.len(),
    }
}

/// The `rcode` label index of a response code.
#[inline]
pub fn rcode_index(code: u16) -> usize {
    match code {
        rcode::NOERROR => 0,
        rcode::FORMERR => 1,
        rcode::SERVFAIL => 2,
        rcode::NXDOMAIN => 3,
        rcode::NOTIMP => 4,
        rcode::REFUSED => 5,
        rcode::BADVERS => 6,
        _ => RCODES.len(),
    }
}

/// The name of a response code for logs (`NOERROR`, …, or its number).
pub fn rcode_name(code: u16) -> std::borrow::Cow<'static, str> {
    match RCODES.get(rcode_index(code)) {
        Some((_, name)) => (*name).into(),
        None => code.to_string().into(),
    }
}

#[inline]
fn bucket_index(nanos: u64) -> usize {
    BUCKET_NANOS.iter().position(|&bound| nanos <= bound).unwrap_or(BUCKET_NANOS.len())
}

/// One shard of DNS counters. Aligned so that two shards never share a cache line (128 bytes
/// covers the adjacent-line prefetcher on x86).
#[derive(Debug)]
#[repr(align(128))]
pub struct DnsCounters {
    proto: Proto,
    requests: [AtomicU64; QTYPE_LABELS],
    responses: [AtomicU64; RCODE_LABELS],
    truncated: AtomicU64,
    forwarded: AtomicU64,
    /// Responses held back by rate limiting: dropped, slipped (sent empty with TC).
    rate_limited: [AtomicU64; 2],
    /// Per bucket (not cumulative), the last one is `+Inf`.
    duration: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_sum_nanos: AtomicU64,
}

impl DnsCounters {
    /// Zeroed counters for `proto`.
    pub const fn new(proto: Proto) -> DnsCounters {
        DnsCounters {
            proto,
            requests: [const { AtomicU64::new(0) }; QTYPE_LABELS],
            responses: [const { AtomicU64::new(0) }; RCODE_LABELS],
            truncated: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            rate_limited: [const { AtomicU64::new(0) }; 2],
            duration: [const { AtomicU64::new(0) }; DURATION_BUCKETS.len() + 1],
            duration_sum_nanos: AtomicU64::new(0),
        }
    }

    /// The transport these count.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// Adds this shard into `total`.
    pub fn add_to(&self, total: &mut DnsTotals) {
        let sum = |into: &mut [u64], from: &[AtomicU64]| {
            into.iter_mut().zip(from).for_each(|(t, c)| *t += c.load(Relaxed));
        };
        sum(&mut total.requests, &self.requests);
        sum(&mut total.responses, &self.responses);
        sum(&mut total.duration, &self.duration);
        total.truncated += self.truncated.load(Relaxed);
        total.forwarded += self.forwarded.load(Relaxed);
        sum(&mut total.rate_limited, &self.rate_limited);
        total.duration_sum_nanos += self.duration_sum_nanos.load(Relaxed);
    }
}

/// The sum of every shard of one transport, at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsTotals {
    /// Requests by [`qtype_index`].
    pub requests: [u64; QTYPE_LABELS],
    /// Responses by [`rcode_index`].
    pub responses: [u64; RCODE_LABELS],
    /// Responses with TC set because answers were dropped.
    pub truncated: u64,
    /// Questions handed to the recursors.
    pub forwarded: u64,
    /// Responses held back by rate limiting: dropped, slipped.
    pub rate_limited: [u64; 2],
    /// Latency observations per bucket (not cumulative; the last is `+Inf`).
    pub duration: [u64; DURATION_BUCKETS.len() + 1],
    /// Sum of the observed latencies.
    pub duration_sum_nanos: u64,
}

/// The counters of one UDP worker, which is their only writer. Not `Clone`: a second writer
/// would lose increments.
#[derive(Debug)]
pub struct WorkerCounters(Arc<DnsCounters>);

impl WorkerCounters {
    /// Wraps a shard that no one else writes.
    pub fn new(shard: Arc<DnsCounters>) -> WorkerCounters {
        WorkerCounters(shard)
    }

    #[inline]
    fn bump(counter: &AtomicU64, n: u64) {
        // Single writer: a load and a store, not a locked read-modify-write.
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// A query of type `qtype` answered with `rcode` (TC set if `truncated`).
    #[inline]
    pub fn answered(&self, qtype: u16, code: u16, truncated: bool) {
        Self::bump(&self.0.requests[qtype_index(qtype)], 1);
        Self::bump(&self.0.responses[rcode_index(code)], 1);
        if truncated {
            Self::bump(&self.0.truncated, 1);
        }
    }

    /// A query of type `qtype` handed to the recursors (its response is counted by the relay).
    #[inline]
    pub fn forwarded(&self, qtype: u16) {
        Self::bump(&self.0.requests[qtype_index(qtype)], 1);
        Self::bump(&self.0.forwarded, 1);
    }

    /// A response over its client's rate: dropped, or `slipped` out empty with TC.
    #[inline]
    pub fn rate_limited(&self, slipped: bool) {
        Self::bump(&self.0.rate_limited[usize::from(slipped)], 1);
    }

    /// `replies` replies that took `elapsed` from receipt to send (one batch).
    #[inline]
    pub fn observe(&self, elapsed: Duration, replies: u64) {
        let nanos = elapsed.as_nanos() as u64;
        Self::bump(&self.0.duration[bucket_index(nanos)], replies);
        Self::bump(&self.0.duration_sum_nanos, nanos.saturating_mul(replies));
    }
}

/// Counters written by many tasks (TCP connections, the UDP relay).
#[derive(Debug, Clone, Copy)]
pub struct SharedCounters(&'static DnsCounters);

impl SharedCounters {
    /// Wraps a shard that lives as long as the process.
    pub fn new(shard: &'static DnsCounters) -> SharedCounters {
        SharedCounters(shard)
    }

    /// A query of type `qtype`.
    pub fn request(&self, qtype: u16) {
        self.0.requests[qtype_index(qtype)].fetch_add(1, Relaxed);
    }

    /// A response sent with `rcode`, TC set if `truncated`, `elapsed` after the query came in.
    pub fn responded(&self, code: u16, truncated: bool, elapsed: Duration) {
        self.0.responses[rcode_index(code)].fetch_add(1, Relaxed);
        if truncated {
            self.0.truncated.fetch_add(1, Relaxed);
        }
        let nanos = elapsed.as_nanos() as u64;
        self.0.duration[bucket_index(nanos)].fetch_add(1, Relaxed);
        self.0.duration_sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// A question handed to the recursors.
    pub fn forwarded(&self) {
        self.0.forwarded.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_fixed_and_unknown_values_are_other() {
        for (i, (qtype, _)) in QTYPES.iter().enumerate() {
            assert_eq!(qtype_index(*qtype), i);
        }
        for (i, (code, _)) in RCODES.iter().enumerate() {
            assert_eq!(rcode_index(*code), i);
        }
        assert_eq!(qtype_index(rtype::AXFR), QTYPES.len());
        assert_eq!(qtype_index(0), QTYPES.len());
        assert_eq!(rcode_index(9), RCODES.len());
        assert_eq!(rcode_name(rcode::NXDOMAIN), "NXDOMAIN");
        assert_eq!(rcode_name(9), "9");
    }

    #[test]
    fn buckets_take_their_upper_bound() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(50_000), 0);
        assert_eq!(bucket_index(50_001), 1);
        assert_eq!(bucket_index(5_000_000_000), 15);
        assert_eq!(bucket_index(u64::MAX), 16);
    }

    #[test]
    fn worker_and_shared_counts_sum_per_shard() {
        let shard = Arc::new(DnsCounters::new(Proto::Udp));
        let worker = WorkerCounters::new(Arc::clone(&shard));
        worker.answered(rtype::A, rcode::NOERROR, false);
        worker.answered(rtype::SRV, rcode::NOERROR, true);
        worker.answered(999, 9, false);
        worker.forwarded(rtype::A);
        worker.observe(Duration::from_micros(70), 3);
        static SHARED: DnsCounters = DnsCounters::new(Proto::Udp);
        let shared = SharedCounters::new(&SHARED);
        shared.responded(rcode::NXDOMAIN, false, Duration::from_millis(3));
        let mut total = DnsTotals::default();
        shard.add_to(&mut total);
        SHARED.add_to(&mut total);
        assert_eq!(total.requests[0], 2, "two A");
        assert_eq!(total.requests[QTYPES.len()], 1, "one other");
        assert_eq!((total.responses[0], total.responses[3], total.responses[RCODES.len()]), (2, 1, 1));
        assert_eq!((total.truncated, total.forwarded), (1, 1));
        assert_eq!((total.duration[1], total.duration[6]), (3, 1), "70 µs ×3 ≤ 100 µs, 3 ms ≤ 5 ms");
        assert_eq!(total.duration_sum_nanos, 3 * 70_000 + 3_000_000);
    }
}
