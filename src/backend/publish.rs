//! The one way a source reaches DNS: a [`Publisher`] takes what the source read and owns
//! everything after it, the same for every source.
//!
//! # State machine
//! A publisher starts *seeded*: the catalog serves the seed (restored from disk, the static
//! catalog, or an unsynced empty snapshot) and the [`Mirror`] holds the restored data, if any,
//! which stands in until the source describes it. The first publish is a full build; it makes
//! the publisher *live*. From then on each publish is an incremental [`Snapshot::update`] of
//! what the mirror marked dirty, except after new build options (SIGHUP) or a new local
//! datacenter, which rebuild everything. Full builds run on a blocking thread; updates cost
//! what changed and run inline. Changes made through [`Publisher::mirror`] are coalesced:
//! published once they have settled for [`COALESCE`] and at least twice the last update's cost
//! after the previous publish ([`Schedule`]).
//!
//! # Invariants and failure behaviour
//! - Nothing is published from a failed or rejected read: the last good snapshot keeps serving.
//!   A failure is counted by [`Failure`] reason and logged at WARN once per streak (then at
//!   DEBUG); the first success after it logs the recovery.
//! - Every successful read, changed or not, moves the catalog's "as of" time (`/ready` and
//!   `max_stale` are computed from it).
//! - A publish that drops every service of a non-empty catalog is logged as a warning.
//! - With a state directory, the published catalog is written there (temp file, fsync,
//!   rename) at most every [`PERSIST_EVERY`], off the async runtime, one write at a time; a read
//!   that finds nothing new marks it current at most every [`CONFIRM_EVERY`].

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::backend::failure::Failure;
use crate::backend::mirror::Mirror;
use crate::catalog::model::{CatalogData, ModelError};
use crate::catalog::persist::{self, Restored};
use crate::catalog::snapshot::Counts;
use crate::catalog::{BuildOptions, Catalog, Snapshot};
use crate::telemetry::{self, Backend};

/// Shortest time between two publishes while changes stream in.
pub(crate) const COALESCE: Duration = Duration::from_millis(5);
/// Shortest time between two writes of the on-disk catalog.
pub(crate) const PERSIST_EVERY: Duration = Duration::from_secs(2);
/// Shortest time between two "still current" marks on the on-disk catalog.
pub(crate) const CONFIRM_EVERY: Duration = Duration::from_secs(60);

/// When coalesced changes are published.
#[derive(Debug)]
pub(crate) struct Schedule {
    first_dirty: Option<Instant>,
    last_publish: Instant,
    cost: Duration,
}

impl Schedule {
    fn new(now: Instant) -> Schedule {
        Schedule { first_dirty: None, last_publish: now, cost: Duration::ZERO }
    }

    /// A change arrived at `now`.
    pub(crate) fn changed(&mut self, now: Instant) {
        self.first_dirty.get_or_insert(now);
    }

    /// When the pending changes are due: settled for [`COALESCE`], and at least twice the last
    /// publish's cost after it (so a catalog that churns faster than it builds still answers).
    pub(crate) fn due(&self) -> Option<Instant> {
        let first = self.first_dirty?;
        Some((first + COALESCE).max(self.last_publish + COALESCE.max(self.cost * 2)))
    }

    /// A publish started at `started` finished at `now`. Only an update's cost spaces the
    /// next update: a full build (the first sync, new options) says nothing about what an
    /// update costs, and backing off twice its time would hold the first changes after a large
    /// sync for seconds.
    pub(crate) fn published(&mut self, started: Instant, now: Instant, full: bool) {
        self.first_dirty = None;
        self.cost = if full { Duration::ZERO } else { now.saturating_duration_since(started) };
        self.last_publish = now;
    }
}

/// Writes of the on-disk catalog.
#[derive(Debug)]
struct Persistence {
    dir: PathBuf,
    due: Option<Instant>,
    last_write: Option<Instant>,
    last_confirm: Instant,
    writing: Option<JoinHandle<()>>,
}

