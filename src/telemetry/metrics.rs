//! The process's metrics and their Prometheus text exposition (format 0.0.4).
//!
//! One [`Metrics`] value lives for the whole process ([`super::metrics`]); everything in it is
//! an atomic or a small mutex taken off the query path. DNS counters are sharded (see
//! [`super::dns`]); catalog gauges are read from the snapshot being served at scrape time, so
//! nothing here copies the catalog. [`FAMILIES`] is the one list of metric names, types and
//! help texts: the exposition writes from it and the naming lint tests it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dns::{DURATION_BUCKETS, DnsCounters, DnsTotals, Proto, QTYPES, RCODES, SharedCounters, WorkerCounters};

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn text(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: name, type, help and label names.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Full name, `consul_dns_<subsystem>_<name>_<unit>[_total]`.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Help text.
    pub help: &'static str,
    /// Label names (fixed, low-cardinality values).
    pub labels: &'static [&'static str],
}

const fn family(name: &'static str, kind: Kind, labels: &'static [&'static str], help: &'static str) -> Family {
    Family { name, kind, help, labels }
}

/// Every metric this process exports.
pub const FAMILIES: &[Family] = &[
    family("consul_dns_build_info", Kind::Gauge, &["version"], "Always 1; the version running."),
    family(
        "consul_dns_dns_requests_total",
        Kind::Counter,
        &["proto", "qtype"],
        "DNS queries received, by transport and query type (rare types count as other).",
    ),
    family("consul_dns_dns_responses_total", Kind::Counter, &["proto", "rcode"], "DNS responses sent, by rcode."),
    family(
        "consul_dns_dns_truncated_responses_total",
        Kind::Counter,
        &["proto"],
        "Responses with TC set because answer records did not fit.",
    ),
    family(
        "consul_dns_dns_rate_limited_responses_total",
        Kind::Counter,
        &["action"],
        "UDP responses over their client network's rate: dropped, or slipped (sent empty with TC).",
    ),
    family(
        "consul_dns_dns_request_duration_seconds",
        Kind::Histogram,
        &["proto"],
        "Time from taking a query off the socket to handing its reply to the kernel (UDP: per batch).",
    ),
    family(
        "consul_dns_forward_requests_total",
        Kind::Counter,
        &["proto"],
        "Questions outside the domain handed to the recursors (cache hits included).",
    ),
    family("consul_dns_forward_cache_hits_total", Kind::Counter, &[], "Relayed questions answered from the cache."),
    family(
        "consul_dns_forward_upstream_errors_total",
        Kind::Counter,
        &["reason"],
        "Attempts to one recursor that gave no usable reply, by reason.",
    ),
    family("consul_dns_catalog_services", Kind::Gauge, &[], "Services with an answerable instance, all datacenters."),
    family("consul_dns_catalog_instances", Kind::Gauge, &[], "Answerable service instances."),
    family("consul_dns_catalog_nodes", Kind::Gauge, &[], "Nodes in the catalog."),
    family("consul_dns_catalog_serial", Kind::Gauge, &[], "SOA serial of the snapshot being served."),
    family(
        "consul_dns_catalog_snapshot_age_seconds",
        Kind::Gauge,
        &[],
        "Seconds since the served catalog was last known to match its source.",
    ),
    family(
        "consul_dns_sync_last_success_timestamp_seconds",
        Kind::Gauge,
        &["backend"],
        "Unix time of the backend's last successful read of its source.",
    ),
    family("consul_dns_sync_publishes_total", Kind::Counter, &["backend"], "Catalog snapshots published."),
    family(
        "consul_dns_sync_failures_total",
        Kind::Counter,
        &["backend", "reason"],
        "Failed reads of a catalog source, by reason; the previous catalog kept serving.",
    ),
    family(
        "consul_dns_sync_skipped_entries_total",
        Kind::Counter,
        &["backend"],
        "Entries of a catalog source left out because DNS cannot serve them; the rest was published.",
    ),
    family("consul_dns_config_reloads_total", Kind::Counter, &["result"], "Configuration reloads (SIGHUP), by result."),
    family(
        "consul_dns_log_write_failures_total",
        Kind::Counter,
        &[],
        "Log lines dropped because writing them failed (e.g. the reader of stderr went away).",
    ),
    family(
        "consul_dns_task_failures_total",
        Kind::Counter,
        &["task"],
        "Background tasks that panicked or ended on their own; the process then exits non-zero.",
    ),
];

/// The background tasks whose failures are counted (`task` label of
/// `consul_dns_task_failures_total`), exported at 0 from the start.
pub const TASKS: [&str; 7] =
    ["source", "http", "consul_watch", "consul_fetch", "db_listen", "forward_relay", "tcp_accept"];

/// A catalog source, the `backend` label: the running source names itself (`file`, `consul`,
/// ...); telemetry keeps no list of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend(pub &'static str);

impl Backend {
    /// The label value.
    pub fn label(self) -> &'static str {
        self.0
    }
}

