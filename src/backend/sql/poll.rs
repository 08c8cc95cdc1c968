//! The SQL source's loop: probe the change counter every `db_poll_interval` (PostgreSQL: also
//! on `NOTIFY`), and when it moved read both tables and hand the whole catalog to the
//! publisher, which publishes only what changed. A failed probe or read publishes nothing: the
//! last good catalog keeps serving while the store is retried with a short capped backoff.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::SqlError;
use super::schema::NOTIFY_CHANNEL;
use super::store::SqlStore;
use crate::backend::backoff::Backoff;
use crate::backend::publish::{Publisher, sleep_until};
use crate::backend::registry::{Tables, to_catalog};
use crate::config::database::{DatabaseSettings, Dialect};

/// Retries after a failure start here …
const RETRY_MIN: Duration = Duration::from_millis(100);
/// … and stop growing here, so recovery is quick.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Runs the SQL source until `cancel`.
pub(crate) async fn run(settings: DatabaseSettings, mut publisher: Publisher, cancel: CancellationToken) {
    let store = match SqlStore::open(&settings.url, false) {
        Ok(store) => store,
        Err(error) => {
            publisher.failed(error.failure(), &error);
            cancel.cancelled().await;
            return publisher.finish().await;
        }
    };
    let mut backoff = Backoff::try_new(RETRY_MIN, RETRY_MAX, 0.2).expect("valid constants");
    let mut notifications = match store.dialect() {
        Dialect::Postgres => Some(spawn_listener(settings.clone(), cancel.child_token())),
        _ => None,
    };
    let mut seen: Option<i64> = None;
    let mut wait = Duration::ZERO; // the first probe at once
    loop {
        let due = publisher.due();
        let force = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = publisher.options_changed() => true,
            _ = tokio::time::sleep(wait) => false,
            _ = notification(&mut notifications) => false,
            _ = sleep_until(due) => {
                publisher.tick().await;
                continue;
            }
        };
        wait = match sync(&store, &mut publisher, &mut seen, force).await {
            Ok(()) => {
                backoff.reset();
                settings.poll_interval
            }
            Err(error) => {
                publisher.failed(error.failure(), &error);
                backoff.next_delay()
            }
        };
    }
    store.close().await;
    publisher.finish().await;
}

/// One probe, and a read when the counter moved (or `force`).
async fn sync(
    store: &SqlStore,
    publisher: &mut Publisher,
    seen: &mut Option<i64>,
    force: bool,
) -> Result<(), SqlError> {
    let counter = store.counter().await?;
    if !force && *seen == Some(counter) {
        publisher.unchanged();
        return Ok(());
    }
    let (counter, tables) = store.read().await?;
    *seen = Some(counter);
    publish(tables, publisher, "database changed").await;
    Ok(())
}

/// Converts what was read, reporting each skipped row, and publishes the rest.
pub(crate) async fn publish(tables: Tables, publisher: &mut Publisher, trigger: &'static str) {
    let datacenter = publisher.datacenter();
    let mut skipped: Vec<(String, String)> = tables.bad.into_iter().map(|bad| (bad.id, bad.reason)).collect();
    let data = to_catalog(tables.nodes, tables.services, &datacenter, &mut |id, reason| {
        skipped.push((id.to_owned(), reason.to_string()));
    });
    for (id, reason) in &skipped {
        publisher.skipped(id, reason);
    }
    // A conversion that passed every entry's checks is valid; `full` still checks, and a
    // rejection is counted there with the last good catalog kept.
    let _ = publisher.full(data, trigger).await;
}