/// A running source's handle on the catalog; see the module documentation.
#[derive(Debug)]
pub(crate) struct Publisher {
    backend: Backend,
    catalog: Arc<Catalog>,
    options: watch::Receiver<Arc<BuildOptions>>,
    /// The source's word on the local datacenter (Consul's agent); else the configuration's.
    datacenter: Option<String>,
    mirror: Mirror,
    /// Options of the last publish; `None` until the source first published.
    published_with: Option<Arc<BuildOptions>>,
    schedule: Schedule,
    persistence: Option<Persistence>,
    failing: bool,
}

impl Publisher {
    /// A publisher for `backend` over `catalog` (serving the seed). `restored` stands in until
    /// the source describes its datacenters; `datacenter` is a fixed local datacenter (else the
    /// restored one, else the configuration's).
    pub(crate) fn new(
        backend: Backend,
        catalog: Arc<Catalog>,
        options: watch::Receiver<Arc<BuildOptions>>,
        state_dir: Option<PathBuf>,
        restored: Option<Restored>,
    ) -> Publisher {
        let (mirror, datacenter) = match restored {
            Some(restored) => (Mirror::seeded(restored.data), Some(restored.datacenter)),
            None => (Mirror::default(), None),
        };
        // Every reason is exported at 0 from the start: a dashboard shows "none yet", not "no data".
        telemetry::sync_failure_reasons(backend, &Failure::ALL.map(Failure::label));
        let now = Instant::now();
        let persistence =
            state_dir.map(|dir| Persistence { dir, due: None, last_write: None, last_confirm: now, writing: None });
        Publisher {
            backend,
            catalog,
            options,
            datacenter,
            mirror,
            published_with: None,
            schedule: Schedule::new(now),
            persistence,
            failing: false,
        }
    }

    /// The local datacenter: answers for names without one, and the home of entries a source
    /// stores without one.
    pub(crate) fn datacenter(&self) -> String {
        self.datacenter.clone().unwrap_or_else(|| self.options.borrow().datacenter.clone())
    }

    /// The source names the local datacenter (Consul's agent does); the next publish rebuilds
    /// everything when it differs.
    pub(crate) fn set_datacenter(&mut self, dc: &str) {
        self.datacenter = Some(dc.to_owned());
    }

    /// The build options in force: the configuration's, with the local datacenter decided here.
    pub(crate) fn options(&self) -> Arc<BuildOptions> {
        let configured = self.options.borrow();
        match &self.datacenter {
            Some(dc) if *dc != configured.datacenter => {
                let mut options = (**configured).clone();
                options.datacenter = dc.clone();
                Arc::new(options)
            }
            _ => Arc::clone(&configured),
        }
    }

    /// Resolves when the configuration's build options change (SIGHUP); the source then
    /// re-reads or calls [`Publisher::publish`]. Pending forever once the daemon stops.
    pub(crate) async fn options_changed(&mut self) {
        if self.options.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.options.borrow_and_update();
    }

    /// The mirror, for sources that change the catalog piece by piece; changes are published
    /// when [`Publisher::due`] says (call [`Publisher::changed`] after making them).
    pub(crate) fn mirror(&mut self) -> &mut Mirror {
        &mut self.mirror
    }

    /// Changes were made through [`Publisher::mirror`].
    pub(crate) fn changed(&mut self) {
        if self.mirror.is_dirty() {
            self.schedule.changed(Instant::now());
        }
    }

    /// When [`Publisher::tick`] has work: coalesced changes or a write of the on-disk catalog.
    pub(crate) fn due(&self) -> Option<Instant> {
        let publish = self.schedule.due().filter(|_| self.published_with.is_some());
        [publish, self.persistence.as_ref().and_then(|p| p.due)].into_iter().flatten().min()
    }

    /// Does what is due now.
    pub(crate) async fn tick(&mut self) {
        let now = Instant::now();
        if self.published_with.is_some() && self.schedule.due().is_some_and(|at| at <= now) {
            self.publish("change").await;
        }
        self.persist_when_due(false);
    }

    /// A complete catalog read from the source: validated, diffed with what is served, and
    /// published at once. `Err` when it cannot be served: nothing published, counted.
    pub(crate) async fn full(&mut self, data: CatalogData, trigger: &'static str) -> Result<(), ModelError> {
        if let Err(error) = data.validate() {
            self.failed(Failure::Invalid, &error);
            return Err(error);
        }
        self.mirror.replace(data);
        self.publish(trigger).await;
        Ok(())
    }