/// Why one attempt at a recursor failed, the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No usable reply before the deadline.
    Timeout,
    /// Connection refused, unreachable, reset.
    Network,
    /// A reply that does not answer the question.
    Mismatch,
    /// SERVFAIL, REFUSED or another rcode than NOERROR/NXDOMAIN.
    Rcode,
}

impl UpstreamError {
    /// Every reason, in label order.
    pub const ALL: [UpstreamError; 4] =
        [UpstreamError::Timeout, UpstreamError::Network, UpstreamError::Mismatch, UpstreamError::Rcode];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Network => "network",
            UpstreamError::Mismatch => "mismatch",
            UpstreamError::Rcode => "rcode",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BackendSync {
    backend: Backend,
    last_success_ms: u64,
    publishes: u64,
    skipped: u64,
}

/// What the catalog looks like at scrape time (read from the live snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogGauges {
    /// Services.
    pub services: usize,
    /// Instances.
    pub instances: usize,
    /// Nodes.
    pub nodes: usize,
    /// SOA serial.
    pub serial: u32,
}

/// Everything counted in this process.
#[derive(Debug)]
pub struct Metrics {
    udp_workers: Mutex<Vec<Arc<DnsCounters>>>,
    tcp: DnsCounters,
    udp_relay: DnsCounters,
    cache_hits: AtomicU64,
    upstream_errors: [AtomicU64; UpstreamError::ALL.len()],
    backends: Mutex<Vec<BackendSync>>,
    as_of_ms: AtomicU64,
    sync_failures: Mutex<Vec<(Backend, &'static str, u64)>>,
    reloads: [AtomicU64; 2],
    stopping: AtomicBool,
    log_write_failures: AtomicU64,
    task_failures: [AtomicU64; TASKS.len()],
    source_down: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64).max(1)
}

