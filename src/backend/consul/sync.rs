//! The sync loop: discovery, the watches, service reads, publishing and persisting (the state
//! machine of the module documentation).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch as signal};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::client::Client;
use super::store::Store;
use super::watch::{self, Body, Topic};
use super::wire::{AddressSet, AgentSelf, WireEntry};
use super::{COALESCE, CONFIRM_EVERY, Event, FIRST_SYNC_GRACE, PERSIST_EVERY, Settings, SyncError};
use crate::backend::backoff::Backoff;
use crate::backend::status::FailureReason;
use crate::catalog::model::is_dns_label;
use crate::catalog::{BuildOptions, Catalog, Snapshot, persist};
use crate::telemetry::{self, Backend};

type Key = (String, String);

/// The sync loop's state; see the module documentation.
pub struct Syncer {
    settings: Settings,
    client: Client,
    catalog: Arc<Catalog>,
    options: signal::Receiver<Arc<BuildOptions>>,
    state_dir: Option<PathBuf>,
    store: Store,
    local_dc: String,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    queue: BTreeSet<Key>,
    in_flight: BTreeSet<Key>,
    again: BTreeSet<Key>,
    retry: BTreeSet<Key>,
    retry_at: Option<Instant>,
    fetch_backoff: Backoff,
    max_fetches: usize,
    first_dirty: Option<Instant>,
    last_publish: Instant,
    publish_cost: Duration,
    full_rebuild: bool,
    first_live: Option<Instant>,
    published: bool,
    persist_due: Option<Instant>,
    last_persist: Option<Instant>,
    last_confirm: Instant,
    persisting: Option<JoinHandle<()>>,
}

impl Syncer {
    /// A syncer publishing into `catalog`; `restored` stands in for each datacenter until it
    /// has synced.
    pub fn new(
        settings: Settings,
        catalog: Arc<Catalog>,
        options: signal::Receiver<Arc<BuildOptions>>,
        state_dir: Option<PathBuf>,
        restored: Option<persist::Restored>,
    ) -> Result<Syncer, SyncError> {
        let client = Client::new(&settings)?;
        let mut store = Store::default();
        let mut local_dc = options.borrow().datacenter.clone();
        if let Some(restored) = restored {
            local_dc = restored.datacenter;
            store.seed(restored.data);
        }
        let local_dc = settings.datacenter.clone().unwrap_or(local_dc);
        Ok(Syncer {
            client,
            catalog,
            options,
            state_dir,
            store,
            local_dc,
            events: mpsc::channel(1024),
            queue: BTreeSet::new(),
            in_flight: BTreeSet::new(),
            again: BTreeSet::new(),
            retry: BTreeSet::new(),
            retry_at: None,
            fetch_backoff: Backoff::try_new(watch::BACKOFF_MIN, watch::BACKOFF_MAX, 0.5).expect("valid constants"),
            max_fetches: settings.max_conns.saturating_sub(Topic::ALL.len()).max(1),
            settings,
            first_dirty: None,
            last_publish: Instant::now(),
            publish_cost: Duration::ZERO,
            full_rebuild: false,
            first_live: None,
            published: false,
            persist_due: None,
            last_persist: None,
            last_confirm: Instant::now(),
            persisting: None,
        })
    }