    /// A complete catalog read from a source that keeps no mirror (the static file): built whole
    /// off the async runtime and published. `Err` when it cannot be served.
    pub(crate) async fn rebuild(&mut self, data: CatalogData, trigger: &'static str) -> Result<(), ModelError> {
        if let Err(error) = data.validate() {
            self.failed(Failure::Invalid, &error);
            return Err(error);
        }
        let (started, options) = (Instant::now(), self.options());
        let before = self.catalog.load().counts();
        let Some(serial) = self.build_and_publish(move || data, Arc::clone(&options)).await else { return Ok(()) };
        self.after_publish(started, options, before, serial, trigger, true);
        Ok(())
    }

    /// Publishes what the mirror holds: a full build the first time and after new options,
    /// else an update of what changed. A read that changed nothing counts as
    /// [`Publisher::unchanged`].
    pub(crate) async fn publish(&mut self, trigger: &'static str) {
        let started = Instant::now();
        let options = self.options();
        let full = self.published_with.as_ref().is_none_or(|used| **used != *options);
        if !full && !self.mirror.is_dirty() {
            self.schedule.published(started, started, false);
            return self.unchanged();
        }
        let before = self.catalog.load().counts();
        let serial = if full {
            self.mirror.take_dirty();
            let shared = self.mirror.shared();
            self.build_and_publish(move || shared.into_data(), Arc::clone(&options)).await
        } else {
            Some(self.publish_update(&options))
        };
        let Some(serial) = serial else { return };
        self.after_publish(started, options, before, serial, trigger, full);
        self.schedule_persist();
    }

    fn after_publish(
        &mut self,
        started: Instant,
        options: Arc<BuildOptions>,
        before: Counts,
        serial: u32,
        trigger: &'static str,
        full: bool,
    ) {
        self.schedule.published(started, Instant::now(), full);
        self.published_with = Some(options);
        self.succeeded();
        let counts = self.catalog.load().counts();
        if before.services > 0 && counts.services == 0 {
            warn!(backend = self.backend.label(), before = before.services, "The catalog now has no services at all.");
        }
        if full || trigger != "change" {
            telemetry::sync_succeeded(self.backend, trigger, counts, serial);
        } else {
            telemetry::published(self.backend);
            debug!(serial, took_us = started.elapsed().as_micros() as u64, "Catalog change published.");
        }
    }

    /// Builds a snapshot of `data()` on a blocking thread and publishes it; its serial.
    async fn build_and_publish(
        &mut self,
        data: impl FnOnce() -> CatalogData + Send + 'static,
        options: Arc<BuildOptions>,
    ) -> Option<u32> {
        let built = tokio::task::spawn_blocking(move || {
            let data = data();
            let snapshot = Snapshot::build(&data, options);
            (snapshot, data)
        })
        .await;
        match built {
            Ok((snapshot, data)) => {
                let serial = self.catalog.publish(snapshot);
                // The model is freed once the snapshot answers, not before.
                tokio::task::spawn_blocking(move || {
                    drop(data);
                    crate::memory::release_freed();
                });
                Some(serial)
            }
            Err(error) => {
                self.failed(Failure::Build, &error);
                None
            }
        }
    }

    fn publish_update(&mut self, options: &Arc<BuildOptions>) -> u32 {
        let dirty = self.mirror.take_dirty();
        let update = self.mirror.update(&dirty);
        let next = self.catalog.load_full().update(&update, Arc::clone(options));
        self.catalog.publish(next)
    }

    /// A read found nothing new: the served catalog is current as of now.
    pub(crate) fn unchanged(&mut self) {
        self.succeeded();
        self.confirm_persisted();
    }

    fn succeeded(&mut self) {
        telemetry::sync_unchanged(self.backend);
        if std::mem::take(&mut self.failing) {
            info!(backend = self.backend.label(), "Catalog source answering again.");
        }
    }