/// PostgreSQL: a connection that LISTENs on the trigger's channel. `None` when it cannot be
/// set up (the probe still runs every interval).
async fn listen(settings: &DatabaseSettings) -> Option<PgListener> {
    let connect = async {
        let mut listener = PgListener::connect(settings.url.expose()).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(super::store::CALL_TIMEOUT, connect).await {
        Ok(Ok(listener)) => Some(listener),
        Ok(Err(error)) => {
            debug!(error = settings.url.redact(&error.to_string()), "Cannot LISTEN for catalog changes; polling only.");
            None
        }
        Err(_) => None,
    }
}

/// PostgreSQL: a task that holds a LISTEN connection (reconnecting when it breaks) and
/// forwards each notification; a full channel means a probe is already due. It runs apart from
/// the probe loop so that no notification is lost to a cancelled read.
fn spawn_listener(settings: DatabaseSettings, cancel: CancellationToken) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    crate::supervise::spawn("db_listen", async move {
        loop {
            if let Some(mut listener) = listen(&settings).await {
                let _ = tx.try_send(()); // changes made while it was not listening
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        received = listener.recv() => match received {
                            Ok(_) => { let _ = tx.try_send(()); }
                            Err(_) => break,
                        },
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY_MAX) => {}
            }
        }
    });
    rx
}

/// Resolves on a notification; never without a listener.
async fn notification(notifications: &mut Option<mpsc::Receiver<()>>) {
    if let Some(rx) = notifications
        && rx.recv().await.is_some()
    {
        return;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::registry::Registration;
    use crate::catalog::{BuildOptions, Catalog, Snapshot};

    fn options() -> Arc<BuildOptions> {
        Arc::new(BuildOptions::new("dc1", 5))
    }

    /// The loop's one step on a real SQLite file: a read publishes, a bad row is skipped while
    /// the rest is served, and a store that fails publishes nothing (the catalog stays).
    #[tokio::test]
    async fn a_sync_publishes_skips_bad_rows_and_keeps_the_catalog_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let url: crate::config::database::DatabaseUrl =
            format!("sqlite://{}", dir.path().join("c.db").display()).parse().unwrap();
        let store = SqlStore::open(&url, true).unwrap();
        store.init().await.unwrap();
        let web = Registration::new("web", Some("10.0.0.1"), 80, None, &[], Some("n1"), 1).unwrap();
        store.register(web).await.unwrap();
        let catalog = Arc::new(Catalog::new(Snapshot::empty(options(), false)));
        let (_options, options_rx) = tokio::sync::watch::channel(options());
        let backend = crate::telemetry::Backend("sqlite-test");
        let mut publisher = Publisher::new(backend, Arc::clone(&catalog), options_rx, None, None);
        let mut seen = None;

        sync(&store, &mut publisher, &mut seen, false).await.unwrap();
        let counts = catalog.load().counts();
        assert!(catalog.load().is_synced());
        assert_eq!((counts.services, counts.instances, counts.nodes), (1, 1, 1));
        let serial = catalog.load().serial();
        sync(&store, &mut publisher, &mut seen, false).await.unwrap();
        assert_eq!(catalog.load().serial(), serial, "an unmoved counter publishes nothing");

        let api = Registration::new("api", Some("10.0.0.2"), 81, None, &[], None, 1).unwrap();
        store.register(api).await.unwrap();
        let bad = Registration::new("bad", Some("10.0.0.3"), 82, None, &[], Some("n9"), 1).unwrap();
        store.register(bad.for_existing_node("10.0.0.3")).await.unwrap_err(); // n9 unknown: refused
        let mut tables = store.read().await.unwrap().1;
        tables
            .services
            .push(crate::backend::registry::ServiceEntry { health: "sick".into(), ..tables.services[0].clone() });
        tables.services.last_mut().unwrap().id = "broken".into();
        publish(tables, &mut publisher, "test").await;
        let counts = catalog.load().counts();
        assert_eq!((counts.services, counts.instances), (2, 2), "the bad row is left out, the rest served");

        store.close().await;
        let error = sync(&store, &mut publisher, &mut seen, true).await.unwrap_err();
        assert_eq!(error.failure(), crate::backend::failure::Failure::Network, "{error}");
        assert_eq!(catalog.load().counts().instances, 2, "a failed read publishes nothing");
    }
}
