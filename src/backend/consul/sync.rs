//! The sync loop: discovery, the watches, service reads, publishing and persisting (the state
//! machine of the module documentation).

use std::collections::BTreeSet;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::Client;
use super::store::Store;
use super::watch::{self, Body, Topic};
use super::wire::{AddressSet, AgentSelf, WireEntry};
use super::{Event, FIRST_SYNC_GRACE, Settings, SyncError};
use crate::backend::backoff::Backoff;
use crate::backend::failure::Failure;
use crate::backend::publish::{Publisher, sleep_until};
use crate::catalog::model::is_dns_label;

type Key = (String, String);

/// The sync loop's state; see the module documentation.
pub(crate) struct Syncer {
    settings: Settings,
    client: Client,
    publisher: Publisher,
    store: Store,
    local_dc: String,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    fetches: Fetches,
    /// Datacenters that went live and are not yet in the mirror.
    newly_live: BTreeSet<String>,
    first_live: Option<Instant>,
    published: bool,
    /// Token refusals already logged at WARN (every read fails alike while a token is wrong).
    refusals: BTreeSet<String>,
    /// When Consul last refused the token.
    last_refusal: Option<Instant>,
    /// The note that the token may not read /v1/agent/self has been logged.
    agent_self_said: bool,
}

/// Reads that succeed for this long with no refusal in between end a refusal: the next one is
/// logged at WARN again.
const REFUSAL_QUIET: std::time::Duration = std::time::Duration::from_secs(60);

/// Service reads: queued, in flight, to read again once back, and failed (retried later).
///
/// Two classes: `first` holds reads of services known to have changed (new or re-tagged in
/// the services list, on a node that left or came back, the whole first sync) and may use
/// every connection; `queue` is the sweep that finds changes the services list cannot show
/// (H3.4), and only [`Fetches::sweep_max`] of its reads are in flight at once. A sweep of a
/// large datacenter is thousands of reads; at full concurrency it would take both the
/// daemon's and Consul's CPU for seconds after every registration and hold up the changes
/// that are known (measured: a registration took 224 ms p50 to reach DNS, 348 ms p99, with
/// the sweep unpaced).
struct Fetches {
    /// Read before `queue`: services known to have changed.
    first: BTreeSet<Key>,
    queue: BTreeSet<Key>,
    in_flight: BTreeSet<Key>,
    /// The reads in flight that came from `queue`.
    sweeping: BTreeSet<Key>,
    again: BTreeSet<Key>,
    retry: BTreeSet<Key>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    max: usize,
}

impl Syncer {
    /// A syncer publishing through `publisher`, whose mirror holds the restored catalog (which
    /// stands in for each datacenter until it has synced).
    pub(crate) fn new(settings: Settings, client: Client, publisher: Publisher) -> Syncer {
        let local_dc = settings.datacenter.clone().unwrap_or_else(|| publisher.datacenter());
        Syncer {
            client,
            publisher,
            store: Store::default(),
            local_dc,
            events: mpsc::channel(1024),
            fetches: Fetches {
                first: BTreeSet::new(),
                queue: BTreeSet::new(),
                in_flight: BTreeSet::new(),
                sweeping: BTreeSet::new(),
                again: BTreeSet::new(),
                retry: BTreeSet::new(),
                retry_at: None,
                backoff: Backoff::try_new(watch::BACKOFF_MIN, watch::BACKOFF_MAX, 0.5).expect("valid constants"),
                max: settings.max_conns.saturating_sub(Topic::ALL.len()).max(1),
            },
            settings,
            newly_live: BTreeSet::new(),
            first_live: None,
            published: false,
            refusals: BTreeSet::new(),
            last_refusal: None,
            agent_self_said: false,
        }
    }