fn time_of(ms: u64) -> Option<SystemTime> {
    (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

impl Metrics {
    /// All zero.
    pub const fn new() -> Metrics {
        Metrics {
            udp_workers: Mutex::new(Vec::new()),
            tcp: DnsCounters::new(Proto::Tcp),
            udp_relay: DnsCounters::new(Proto::Udp),
            cache_hits: AtomicU64::new(0),
            upstream_errors: [const { AtomicU64::new(0) }; UpstreamError::ALL.len()],
            backends: Mutex::new(Vec::new()),
            as_of_ms: AtomicU64::new(0),
            sync_failures: Mutex::new(Vec::new()),
            reloads: [const { AtomicU64::new(0) }; 2],
            stopping: AtomicBool::new(false),
            log_write_failures: AtomicU64::new(0),
            task_failures: [const { AtomicU64::new(0) }; TASKS.len()],
            source_down: AtomicBool::new(false),
        }
    }

    /// A new shard for one UDP worker, which must be its only writer.
    pub fn udp_worker(&self) -> WorkerCounters {
        let shard = Arc::new(DnsCounters::new(Proto::Udp));
        self.udp_workers.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&shard));
        WorkerCounters::new(shard)
    }

    /// The counters TCP connections share.
    pub fn tcp(&'static self) -> SharedCounters {
        SharedCounters::new(&self.tcp)
    }

    /// The counters of answers the UDP relay sends.
    pub fn udp_relay(&'static self) -> SharedCounters {
        SharedCounters::new(&self.udp_relay)
    }

    /// Counts a relayed question answered from the cache.
    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Relaxed);
    }

    /// Counts a failed attempt at a recursor.
    pub fn upstream_error(&self, reason: UpstreamError) {
        let at = UpstreamError::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.upstream_errors[at].fetch_add(1, Relaxed);
    }

    /// Records a successful read of `backend`'s source at `at`: the catalog is current as of then.
    pub fn sync_read(&self, backend: Backend, at: SystemTime) {
        let ms = millis(at);
        self.with_backend(backend, |state| state.last_success_ms = ms);
        self.as_of_ms.store(ms, Relaxed);
    }

    /// Whether `backend` has published a snapshot from its source at least once.
    pub fn ever_published(&self, backend: Backend) -> bool {
        let backends = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
        backends.iter().any(|b| b.backend == backend && b.publishes > 0)
    }

    /// Counts a snapshot published by `backend`.
    pub fn published(&self, backend: Backend) {
        self.with_backend(backend, |state| state.publishes += 1);
    }

    /// Counts an entry of `backend`'s source left out because it cannot be served.
    pub fn skipped(&self, backend: Backend) {
        self.with_backend(backend, |state| state.skipped += 1);
    }

    fn with_backend(&self, backend: Backend, change: impl FnOnce(&mut BackendSync)) {
        let mut backends = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
        let at = match backends.iter().position(|b| b.backend == backend) {
            Some(at) => at,
            None => {
                backends.push(BackendSync { backend, last_success_ms: 0, publishes: 0, skipped: 0 });
                backends.len() - 1
            }
        };
        change(&mut backends[at]);
    }

    /// Records that the served catalog dates from `as_of` (a snapshot restored from disk).
    pub fn restored(&self, as_of: SystemTime) {
        self.as_of_ms.store(millis(as_of), Relaxed);
    }

    /// Declares the reasons `backend` counts failures by, so each is exported at 0 before the
    /// first failure (a dashboard then shows 0, not "no data").
    pub fn sync_failure_reasons(&self, backend: Backend, reasons: &[&'static str]) {
        let mut failures = self.sync_failures.lock().unwrap_or_else(PoisonError::into_inner);
        for reason in reasons {
            if !failures.iter().any(|(b, r, _)| *b == backend && r == reason) {
                failures.push((backend, reason, 0));
            }
        }
    }

    /// Counts a failed read of `backend`'s source.
    pub fn sync_failure(&self, backend: Backend, reason: &'static str) {
        let mut failures = self.sync_failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failures.iter_mut().find(|(b, r, _)| *b == backend && *r == reason) {
            Some((_, _, count)) => *count += 1,
            None => failures.push((backend, reason, 1)),
        }
    }

    /// Counts a configuration reload.
    pub fn reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// Marks the process as stopping: readiness fails from now on.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Relaxed);
    }

    /// Whether the process is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// Counts a log line that could not be written and was dropped.
    pub fn log_write_failed(&self) {
        self.log_write_failures.fetch_add(1, Relaxed);
    }

    /// Log lines dropped so far.
    pub fn log_write_failures(&self) -> u64 {
        self.log_write_failures.load(Relaxed)
    }

    /// Counts a background task (one of [`TASKS`]) that panicked or ended on its own.
    pub fn task_failed(&self, task: &str) {
        if let Some(at) = TASKS.iter().position(|t| *t == task) {
            self.task_failures[at].fetch_add(1, Relaxed);
        }
    }

    /// Marks the catalog source's task as gone: readiness fails from now on.
    pub fn set_source_down(&self) {
        self.source_down.store(true, Relaxed);
    }

    /// Whether the catalog source's task ended before the process began stopping.
    pub fn is_source_down(&self) -> bool {
        self.source_down.load(Relaxed)
    }

    /// When the served catalog was last known to match its source: the last successful read
    /// by a backend, or the save time of a snapshot restored from disk.
    pub fn catalog_as_of(&self) -> Option<SystemTime> {
        time_of(self.as_of_ms.load(Relaxed))
    }

    /// The DNS counters of one transport, summed over its shards.
    pub fn dns_totals(&self, proto: Proto) -> DnsTotals {
        let mut total = DnsTotals::default();
        let workers = self.udp_workers.lock().unwrap_or_else(PoisonError::into_inner);
        let shards = workers.iter().map(|s| &**s).chain([&self.tcp, &self.udp_relay]);
        for shard in shards.filter(|s| s.proto() == proto) {
            shard.add_to(&mut total);
        }
        total
    }

    /// The exposition of every metric, with the catalog as `catalog` shows it at `now`.
    pub fn render(&self, catalog: CatalogGauges, now: SystemTime) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let mut w = Exposition { out: &mut out };
        w.sample("consul_dns_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
        let totals = [Proto::Udp, Proto::Tcp].map(|p| (p.label(), self.dns_totals(p)));
        self.render_dns(&mut w, &totals);
        w.sample("consul_dns_forward_cache_hits_total", &[], self.cache_hits.load(Relaxed));
        for (reason, count) in UpstreamError::ALL.iter().zip(&self.upstream_errors) {
            w.sample("consul_dns_forward_upstream_errors_total", &[("reason", reason.label())], count.load(Relaxed));
        }
        w.sample("consul_dns_catalog_services", &[], catalog.services as u64);
        w.sample("consul_dns_catalog_instances", &[], catalog.instances as u64);
        w.sample("consul_dns_catalog_nodes", &[], catalog.nodes as u64);
        w.sample("consul_dns_catalog_serial", &[], u64::from(catalog.serial));
        if let Some(as_of) = self.catalog_as_of() {
            let age = now.duration_since(as_of).unwrap_or_default().as_secs_f64();
            w.sample_f64("consul_dns_catalog_snapshot_age_seconds", &[], age);
        }
        self.render_sync(&mut w);
        for (result, count) in ["success", "failure"].iter().zip(&self.reloads) {
            w.sample("consul_dns_config_reloads_total", &[("result", result)], count.load(Relaxed));
        }
        w.sample("consul_dns_log_write_failures_total", &[], self.log_write_failures.load(Relaxed));
        for (task, count) in TASKS.iter().zip(&self.task_failures) {
            w.sample("consul_dns_task_failures_total", &[("task", task)], count.load(Relaxed));
        }
        out
    }

    fn render_dns(&self, w: &mut Exposition<'_>, totals: &[(&'static str, DnsTotals); 2]) {
        for (proto, t) in totals {
            let qtypes = QTYPES.iter().map(|(_, name)| *name).chain(["other"]);
            for (qtype, count) in qtypes.zip(t.requests) {
                w.sample("consul_dns_dns_requests_total", &[("proto", proto), ("qtype", qtype)], count);
            }
        }
        for (proto, t) in totals {
            let rcodes = RCODES.iter().map(|(_, name)| *name).chain(["other"]);
            for (rcode, count) in rcodes.zip(t.responses) {
                w.sample("consul_dns_dns_responses_total", &[("proto", proto), ("rcode", rcode)], count);
            }
        }
        for (proto, t) in totals {
            w.sample("consul_dns_dns_truncated_responses_total", &[("proto", proto)], t.truncated);
        }
        let udp = &totals[0].1;
        for (action, count) in ["dropped", "slipped"].iter().zip(udp.rate_limited) {
            w.sample("consul_dns_dns_rate_limited_responses_total", &[("action", action)], count);
        }
        for (proto, t) in totals {
            w.histogram("consul_dns_dns_request_duration_seconds", proto, &t.duration, t.duration_sum_nanos);
        }
        for (proto, t) in totals {
            w.sample("consul_dns_forward_requests_total", &[("proto", proto)], t.forwarded);
        }
    }

    fn render_sync(&self, w: &mut Exposition<'_>) {
        let backends = self.backends.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for state in &backends {
            if let Some(at) = time_of(state.last_success_ms) {
                let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
                w.sample_f64(
                    "consul_dns_sync_last_success_timestamp_seconds",
                    &[("backend", state.backend.label())],
                    secs,
                );
            }
        }
        for state in backends.iter().filter(|s| s.publishes > 0) {
            w.sample("consul_dns_sync_publishes_total", &[("backend", state.backend.label())], state.publishes);
        }
        w.declare("consul_dns_sync_skipped_entries_total");
        for state in &backends {
            w.sample("consul_dns_sync_skipped_entries_total", &[("backend", state.backend.label())], state.skipped);
        }
        w.declare("consul_dns_sync_failures_total");
        let failures = self.sync_failures.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (backend, reason, count) in failures {
            w.sample("consul_dns_sync_failures_total", &[("backend", backend.label()), ("reason", reason)], count);
        }
    }
}