    /// A read failed; nothing is published. Logged at WARN once per failure streak.
    pub(crate) fn failed(&mut self, failure: Failure, error: &dyn Display) {
        let first = !std::mem::replace(&mut self.failing, true);
        telemetry::sync_failed(self.backend, failure.label(), error, first);
    }

    /// A read failed, logged at WARN when `loud` (a new problem, such as a token refusal not
    /// yet reported) and else at DEBUG, whatever the streak.
    pub(crate) fn failed_as(&mut self, failure: Failure, error: &dyn Display, loud: bool) {
        self.failing = true;
        telemetry::sync_failed(self.backend, failure.label(), error, loud);
    }

    /// One entry of the source could not be served and was left out (the rest is published).
    pub(crate) fn skipped(&mut self, id: &str, reason: &dyn Display) {
        telemetry::entry_skipped(self.backend, id, reason);
    }

    fn schedule_persist(&mut self) {
        let Some(p) = self.persistence.as_mut() else { return };
        if p.due.is_none() {
            let now = Instant::now();
            p.due = Some(p.last_write.map_or(now, |at| (at + PERSIST_EVERY).max(now)));
        }
    }

    /// Writes the catalog to the state directory when due (or now, `force`), one write at a time.
    fn persist_when_due(&mut self, force: bool) {
        let datacenter = self.datacenter();
        let Some(p) = self.persistence.as_mut() else { return };
        let Some(due) = p.due else { return };
        if (!force && due > Instant::now()) || p.writing.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        p.due = None;
        p.last_write = Some(Instant::now());
        let (dir, shared, backend) = (p.dir.clone(), self.mirror.shared(), self.backend);
        p.writing = Some(tokio::task::spawn_blocking(move || {
            let data = shared.into_data();
            match persist::persist(&dir, &data, &datacenter) {
                Ok(()) => debug!(instances = data.instances.len(), "Catalog written to the state directory."),
                Err(error) => {
                    warn!(%error, "Cannot write the catalog to the state directory.");
                    telemetry::metrics().sync_failure(backend, Failure::Persist.label());
                }
            }
            drop(data);
            crate::memory::release_freed();
        }));
    }

    /// The data still matches the source: refresh the on-disk catalog's age (rate-limited).
    fn confirm_persisted(&mut self) {
        let Some(p) = self.persistence.as_mut() else { return };
        if self.published_with.is_none() || p.due.is_some() || p.last_confirm.elapsed() < CONFIRM_EVERY {
            return;
        }
        p.last_confirm = Instant::now();
        let dir = p.dir.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = persist::confirm(&dir) {
                debug!(%error, "Cannot mark the on-disk catalog as current.");
            }
        });
    }

    /// At shutdown: writes a pending on-disk catalog and waits for the write.
    pub(crate) async fn finish(mut self) {
        self.persist_when_due(true);
        if let Some(task) = self.persistence.and_then(|p| p.writing) {
            let _ = task.await;
        }
    }
}

/// Sleeps until `deadline` (forever for `None`): the arm of a source's `select!` that wakes it
/// for [`Publisher::tick`].
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The publish schedule on tokio's paused clock: coalescing and back-pressure.
    #[tokio::test(start_paused = true)]
    async fn schedule_coalesces_and_backs_off_after_a_costly_publish() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start);
        assert_eq!(schedule.due(), None, "nothing changed");
        schedule.changed(start);
        tokio::time::advance(Duration::from_millis(2)).await;
        schedule.changed(Instant::now());
        assert_eq!(schedule.due(), Some(start + COALESCE), "due after the first change settles");
        schedule.published(start + COALESCE, start + COALESCE + Duration::from_millis(40), false);
        assert_eq!(schedule.due(), None);
        let after = start + COALESCE + Duration::from_millis(40);
        schedule.changed(after);
        assert_eq!(schedule.due(), Some(after + Duration::from_millis(80)), "twice the last update's cost");
        let full_done = after + Duration::from_secs(3);
        schedule.published(after, full_done, true);
        schedule.changed(full_done);
        assert_eq!(schedule.due(), Some(full_done + COALESCE), "a full build's cost does not hold the next update");
    }
}
