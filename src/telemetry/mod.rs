//! Logs and metrics: the `tracing` subscriber (text or JSON on stderr), the process's
//! [`Metrics`], and one function per named event that both logs and counts it (Vector's
//! `internal_events`), so a log line and its counter can never disagree.
//!
//! Backends report through four events, whatever their source:
//! [`sync_succeeded`] (a read that published a snapshot; one INFO line with counts),
//! [`sync_unchanged`] (a read that found nothing new; silent), [`sync_failed`] (nothing
//! published; one WARN line, counted by reason) and [`catalog_restored`] (a snapshot from disk
//! serves until the first read). They set the `consul_dns_sync_*` metrics and the catalog's
//! "as of" time that snapshot age and readiness are computed from.
//!
//! Must not be imported by `catalog`; the DNS hot path only touches [`dns::WorkerCounters`].

pub mod dns;
mod log;
pub mod metrics;

use std::fmt::Display;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use tracing::{debug, error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::catalog::snapshot::Counts;
pub use crate::config::{LogFormat, Sample};
pub use metrics::{Backend, CatalogGauges, Metrics, UpstreamError};

static METRICS: Metrics = Metrics::new();

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Replaces the installed subscriber's filter (set by [`init`]).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static SET_FILTER: std::sync::OnceLock<SetFilter> = std::sync::OnceLock::new();

/// `RUST_LOG`, when set: it wins over `log_level`, at start and on reload.
fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG").ok().filter(|d| !d.is_empty())
}

/// Whether `log_level` is a filter [`init`] and [`set_log_level`] accept.
pub fn check_log_level(log_level: &str) -> Result<(), String> {
    EnvFilter::try_new(log_level).map(drop).map_err(|e| format!("log_level {log_level:?}: {e}"))
}

/// Installs the global subscriber, filtered by `log_level` (or `RUST_LOG` when set, for ad-hoc
/// debugging); the filter can be replaced later ([`set_log_level`]). Fails on a malformed
/// filter. A line that cannot be written (stderr's reader went away) is dropped and counted,
/// never a panic (see [`log`]); the subscriber's own report of a failed write, which would go
/// to that same stderr and panic, is off.
pub fn init(log_level: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(rust_log().unwrap_or_else(|| log_level.to_owned()))
        .map_err(|e| format!("log_level {log_level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log::Stderr::new(&METRICS))
        .log_internal_errors(false);
    let set: SetFilter = match format {
        LogFormat::Text => {
            let builder = builder.with_ansi(std::io::stderr().is_terminal()).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().map_err(|e| e.to_string())?;
            Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_current_span(false).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().map_err(|e| e.to_string())?;
            Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()))
        }
    };
    let _ = SET_FILTER.set(set);
    Ok(())
}

/// A reload's new `log_level`, applied to the running subscriber and said in the log (at the
/// old level, before the change). `RUST_LOG`, when set, keeps winning.
pub fn set_log_level(from: &str, to: &str) -> Result<(), String> {
    if let Some(directives) = rust_log() {
        warn!(
            log_level = to,
            rust_log = directives,
            "RUST_LOG is set and keeps deciding the log level; log_level is not applied."
        );
        return Ok(());
    }
    let filter = EnvFilter::try_new(to).map_err(|e| format!("log_level {to:?}: {e}"))?;
    info!("Log level changes from {from:?} to {to:?}.");
    match SET_FILTER.get() {
        Some(set) => set(filter),
        None => Ok(()),
    }
}

/// A backend read its source and published a new snapshot (`trigger`: what made it read).
pub fn sync_succeeded(backend: Backend, trigger: &str, counts: Counts, serial: u32) {
    METRICS.sync_read(backend, SystemTime::now());
    METRICS.published(backend);
    let backend = backend.label();
    let (services, instances, nodes) = (counts.services, counts.instances, counts.nodes);
    info!(backend, trigger, services, instances, nodes, serial, "Catalog published.");
}

/// A backend published an incremental change (logged by the caller at DEBUG).
pub fn published(backend: Backend) {
    METRICS.sync_read(backend, SystemTime::now());
    METRICS.published(backend);
}

/// A backend read its source and found what is already served: the catalog is current.
pub fn sync_unchanged(backend: Backend) {
    METRICS.sync_read(backend, SystemTime::now());
}

