//! The etcd source's loop: a range read of the prefix at revision R, published whole; then a
//! watch from R+1 whose events update the keys held here and publish again (the publisher
//! diffs, so only the services that changed are rebuilt). A broken watch resumes from the last
//! revision seen; a compacted one (the history we need is gone) starts over with a range read.
//! Failures publish nothing and are retried with a short capped backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::client::{Event, KeyValue, Watch, WatchMessage};
use super::{EtcdError, EtcdStore};
use crate::backend::backoff::Backoff;
use crate::backend::publish::{Publisher, sleep_until};
use crate::backend::registry::Tables;
use crate::backend::sql::poll::publish;
use crate::config::database::EtcdSettings;

/// Retries after a failure start here …
const RETRY_MIN: Duration = Duration::from_millis(100);
/// … and stop growing here, so recovery is quick.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// While the watch is open, the catalog is confirmed current this often (an open watch with
/// no events means nothing changed).
const CONFIRM: Duration = Duration::from_secs(1);

/// Where the loop is.
enum State {
    /// Read everything.
    Read,
    /// Open a watch from this revision.
    Watch(i64),
    /// Follow the open watch.
    Follow(Watch),
}

/// Runs the etcd source until `cancel`.
pub(crate) async fn run(settings: EtcdSettings, mut publisher: Publisher, cancel: CancellationToken) {
    let store = match EtcdStore::new(&settings.endpoints, &settings.prefix) {
        Ok(store) => store,
        Err(error) => {
            publisher.failed(error.failure(), &error);
            cancel.cancelled().await;
            return publisher.finish().await;
        }
    };
    let mut backoff = Backoff::try_new(RETRY_MIN, RETRY_MAX, 0.2).expect("valid constants");
    let mut keys: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut revision = 0;
    let mut state = State::Read;
    let mut confirm = tokio::time::interval(CONFIRM);
    confirm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = publisher.due();
        let step = match &mut state {
            State::Read => tokio::select! {
                _ = cancel.cancelled() => break,
                read = store.read_raw() => read.map(|(rev, kvs)| {
                    revision = rev;
                    keys = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
                    Some("etcd read")
                }),
            },
            State::Watch(from) => {
                let from = *from;
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    opened = store.client().watch(store.prefix(), from) => opened.map(|watch| {
                        state = State::Follow(watch);
                        None
                    }),
                }
            }
            State::Follow(watch) => tokio::select! {
                _ = cancel.cancelled() => break,
                _ = publisher.options_changed() => Ok(Some("reload requested")),
                _ = sleep_until(due) => {
                    publisher.tick().await;
                    continue;
                }
                _ = confirm.tick() => {
                    publisher.unchanged();
                    continue;
                }
                message = watch.next() => match message {
                    Ok(WatchMessage::Progress(_)) => Ok(None),
                    Ok(WatchMessage::Events(rev, events)) => {
                        revision = rev.max(revision);
                        for event in events {
                            match event {
                                Event::Put(kv) => { keys.insert(kv.key.clone(), kv); }
                                Event::Delete(key) => { keys.remove(&key); }
                            }
                        }
                        Ok(Some("etcd changed"))
                    }
                    Ok(WatchMessage::Compacted(compacted)) => {
                        info!(revision, compacted, "etcd history compacted past the watch; reading everything again.");
                        state = State::Read;
                        continue;
                    }
                    Err(error) => Err(error),
                },
            },
        };
        match step {
            Ok(trigger) => {
                backoff.reset();
                if matches!(state, State::Read) {
                    state = State::Watch(revision + 1);
                }
                if let Some(trigger) = trigger {
                    let mut tables = Tables::default();
                    for kv in keys.values() {
                        store.decode_into(kv, &mut tables);
                    }
                    publish(tables, &mut publisher, trigger).await;
                }
            }
            Err(error) => {
                publisher.failed(error.failure(), &error);
                if matches!(state, State::Follow(_)) {
                    state = State::Watch(revision + 1); // resume where the stream broke
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
    publisher.finish().await;
}

impl EtcdStore {
    /// The raw keys under the prefix and their revision.
    async fn read_raw(&self) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        self.client().range(self.prefix()).await
    }
}
