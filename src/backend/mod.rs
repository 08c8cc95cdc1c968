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

/// Starts `source`, publishing through `publisher`, until `cancel`.
pub(crate) fn start(source: Source, publisher: Publisher, cancel: CancellationToken) -> JoinHandle<()> {
    match source {
        Source::File { catalog, seen } => tokio::spawn(file::run(catalog, seen, publisher, cancel)),
        Source::Consul(settings) => tokio::spawn(consul::run(settings, publisher, cancel)),
        Source::Sql(settings) => tokio::spawn(sql::poll::run(settings, publisher, cancel)),
        Source::Etcd(settings) => tokio::spawn(etcd::watch::run(settings, publisher, cancel)),
    }
}