    /// Runs until `cancel`; writes a pending on-disk snapshot before returning.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let Some(served) = self.bootstrap(&cancel).await else { return self.publisher.finish().await };
        self.publisher.set_datacenter(&self.local_dc);
        for dc in &served {
            let remote = !dc.eq_ignore_ascii_case(&self.local_dc);
            let set = if remote && self.settings.translate_wan_addrs { AddressSet::Wan } else { AddressSet::Lan };
            self.store.add_dc(dc, set);
            for topic in Topic::ALL {
                let events = self.events.0.clone();
                let watch = watch::run(self.client.clone(), dc.clone(), topic, events, cancel.child_token());
                crate::supervise::spawn("consul_watch", watch);
            }
        }
        self.forget_unserved(&served);
        self.fetches.max = self.settings.max_conns.saturating_sub(Topic::ALL.len() * served.len()).max(1);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = cancel.cancelled() => break,
                event = self.events.1.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                _ = self.publisher.options_changed() => {
                    if self.published {
                        self.publisher.publish("reload requested").await;
                    }
                }
                _ = sleep_until(deadline) => {}
            }
            while let Ok(event) = self.events.1.try_recv() {
                self.handle(event);
            }
            self.start_fetches(&cancel);
            self.publish_when_due().await;
        }
        self.publisher.finish().await;
    }

    /// Restored datacenters that are no longer served leave the mirror (and the catalog at
    /// the first publish).
    fn forget_unserved(&mut self, served: &[String]) {
        let mirror = self.publisher.mirror();
        let restored: Vec<String> = mirror.datacenter_names();
        for dc in restored.iter().filter(|dc| !served.iter().any(|s| s.eq_ignore_ascii_case(dc))) {
            mirror.remove_datacenter(dc);
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
                    self.failed(error.reason(), &format_args!("finding the datacenters: {error}"));
                    let delay = backoff.next_delay();
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
            Err(SyncError::Status { status: 403, body, .. }) if !body.contains("ACL not found") => {
                if !std::mem::replace(&mut self.agent_self_said, true) {
                    info!(
                        "The Consul token may not read /v1/agent/self (agent:read); the local datacenter comes from \
                         configuration, else the first one Consul lists."
                    );
                }
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
                self.answered();
                self.publisher.unchanged();
                match body {
                    Body::Services(list) => {
                        let started = std::time::Instant::now();
                        let (first, rest) = self.store.apply_services(&dc, list);
                        tracing::debug!(
                            dc,
                            changed = first.len(),
                            took_us = started.elapsed().as_micros() as u64,
                            "Services list applied."
                        );
                        for service in first {
                            self.fetches.enqueue_first((dc.clone(), service));
                        }
                        for service in rest {
                            self.fetches.enqueue((dc.clone(), service));
                        }
                    }
                    Body::Nodes(nodes) => {
                        let (skipped, reread) = self.store.apply_nodes(&dc, nodes);
                        self.report_skipped(&dc, skipped);
                        for service in reread {
                            self.fetches.enqueue_first((dc.clone(), service));
                        }
                    }
                    Body::Checks(checks) => self.store.apply_checks(&dc, checks, index),
                    Body::Ingress(entries) => self.store.apply_ingress(&dc, &entries),
                }
                self.after_change(&dc);
            }
            Event::Health { dc, service, result } => {
                let key = (dc.clone(), service.clone());
                self.fetches.in_flight.remove(&key);
                self.fetches.sweeping.remove(&key);
                match result {
                    Ok(entries) => {
                        self.publisher.unchanged();
                        self.fetches.backoff.reset();
                        let skipped = self.store.apply_health(&dc, &service, entries);
                        self.report_skipped(&dc, skipped);
                        if self.fetches.again.remove(&key) {
                            self.fetches.enqueue(key);
                        }
                    }
                    Err(error) => {
                        self.failed(error.reason(), &format_args!("{service} in {dc}: {error}"));
                        self.fetches.again.remove(&key);
                        self.fetches.retry.insert(key);
                        if self.fetches.retry_at.is_none() {
                            self.fetches.retry_at = Some(Instant::now() + self.fetches.backoff.next_delay());
                        }
                    }
                }
                self.after_change(&dc);
            }
            Event::Confirmed => {
                self.answered();
                self.publisher.unchanged();
            }
            Event::Failed { failure, error } => self.failed(failure, &error),
        }
    }

    /// A read failed. A refused token is logged at WARN once per distinct refusal, not on
    /// every retry of every read; again after [`REFUSAL_QUIET`] of reads without one.
    fn failed(&mut self, failure: Failure, error: &dyn std::fmt::Display) {
        let text = error.to_string();
        if failure == Failure::Forbidden
            && let Some((_, refusal)) = text.split_once("HTTP 403: ")
        {
            self.last_refusal = Some(Instant::now());
            let new = self.refusals.insert(refusal.to_owned());
            return self.publisher.failed_as(failure, &text, new);
        }
        self.publisher.failed(failure, &text);
    }

    /// A read succeeded: a refusal long enough ago is over.
    fn answered(&mut self) {
        if self.last_refusal.is_some_and(|at| at.elapsed() > REFUSAL_QUIET) {
            self.refusals.clear();
            self.last_refusal = None;
        }
    }

    fn after_change(&mut self, dc: &str) {
        if self.store.try_go_live(dc, self.fetches.pending(dc)) {
            self.newly_live.insert(dc.to_owned());
            self.first_live.get_or_insert_with(Instant::now);
        }
    }

    fn start_fetches(&mut self, cancel: &CancellationToken) {
        let fetches = &mut self.fetches;
        if fetches.retry_at.is_some_and(|at| at <= Instant::now()) {
            fetches.retry_at = None;
            for key in std::mem::take(&mut fetches.retry) {
                fetches.enqueue(key);
            }
        }
        while fetches.in_flight.len() < fetches.max {
            let Some(key) = fetches.next() else { break };
            fetches.in_flight.insert(key.clone());
            let (client, events, cancel) = (self.client.clone(), self.events.0.clone(), cancel.clone());
            crate::supervise::spawn("consul_fetch", async move {
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
        [self.first_publish_due(), self.fetches.retry_at, self.publisher.due()].into_iter().flatten().min()
    }

    /// When the first publish is due: once every datacenter has synced, or [`FIRST_SYNC_GRACE`]
    /// after the first one did. Publishing one datacenter while another is still syncing would
    /// turn the other's names from SERVFAIL into NXDOMAIN, which clients such as Kong cache.
    fn first_publish_due(&self) -> Option<Instant> {
        if self.published {
            return None;
        }
        let first_live = self.first_live?;
        Some(if self.store.all_live() { Instant::now() } else { first_live + FIRST_SYNC_GRACE })
    }

    async fn publish_when_due(&mut self) {
        if !self.published {
            if self.first_publish_due().is_none_or(|at| at > Instant::now()) {
                return;
            }
            self.published = true;
        }
        let newly_live = !self.newly_live.is_empty();
        for dc in std::mem::take(&mut self.newly_live) {
            if let Some((name, data)) = self.store.dc_data(&dc) {
                self.publisher.mirror().replace_datacenter(name, data);
            }
        }
        self.store.export_changes(self.publisher.mirror());
        if newly_live {
            self.publisher.publish("sync").await;
        } else {
            self.publisher.changed();
            self.publisher.tick().await;
        }
    }
}

impl Syncer {
    /// Entries DNS cannot carry, left out of the catalog: logged and counted.
    fn report_skipped(&mut self, dc: &str, skipped: Vec<String>) {
        for reason in skipped {
            self.publisher.skipped(dc, &reason);
        }
    }
}

impl Fetches {
    /// Most sweep reads in flight at once: an eighth of the connections, at least one.
    fn sweep_max(&self) -> usize {
        (self.max / 8).max(1)
    }

    /// The next read to start: a known change first, else the sweep while it has room.
    fn next(&mut self) -> Option<Key> {
        if let Some(key) = self.first.pop_first() {
            return Some(key);
        }
        if self.sweeping.len() >= self.sweep_max() {
            return None;
        }
        let key = self.queue.pop_first()?;
        self.sweeping.insert(key.clone());
        Some(key)
    }

    fn enqueue(&mut self, key: Key) {
        if self.in_flight.contains(&key) {
            self.again.insert(key);
        } else if !self.first.contains(&key) {
            self.queue.insert(key);
        }
    }

    /// Like [`Fetches::enqueue`], ahead of the others.
    fn enqueue_first(&mut self, key: Key) {
        if self.in_flight.contains(&key) {
            self.again.insert(key);
        } else {
            self.queue.remove(&key);
            self.first.insert(key);
        }
    }

    /// Reads still outstanding in datacenter `dc`?
    fn pending(&self, dc: &str) -> bool {
        let pending =
            |set: &BTreeSet<Key>| set.range((dc.to_owned(), String::new())..).next().is_some_and(|(d, _)| d == dc);
        pending(&self.first) || pending(&self.queue) || pending(&self.in_flight) || pending(&self.retry)
    }
}

async fn read_health(client: &Client, dc: &str, service: &str) -> Result<Vec<WireEntry>, SyncError> {
    let path = format!("/v1/health/service/{service}");
    let reply = client.get(&path, Some(dc), None).await?;
    serde_json::from_slice::<Option<Vec<WireEntry>>>(&reply.body)
        .map(Option::unwrap_or_default)
        .map_err(|e| SyncError::Decode { url: path, message: e.to_string() })
}

#[cfg(test)]
mod tests {
    //! The sync state machine on tokio's paused clock, fed events as the watches and service
    //! reads would send them (no HTTP: the syncer's tasks are not started).
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::backend::consul::wire::WireCheck;
    use crate::backend::publish::COALESCE;
    use crate::catalog::{BuildOptions, Catalog, Snapshot};
    use crate::config::source::{DEFAULT_CONSUL_MAX_CONNS, DEFAULT_CONSUL_WAIT};
    use crate::telemetry::Backend;

    fn settings() -> Settings {
        Settings {
            address: "http://127.0.0.1:1".into(),
            token: None,
            ca_cert: None,
            stale: true,
            max_conns: DEFAULT_CONSUL_MAX_CONNS as usize,
            wait: DEFAULT_CONSUL_WAIT,
            datacenters: None,
            translate_wan_addrs: false,
            datacenter: Some("dc1".into()),
        }
    }

    fn syncer(dcs: &[&str]) -> (Syncer, Arc<Catalog>) {
        let options = Arc::new(BuildOptions::new("dc1", 5));
        let catalog = Arc::new(Catalog::new(Snapshot::empty(Arc::clone(&options), false)));
        let (tx, rx) = tokio::sync::watch::channel(options);
        std::mem::forget(tx); // the options never change in these tests
        let publisher = Publisher::new(Backend("consul"), Arc::clone(&catalog), rx, None, None);
        let mut syncer = Syncer::new(settings(), Client::new(&settings()).unwrap(), publisher);
        for dc in dcs {
            syncer.store.add_dc(dc, AddressSet::Lan);
        }
        (syncer, catalog)
    }

    fn entry(node: &str, id: &str, status: &str) -> WireEntry {
        let json = format!(
            r#"{{"Node":{{"Node":"{node}","Address":"10.0.0.1"}},"Service":{{"ID":"{id}","Service":"web","Port":80}},
                "Checks":[{{"Node":"{node}","CheckID":"c-{id}","ServiceID":"{id}","Status":"{status}","ModifyIndex":9}}]}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    /// One datacenter's whole first sync: services list, nodes, checks and web's entries.
    fn sync_dc(syncer: &mut Syncer, dc: &str, status: &str) {
        let list = [("web".to_owned(), Some(vec![]))].into();
        syncer.handle(Event::Watch { dc: dc.into(), body: Body::Services(list), index: 5 });
        syncer.handle(Event::Watch { dc: dc.into(), body: Body::Nodes(vec![]), index: 5 });
        syncer.handle(Event::Watch { dc: dc.into(), body: Body::Checks(vec![]), index: 5 });
        let key = (dc.to_owned(), "web".to_owned());
        assert!(syncer.fetches.first.remove(&key), "web is read first");
        syncer.fetches.in_flight.insert(key);
        let result = Ok(vec![entry("n1", "web-1", status)]);
        syncer.handle(Event::Health { dc: dc.into(), service: "web".into(), result });
    }

    fn web_in(catalog: &Catalog, dc: &str) -> usize {
        let snapshot = catalog.load();
        snapshot.datacenter(Some(dc.as_bytes())).and_then(|d| d.lookup(None, b"web")).map_or(0, |r| r.instances.len())
    }

    #[tokio::test]
    async fn the_sweep_is_paced_and_known_changes_go_first() {
        let (mut syncer, _) = syncer(&["dc1"]);
        let fetches = &mut syncer.fetches;
        assert_eq!((fetches.max, fetches.sweep_max()), (28, 3));
        for n in 0..10 {
            fetches.enqueue(("dc1".into(), format!("svc{n}")));
        }
        let mut started = Vec::new();
        while let Some(key) = fetches.next() {
            fetches.in_flight.insert(key.clone());
            started.push(key.1);
        }
        assert_eq!(started, ["svc0", "svc1", "svc2"], "three sweep reads at once, though 28 connections are free");
        fetches.enqueue_first(("dc1".into(), "changed".into()));
        let key = fetches.next().expect("a known change starts while the sweep is at its limit");
        assert_eq!(key.1, "changed");
        fetches.in_flight.insert(key);
        assert!(fetches.next().is_none());
        let done = ("dc1".to_owned(), "svc0".to_owned());
        fetches.in_flight.remove(&done);
        fetches.sweeping.remove(&done);
        assert_eq!(fetches.next().map(|k| k.1).as_deref(), Some("svc3"), "the sweep goes on as reads come back");
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_publish_waits_for_every_datacenter_or_the_grace_period() {
        let (mut syncer, catalog) = syncer(&["dc1", "dc2"]);
        sync_dc(&mut syncer, "dc1", "passing");
        syncer.publish_when_due().await;
        assert!(!catalog.load().is_synced(), "dc2 is still syncing: nothing is published");
        tokio::time::advance(FIRST_SYNC_GRACE - Duration::from_millis(1)).await;
        syncer.publish_when_due().await;
        assert!(!catalog.load().is_synced(), "not before the grace period ends");
        tokio::time::advance(Duration::from_millis(1)).await;
        syncer.publish_when_due().await;
        assert!(catalog.load().is_synced() && web_in(&catalog, "dc1") == 1, "then dc1 alone");
        sync_dc(&mut syncer, "dc2", "passing");
        syncer.publish_when_due().await;
        assert_eq!(web_in(&catalog, "dc2"), 1, "a datacenter going live is published at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_flip_is_published_once_changes_settle() {
        let (mut syncer, catalog) = syncer(&["dc1"]);
        sync_dc(&mut syncer, "dc1", "passing");
        syncer.publish_when_due().await;
        assert_eq!(web_in(&catalog, "dc1"), 1, "every datacenter live: published at once");
        let critical: WireCheck = serde_json::from_str(
            r#"{"Node":"n1","CheckID":"c-web-1","ServiceID":"web-1","Status":"critical","ModifyIndex":10}"#,
        )
        .unwrap();
        syncer.handle(Event::Watch { dc: "dc1".into(), body: Body::Checks(vec![critical]), index: 10 });
        syncer.publish_when_due().await;
        assert_eq!(web_in(&catalog, "dc1"), 1, "coalescing: not yet");
        let wait = syncer.next_deadline().expect("a publish is due") - Instant::now();
        assert!(wait > Duration::ZERO && wait <= COALESCE, "due within the coalescing time: {wait:?}");
        tokio::time::advance(wait).await;
        syncer.publish_when_due().await;
        assert_eq!(web_in(&catalog, "dc1"), 0, "the critical instance is gone");
    }
}