    /// Runs until `cancel`; writes a pending on-disk snapshot before returning.
    pub async fn run(mut self, cancel: CancellationToken) {
        let Some(served) = self.bootstrap(&cancel).await else { return };
        for dc in &served {
            let remote = !dc.eq_ignore_ascii_case(&self.local_dc);
            let set = if remote && self.settings.translate_wan_addrs { AddressSet::Wan } else { AddressSet::Lan };
            self.store.add_dc(dc, set);
            for topic in Topic::ALL {
                let events = self.events.0.clone();
                tokio::spawn(watch::run(self.client.clone(), dc.clone(), topic, events, cancel.child_token()));
            }
        }
        self.store.retain_dcs(&served);
        self.max_fetches = self.settings.max_conns.saturating_sub(Topic::ALL.len() * served.len()).max(1);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = cancel.cancelled() => break,
                event = self.events.1.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                changed = self.options.changed() => {
                    if changed.is_err() { break; }
                    self.full_rebuild = true;
                }
                _ = sleep_until(deadline) => {}
            }
            while let Ok(event) = self.events.1.try_recv() {
                self.handle(event);
            }
            self.start_fetches(&cancel);
            self.publish_when_due().await;
            self.persist_when_due(false);
        }
        self.persist_when_due(true);
        if let Some(task) = self.persisting.take() {
            let _ = task.await;
        }
    }

    /// Finds the local datacenter and the datacenters to serve; retries until Consul answers.
    async fn bootstrap(&mut self, cancel: &CancellationToken) -> Option<Vec<String>> {
        let mut backoff = Backoff::try_new(watch::BACKOFF_MIN, watch::BACKOFF_MAX, 0.5).expect("valid constants");
        loop {
            let attempt = tokio::select! {
                _ = cancel.cancelled() => return None,
                attempt = self.discover() => attempt,
            };
            match attempt {
                Ok(served) => return Some(served),
                Err(error) => {
                    self.failed(error.reason());
                    let delay = backoff.next_delay();
                    if backoff.failures() == 1 {
                        warn!(%error, "Consul is not answering; serving what is known and retrying.");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn discover(&mut self) -> Result<Vec<String>, SyncError> {
        fn decode(url: &'static str) -> impl Fn(serde_json::Error) -> SyncError {
            move |e| SyncError::Decode { url: url.into(), message: e.to_string() }
        }
        let agent_dc = match self.client.get("/v1/agent/self", None, None).await {
            Ok(reply) => Some(serde_json::from_slice::<AgentSelf>(&reply.body).map_err(decode("/v1/agent/self"))?),
            Err(SyncError::Status { status: 403, .. }) => {
                info!("The Consul token may not read /v1/agent/self; the local datacenter comes from configuration.");
                None
            }
            Err(error) => return Err(error),
        }
        .map(|agent| agent.config.datacenter);
        let reply = self.client.get("/v1/catalog/datacenters", None, None).await?;
        let listed: Vec<String> = serde_json::from_slice::<Option<Vec<String>>>(&reply.body)
            .map_err(decode("/v1/catalog/datacenters"))?
            .unwrap_or_default();
        if let Some(local) = self.settings.datacenter.clone().or(agent_dc).or_else(|| listed.first().cloned()) {
            self.local_dc = local;
        }
        let mut served: Vec<String> = match &self.settings.datacenters {
            None => listed.clone(),
            Some(wanted) => {
                for missing in wanted.iter().filter(|w| !listed.iter().any(|l| l.eq_ignore_ascii_case(w))) {
                    warn!(datacenter = %missing, "Datacenter not known to Consul; not served.");
                }
                listed.iter().filter(|l| wanted.iter().any(|w| w.eq_ignore_ascii_case(l))).cloned().collect()
            }
        };
        served.retain(|dc| is_dns_label(dc));
        served.sort_by_key(|dc| !dc.eq_ignore_ascii_case(&self.local_dc));
        let most = (self.settings.max_conns.saturating_sub(1) / Topic::ALL.len()).max(1);
        if served.len() > most {
            warn!(
                served = most,
                listed = served.len(),
                "Too few Consul connections for every datacenter; raise consul_max_conns."
            );
            served.truncate(most);
        }
        info!(local = %self.local_dc, datacenters = ?served, consul = %self.settings.address, "Consul found; syncing.");
        Ok(served)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Watch { dc, body, index } => {
                self.read_ok();
                match body {
                    Body::Services(list) => {
                        for service in self.store.apply_services(&dc, list) {
                            self.enqueue((dc.clone(), service));
                        }
                    }
                    Body::Nodes(nodes) => log_skipped(&dc, self.store.apply_nodes(&dc, nodes)),
                    Body::Checks(checks) => self.store.apply_checks(&dc, checks, index),
                    Body::Ingress(entries) => self.store.apply_ingress(&dc, &entries),
                }
                self.after_change(&dc);
            }
            Event::Health { dc, service, result } => {
                let key = (dc.clone(), service.clone());
                self.in_flight.remove(&key);
                match result {
                    Ok(entries) => {
                        self.read_ok();
                        self.fetch_backoff.reset();
                        log_skipped(&dc, self.store.apply_health(&dc, &service, entries));
                        if self.again.remove(&key) {
                            self.enqueue(key);
                        }
                    }
                    Err(error) => {
                        debug!(%error, "Consul service read failed; retrying.");
                        self.failed(error.reason());
                        self.again.remove(&key);
                        self.retry.insert(key);
                        if self.retry_at.is_none() {
                            self.retry_at = Some(Instant::now() + self.fetch_backoff.next_delay());
                        }
                    }
                }
                self.after_change(&dc);
            }
            Event::Confirmed => {
                self.read_ok();
                self.confirm_persisted();
            }
            Event::Failed(reason) => self.failed(reason),
        }
    }

    fn enqueue(&mut self, key: Key) {
        if self.in_flight.contains(&key) {
            self.again.insert(key);
        } else {
            self.queue.insert(key);
        }
    }

    fn after_change(&mut self, dc: &str) {
        if self.store.is_dirty() && self.first_dirty.is_none() {
            self.first_dirty = Some(Instant::now());
        }
        let pending =
            |set: &BTreeSet<Key>| set.range((dc.to_owned(), String::new())..).next().is_some_and(|(d, _)| d == dc);
        let fetching = pending(&self.queue) || pending(&self.in_flight) || pending(&self.retry);
        if self.store.try_go_live(dc, fetching) {
            self.full_rebuild = true;
            self.first_live.get_or_insert_with(Instant::now);
        }
    }

    fn start_fetches(&mut self, cancel: &CancellationToken) {
        if self.retry_at.is_some_and(|at| at <= Instant::now()) {
            self.retry_at = None;
            let retry = std::mem::take(&mut self.retry);
            for key in retry {
                self.enqueue(key);
            }
        }
        while self.in_flight.len() < self.max_fetches {
            let Some(key) = self.queue.pop_first() else { break };
            self.in_flight.insert(key.clone());
            let (client, events, cancel) = (self.client.clone(), self.events.0.clone(), cancel.clone());
            tokio::spawn(async move {
                let (dc, service) = key;
                let read = read_health(&client, &dc, &service);
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    result = read => result,
                };
                let _ = events.send(Event::Health { dc, service, result }).await;
            });
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.publish_deadline(), self.retry_at, self.persist_due].into_iter().flatten().min()
    }

    /// When a full rebuild is due. The first waits for every datacenter to sync, or for
    /// [`FIRST_SYNC_GRACE`] after the first one did: publishing one datacenter while another is
    /// still syncing would turn the other's names from SERVFAIL into NXDOMAIN, which clients
    /// such as Kong cache. Later rebuilds (a datacenter going live, new options) are due at once.
    fn full_rebuild_deadline(&self) -> Option<Instant> {
        let first_live = self.first_live.filter(|_| self.full_rebuild)?;
        match self.published || self.store.all_live() {
            true => Some(Instant::now()),
            false => Some(first_live + FIRST_SYNC_GRACE),
        }
    }

    /// When the next publish is due: a full rebuild per [`Self::full_rebuild_deadline`], else
    /// once changes have settled for [`COALESCE`] and at least twice the last update's cost
    /// after the last publish.
    fn publish_deadline(&self) -> Option<Instant> {
        if let Some(at) = self.full_rebuild_deadline() {
            return Some(at);
        }
        let first = self.first_dirty.filter(|_| self.published)?;
        Some((first + COALESCE).max(self.last_publish + COALESCE.max(self.publish_cost * 2)))
    }

    fn effective_options(&self) -> Arc<BuildOptions> {
        let mut options = (**self.options.borrow()).clone();
        options.datacenter = self.local_dc.clone();
        Arc::new(options)
    }

    async fn publish_when_due(&mut self) {
        // Deadlines first, the clock after: "due at once" is `Instant::now()` inside them.
        let (full, update) = (self.full_rebuild_deadline(), self.publish_deadline());
        let now = Instant::now();
        if full.is_some_and(|at| at <= now) {
            self.full_rebuild = false;
            self.publish_full().await;
        } else if update.is_some_and(|at| at <= now) {
            self.publish_update();
        }
    }

    async fn publish_full(&mut self) {
        let started = Instant::now();
        self.first_dirty = None;
        self.store.refresh_health();
        self.store.take_dirty();
        let data = self.store.catalog_data();
        let options = self.effective_options();
        let built = tokio::task::spawn_blocking(move || {
            let snapshot = Snapshot::build(&data, options);
            drop(data);
            crate::memory::release_freed();
            snapshot
        })
        .await;
        let snapshot = match built {
            Ok(snapshot) => snapshot,
            Err(e) => return error!(error = %e, "Building the catalog failed; the previous one keeps serving."),
        };
        let counts = snapshot.counts();
        let serial = self.catalog.publish(snapshot);
        self.after_publish(started);
        telemetry::sync_succeeded(Backend::Consul, "sync", counts, serial);
        debug!(took_ms = started.elapsed().as_millis() as u64, "Full Consul build.");
    }

    /// A successful read: the catalog is current as of now (`/ready`'s clock).
    fn read_ok(&self) {
        telemetry::sync_unchanged(Backend::Consul);
    }

    /// A failed read or write, counted by reason (already logged by whoever saw it).
    fn failed(&self, reason: FailureReason) {
        telemetry::metrics().sync_failure(Backend::Consul, reason.label());
    }

    fn publish_update(&mut self) {
        let started = Instant::now();
        self.first_dirty = None;
        self.store.refresh_health();
        let dirty = self.store.take_dirty();
        let update = self.store.update(&dirty);
        if update.is_empty() {
            return;
        }
        let changed = update.services.len();
        let next = self.catalog.load_full().update(&update, self.effective_options());
        let serial = self.catalog.publish(next);
        self.after_publish(started);
        telemetry::metrics().published(Backend::Consul);
        debug!(changed, serial, took_us = started.elapsed().as_micros() as u64, "Consul change published.");
    }

    fn after_publish(&mut self, started: Instant) {
        self.publish_cost = started.elapsed();
        self.last_publish = Instant::now();
        self.published = true;
        if self.state_dir.is_some() && self.persist_due.is_none() {
            let earliest = self.last_persist.map_or(self.last_publish, |at| at + PERSIST_EVERY);
            self.persist_due = Some(earliest.max(self.last_publish));
        }
    }

    /// Writes the catalog to `state_dir` when due (or now, at shutdown), one write at a time.
    fn persist_when_due(&mut self, now: bool) {
        let (Some(dir), Some(due)) = (self.state_dir.clone(), self.persist_due) else { return };
        if (!now && due > Instant::now()) || self.persisting.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.persist_due = None;
        self.last_persist = Some(Instant::now());
        let shared = self.store.shared();
        let datacenter = self.local_dc.clone();
        self.persisting = Some(tokio::task::spawn_blocking(move || {
            let data = shared.into_data();
            persist_now(&dir, data, &datacenter);
        }));
    }
    /// The data still matches Consul: refresh the on-disk snapshot's age (cheap, rate-limited).
    fn confirm_persisted(&mut self) {
        let Some(dir) = self.state_dir.clone() else { return };
        if !self.published || self.persist_due.is_some() || self.last_confirm.elapsed() < CONFIRM_EVERY {
            return;
        }
        self.last_confirm = Instant::now();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = persist::confirm(&dir) {
                debug!(%error, "Cannot mark the on-disk catalog as current.");
            }
        });
    }
}

async fn read_health(client: &Client, dc: &str, service: &str) -> Result<Vec<WireEntry>, SyncError> {
    let path = format!("/v1/health/service/{service}");
    let reply = client.get(&path, Some(dc), None).await?;
    serde_json::from_slice::<Option<Vec<WireEntry>>>(&reply.body)
        .map(Option::unwrap_or_default)
        .map_err(|e| SyncError::Decode { url: path, message: e.to_string() })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn log_skipped(dc: &str, skipped: Vec<String>) {
    if let Some(first) = skipped.first() {
        debug!(dc, count = skipped.len(), first = %first, "Consul entries DNS cannot carry were skipped.");
    }
}

/// Writes `data` to `dir` (on a blocking thread), counting a failure.
fn persist_now(dir: &std::path::Path, data: crate::catalog::model::CatalogData, datacenter: &str) {
    match persist::persist(dir, &data, datacenter) {
        Ok(()) => {
            debug!(instances = data.instances.len(), "Catalog written to the state directory.");
            drop(data);
            crate::memory::release_freed();
        }
        Err(error) => {
            warn!(%error, "Cannot write the catalog to the state directory.");
            telemetry::metrics().sync_failure(Backend::Consul, FailureReason::Persist.label());
        }
    }
}