/// Writes samples, each family's HELP and TYPE before its first sample.
struct Exposition<'a> {
    out: &'a mut String,
}

impl Exposition<'_> {
    fn declare(&mut self, name: &str) {
        let marker = format!("# TYPE {name} ");
        if self.out.contains(&marker) {
            return;
        }
        let family = FAMILIES.iter().find(|f| f.name == name).expect("every metric is listed in FAMILIES");
        let _ = writeln!(self.out, "# HELP {name} {}", family.help);
        let _ = writeln!(self.out, "# TYPE {name} {}", family.kind.text());
    }

    fn series(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                let sep = if i > 0 { "," } else { "" };
                // Label values are our own constants: no escaping needed.
                let _ = write!(self.out, "{sep}{key}=\"{value}\"");
            }
            self.out.push('}');
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.declare(name);
        self.series(name, "", labels);
        let _ = writeln!(self.out, " {value}");
    }

    fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.declare(name);
        self.series(name, "", labels);
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(&mut self, name: &str, proto: &str, buckets: &[u64], sum_nanos: u64) {
        self.declare(name);
        let mut cumulative = 0;
        for (i, count) in buckets.iter().enumerate() {
            cumulative += count;
            let le = DURATION_BUCKETS.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            self.series(name, "_bucket", &[("proto", proto), ("le", &le)]);
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.series(name, "_sum", &[("proto", proto)]);
        let _ = writeln!(self.out, " {}", sum_nanos as f64 / 1e9);
        self.series(name, "_count", &[("proto", proto)]);
        let _ = writeln!(self.out, " {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CoreDNS `test/metric_naming_test.go`, for our rules (style.md): the prefix, snake_case,
    /// `_total` on counters and only there, a unit suffix on durations and times, no
    /// high-cardinality label names, help text present.
    #[test]
    fn metric_names_follow_the_naming_rules() {
        let units = ["_seconds", "_total", "_info", "_services", "_instances", "_nodes", "_serial"];
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} listed twice", f.name);
            assert!(f.name.starts_with("consul_dns_"), "{}: prefix consul_dns_", f.name);
            assert!(f.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{}", f.name);
            assert!(!f.name.contains("__") && !f.name.ends_with('_'), "{}", f.name);
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{}: _total iff counter", f.name);
            assert!(units.iter().any(|u| f.name.ends_with(u)), "{}: ends in a unit or a count noun", f.name);
            for word in ["duration", "age", "timestamp", "time"] {
                if f.name.contains(word) {
                    assert!(f.name.ends_with("_seconds"), "{}: times are in seconds", f.name);
                }
            }
            assert!(!f.name.contains("milli") && !f.name.contains("micro"), "{}: base units", f.name);
            for label in f.labels {
                assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}: label {label}", f.name);
                assert!(!["service", "name", "node", "client", "qname", "id"].contains(label), "{}: {label}", f.name);
            }
            assert!(f.help.ends_with('.') && f.help.len() > 10, "{}: help", f.name);
        }
    }

    #[test]
    fn exposition_declares_each_family_once_and_sums_shards() {
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let (a, b) = (metrics.udp_worker(), metrics.udp_worker());
        a.answered(1, 0, false);
        b.answered(1, 3, true);
        metrics.tcp().request(33);
        metrics.tcp().responded(0, false, Duration::from_micros(300));
        metrics.sync_failure(Backend("file"), "parse");
        metrics.sync_failure(Backend("file"), "parse");
        metrics.reload(true);
        metrics.sync_failure_reasons(Backend("file"), &["read", "parse"]);
        metrics.sync_read(Backend("file"), SystemTime::now());
        metrics.published(Backend("file"));
        metrics.log_write_failed();
        metrics.task_failed("source");
        let text = metrics.render(CatalogGauges { services: 2, instances: 5, nodes: 3, serial: 7 }, SystemTime::now());
        for line in [
            "consul_dns_dns_requests_total{proto=\"udp\",qtype=\"A\"} 2",
            "consul_dns_dns_requests_total{proto=\"tcp\",qtype=\"SRV\"} 1",
            "consul_dns_dns_responses_total{proto=\"udp\",rcode=\"NXDOMAIN\"} 1",
            "consul_dns_dns_truncated_responses_total{proto=\"udp\"} 1",
            "consul_dns_dns_request_duration_seconds_bucket{proto=\"tcp\",le=\"0.00025\"} 0",
            "consul_dns_dns_request_duration_seconds_bucket{proto=\"tcp\",le=\"0.0005\"} 1",
            "consul_dns_dns_request_duration_seconds_bucket{proto=\"tcp\",le=\"+Inf\"} 1",
            "consul_dns_dns_request_duration_seconds_count{proto=\"tcp\"} 1",
            "consul_dns_dns_request_duration_seconds_sum{proto=\"tcp\"} 0.0003",
            "consul_dns_sync_failures_total{backend=\"file\",reason=\"parse\"} 2",
            "consul_dns_sync_failures_total{backend=\"file\",reason=\"read\"} 0",
            "consul_dns_config_reloads_total{result=\"success\"} 1",
            "consul_dns_catalog_instances 5",
            "consul_dns_catalog_serial 7",
            "consul_dns_log_write_failures_total 1",
            "consul_dns_task_failures_total{task=\"source\"} 1",
            "consul_dns_task_failures_total{task=\"http\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        for f in FAMILIES {
            let declared = text.lines().filter(|l| l.starts_with(&format!("# TYPE {} ", f.name))).count();
            assert_eq!(declared, 1, "{}", f.name);
        }
    }
}