/// The reasons the active `backend` counts failures by, exported at 0 until they happen.
pub fn sync_failure_reasons(backend: Backend, reasons: &[&'static str]) {
    METRICS.sync_failure_reasons(backend, reasons);
}

/// A backend could not read its source; nothing was published. `reason` is the metric label:
/// a constant from a small fixed set (`read`, `parse`, `timeout`, …), never a message. Logged
/// at WARN when it is the `first` of a streak, else at DEBUG.
pub fn sync_failed(backend: Backend, reason: &'static str, error: &dyn Display, first: bool) {
    METRICS.sync_failure(backend, reason);
    let message = match reason {
        "forbidden" => "Catalog source refused our credentials; the previous catalog keeps serving.",
        _ => "Catalog source failed; the previous catalog keeps serving.",
    };
    if first {
        warn!(backend = backend.label(), reason, %error, "{message}");
    } else {
        debug!(backend = backend.label(), reason, %error, "{message}");
    }
}

/// One entry of a source could not be served and was left out; the rest was published.
pub fn entry_skipped(backend: Backend, id: &str, reason: &dyn Display) {
    METRICS.skipped(backend);
    warn!(backend = backend.label(), id, %reason, "Catalog entry skipped.");
}

/// A snapshot saved at `saved_at` was restored from disk and serves until the first read.
pub fn catalog_restored(backend: Backend, saved_at: SystemTime, counts: Counts, serial: u32) {
    METRICS.restored(saved_at);
    let age_secs = SystemTime::now().duration_since(saved_at).unwrap_or_default().as_secs();
    let (services, instances, nodes) = (counts.services, counts.instances, counts.nodes);
    info!(backend = backend.label(), age_secs, services, instances, nodes, serial, "Catalog restored from disk.");
}

/// SIGHUP applied a new configuration.
pub fn config_reloaded() {
    METRICS.reload(true);
    info!("Configuration reloaded.");
}

/// SIGHUP found a configuration that does not load; the running one stays.
pub fn config_rejected(error: &dyn Display) {
    METRICS.reload(false);
    error!(%error, "Configuration rejected on reload; the running configuration stays.");
}

/// SIGHUP found a configuration whose static catalog does not load; the running configuration
/// and the last good catalog stay.
pub fn reload_catalog_rejected(error: &dyn Display) {
    METRICS.reload(false);
    error!(%error, "Reload failed: the static catalog was rejected; the running configuration and the last good catalog stay.");
}

/// One attempt at a recursor gave no usable reply; the next one is tried.
pub fn upstream_failed(server: SocketAddr, reason: UpstreamError, qtype: u16, detail: &dyn Display) {
    METRICS.upstream_error(reason);
    debug!(%server, reason = reason.label(), qtype, %detail, "Recursor gave no usable reply; trying the next.");
}

/// A relayed question was answered from the cache.
pub fn forward_cache_hit() {
    METRICS.cache_hit();
}

/// One sampled query for the query log (`--query-log-sample`), written after its reply went
/// out. `reply` is `None` for a question handed to the recursors.
pub fn query_logged(proto: dns::Proto, client: IpAddr, packet: &[u8], reply: Option<&[u8]>) {
    let mut lower = crate::dns::message::LowerName::new();
    let Ok(request) = crate::dns::message::Request::parse(packet, &mut lower) else { return };
    let name = String::from_utf8_lossy(request.name().text());
    let qtype = hickory_proto::rr::RecordType::from(request.qtype);
    let (rcode, truncated) = match reply {
        Some(r) if r.len() >= 4 => (dns::rcode_name(u16::from(r[3] & 0x0F)), r[2] & 0x02 != 0),
        _ => ("forwarded".into(), false),
    };
    info!(target: "consul_dns::query", proto = proto.label(), %client, %name, %qtype, %rcode, truncated, "Query.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_rates() {
        assert!(Sample::default().is_off());
        assert!("0".parse::<Sample>().unwrap().is_off());
        assert_eq!("0.25".parse::<Sample>().unwrap().rate(), 0.25);
        for bad in ["-0.1", "1.5", "often", "NaN"] {
            assert!(bad.parse::<Sample>().is_err(), "{bad}");
        }
        let mut rng = fastrand::Rng::with_seed(7);
        let all = Sample::from_rate(1.0).unwrap();
        assert!((0..1000).all(|_| all.hit(&mut rng)));
        let tenth = Sample::from_rate(0.1).unwrap();
        let hits = (0..100_000).filter(|_| tenth.hit(&mut rng)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }

    #[test]
    fn log_formats() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
