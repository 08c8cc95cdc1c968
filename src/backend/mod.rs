//! Sources of catalog data, behind one seam.
//!
//! The contract: a source reads its registry, converts what it reads into
//! [`crate::catalog::model`] values at its edge, and hands them to a
//! [`publish::Publisher`] — a whole catalog ([`publish::Publisher::full`], diffed and published
//! incrementally), changes piece by piece through the publisher's [`mirror::Mirror`], or a
//! failure ([`publish::Publisher::failed`], one [`failure::Failure`] vocabulary). Everything
//! after that is the publisher's: building off the async runtime, coalescing, persistence,
//! `max_stale`, readiness, logs and metrics. A failed read publishes nothing, so the last good
//! snapshot keeps serving. [`seed`] decides what serves before the source first publishes.
//!
//! Adding a source: its folder here, one [`Source`] variant (and its arm in [`start`]), its
//! config keys, its tests. Must not import `dns`.

pub mod backoff;
pub mod consul;
pub mod etcd;
pub mod failure;
pub mod file;
pub(crate) mod mirror;
pub(crate) mod publish;
pub mod registry;
pub(crate) mod seed;
pub mod sql;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::database::{DatabaseSettings, EtcdSettings};
use crate::config::{CatalogSource, ConsulSettings, LiveSource, Sources};
use crate::telemetry::Backend;
use file::Fingerprint;
use publish::Publisher;

/// The running source of the catalog.
pub(crate) enum Source {
    /// The static file alone (its path can change on SIGHUP).
    File {
        /// The file (or the built-in example) to watch.
        catalog: watch::Receiver<CatalogSource>,
        /// The version the seed was read from.
        seen: Option<Fingerprint>,
    },
    /// The Consul catalog.
    Consul(ConsulSettings),
    /// Tables in an SQL database.
    Sql(DatabaseSettings),
    /// Keys in etcd.
    Etcd(EtcdSettings),
}

impl Source {
    /// The source `sources` configure; `catalog` carries the static file's path for
    /// [`Source::File`], `seen` its seeded version.
    pub(crate) fn new(sources: &Sources, catalog: watch::Receiver<CatalogSource>, seen: Option<Fingerprint>) -> Source {
        match &sources.live {
            None => Source::File { catalog, seen },
            Some(LiveSource::Consul(settings)) => Source::Consul(settings.clone()),
            Some(LiveSource::Sql(settings)) => Source::Sql(settings.clone()),
            Some(LiveSource::Etcd(settings)) => Source::Etcd(settings.clone()),
        }
    }

    /// The `backend` label of its logs and metrics.
    pub(crate) fn backend(sources: &Sources) -> Backend {
        Backend(sources.live.as_ref().map_or("file", LiveSource::label))
    }
}

/// Starts `source`, publishing through `publisher`, until `cancel`. Should the task end any
/// other way (a panic unwinding through it, or a return before `cancel`), readiness fails from
/// that moment ([`crate::telemetry::Metrics::is_source_down`]); the caller, which awaits the
/// handle, then stops the process.
pub(crate) fn start(source: Source, publisher: Publisher, cancel: CancellationToken) -> JoinHandle<()> {
    let alive = Alive(cancel.clone());
    let run: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match source {
        Source::File { catalog, seen } => Box::pin(file::run(catalog, seen, publisher, cancel)),
        Source::Consul(settings) => Box::pin(consul::run(settings, publisher, cancel)),
        Source::Sql(settings) => Box::pin(sql::poll::run(settings, publisher, cancel)),
        Source::Etcd(settings) => Box::pin(etcd::watch::run(settings, publisher, cancel)),
    };
    tokio::spawn(async move {
        let _alive = alive;
        #[cfg(test)]
        let run = faults::panic_when_told(run);
        run.await;
    })
}

/// Held by the source's task; dropped when it ends, also by unwinding. An end that `cancel`
/// did not ask for marks the source down.
struct Alive(CancellationToken);

impl Drop for Alive {
    fn drop(&mut self) {
        if !self.0.is_cancelled() {
            crate::telemetry::metrics().set_source_down();
        }
    }
}

/// A fault the unit tests inject into the real source task (compiled only for them): a panic
/// in the middle of its run, as a bug in a source or a library would cause.
#[cfg(test)]
pub(crate) mod faults {
    use std::future::Future;

    use tokio::sync::Notify;

    static PANIC: Notify = Notify::const_new();

    /// Makes the source task that is running (or the next one started) panic.
    pub(crate) fn panic_source() {
        PANIC.notify_one();
    }

    pub(super) async fn panic_when_told(run: impl Future<Output = ()>) {
        tokio::select! {
            () = run => {}
            () = PANIC.notified() => panic!("fault injected by a test"),
        }
    }
}
