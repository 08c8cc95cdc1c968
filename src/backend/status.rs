//! Sync state in one place: whether a live backend has synced, when it last succeeded and
//! published, its errors counted by reason, and the blocking-query index of each watch.
//!
//! Shared by `Arc` and read from anywhere (logs now; `/metrics` and `/ready` later). Writers
//! are the backend's tasks, never the DNS query path: counters are atomics, the per-watch
//! index table and last error sit behind a small std mutex held for a map insert.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a sync step failed; the `reason` label of `consul_dns_sync_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureReason {
    /// Connection refused, reset, DNS failure of the Consul address.
    Network,
    /// No answer within the HTTP timeout.
    Timeout,
    /// 403: the token lacks a permission.
    Forbidden,
    /// 429 or 503: Consul asks us to slow down.
    RateLimited,
    /// 5xx other than 503.
    ServerError,
    /// Any other unexpected status.
    OtherStatus,
    /// A body that is not the JSON we expect (truncated, wrong shape).
    Decode,
    /// The index went backwards (snapshot restore, leader change): the watch starts over.
    IndexWentBackwards,
    /// Writing the on-disk snapshot failed.
    Persist,
}

impl FailureReason {
    /// Every reason, in label order.
    pub const ALL: [FailureReason; 9] = [
        FailureReason::Network,
        FailureReason::Timeout,
        FailureReason::Forbidden,
        FailureReason::RateLimited,
        FailureReason::ServerError,
        FailureReason::OtherStatus,
        FailureReason::Decode,
        FailureReason::IndexWentBackwards,
        FailureReason::Persist,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Network => "network",
            FailureReason::Timeout => "timeout",
            FailureReason::Forbidden => "forbidden",
            FailureReason::RateLimited => "rate_limited",
            FailureReason::ServerError => "server_error",
            FailureReason::OtherStatus => "other_status",
            FailureReason::Decode => "decode",
            FailureReason::IndexWentBackwards => "index_went_backwards",
            FailureReason::Persist => "persist",
        }
    }
}

/// Sync state of the live backend.
#[derive(Debug, Default)]
pub struct SyncStatus {
    synced: AtomicBool,
    restored: AtomicBool,
    last_success_ms: AtomicU64,
    last_publish_ms: AtomicU64,
    publishes: AtomicU64,
    last_publish_latency_us: AtomicU64,
    failures: [AtomicU64; FailureReason::ALL.len()],
    requests: AtomicU64,
    indexes: Mutex<BTreeMap<String, u64>>,
    last_error: Mutex<Option<String>>,
}

/// A copy of [`SyncStatus`] at one moment, for exporting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusReport {
    /// A live sync has completed since start-up.
    pub synced: bool,
    /// Answers came from the on-disk snapshot before the first sync.
    pub restored: bool,
    /// Last successful read from the source.
    pub last_success: Option<SystemTime>,
    /// Last published snapshot.
    pub last_publish: Option<SystemTime>,
    /// Snapshots published.
    pub publishes: u64,
    /// Time from the first change seen to its publication, for the last publish.
    pub last_publish_latency: Duration,
    /// Failures by reason (only reasons that happened).
    pub failures: BTreeMap<FailureReason, u64>,
    /// HTTP requests sent to the source.
    pub requests: u64,
    /// Current blocking index per watch (`"dc1 services"`, `"dc1 checks"` …).
    pub indexes: BTreeMap<String, u64>,
    /// The last failure's message (never contains the token).
    pub last_error: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn time_of(ms: u64) -> Option<SystemTime> {
    (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

impl SyncStatus {
    /// Marks the first complete sync (answers are live from now on).
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Has a live sync completed?
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Marks that answers come from a restored on-disk snapshot.
    pub fn set_restored(&self) {
        self.restored.store(true, Ordering::Relaxed);
    }

    /// Records a successful read.
    pub fn record_success(&self) {
        self.last_success_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Records a request sent.
    pub fn record_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a publish and how long its oldest change waited for it.
    pub fn record_publish(&self, latency: Duration) {
        self.last_publish_ms.store(now_ms(), Ordering::Relaxed);
        self.publishes.fetch_add(1, Ordering::Relaxed);
        self.last_publish_latency_us.store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts a failure and keeps its message.
    pub fn record_failure(&self, reason: FailureReason, message: String) {
        let at = FailureReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.failures[at].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }

    /// Sets the current index of one watch.
    pub fn set_index(&self, watch: &str, index: u64) {
        if let Ok(mut indexes) = self.indexes.lock() {
            match indexes.get_mut(watch) {
                Some(current) => *current = index,
                None => {
                    indexes.insert(watch.to_owned(), index);
                }
            }
        }
    }

    /// Time since the last successful read, if there was one.
    pub fn since_success(&self) -> Option<Duration> {
        let last = time_of(self.last_success_ms.load(Ordering::Relaxed))?;
        Some(SystemTime::now().duration_since(last).unwrap_or_default())
    }

    /// A consistent-enough copy for exporting.
    pub fn report(&self) -> StatusReport {
        let failures = FailureReason::ALL
            .iter()
            .zip(&self.failures)
            .map(|(reason, count)| (*reason, count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect();
        StatusReport {
            synced: self.is_synced(),
            restored: self.restored.load(Ordering::Relaxed),
            last_success: time_of(self.last_success_ms.load(Ordering::Relaxed)),
            last_publish: time_of(self.last_publish_ms.load(Ordering::Relaxed)),
            publishes: self.publishes.load(Ordering::Relaxed),
            last_publish_latency: Duration::from_micros(self.last_publish_latency_us.load(Ordering::Relaxed)),
            failures,
            requests: self.requests.load(Ordering::Relaxed),
            indexes: self.indexes.lock().map(|i| i.clone()).unwrap_or_default(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_collects_what_was_recorded() {
        let status = SyncStatus::default();
        assert_eq!(status.report(), StatusReport::default());
        status.record_failure(FailureReason::Decode, "truncated".into());
        status.record_failure(FailureReason::Decode, "wrong shape".into());
        status.record_failure(FailureReason::Forbidden, "403".into());
        status.set_index("dc1 services", 7);
        status.set_index("dc1 services", 9);
        status.record_success();
        status.record_publish(Duration::from_millis(3));
        status.set_synced();
        let report = status.report();
        assert!(report.synced && report.last_success.is_some() && report.last_publish.is_some());
        assert_eq!(report.failures, [(FailureReason::Forbidden, 1), (FailureReason::Decode, 2)].into());
        assert_eq!(report.indexes, [("dc1 services".to_owned(), 9)].into());
        assert_eq!(report.last_error.as_deref(), Some("403"));
        assert_eq!(report.last_publish_latency, Duration::from_millis(3));
        assert!(status.since_success().unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn labels_are_distinct_snake_case() {
        let labels: std::collections::BTreeSet<&str> = FailureReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), FailureReason::ALL.len());
        assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
