//! The static catalog source: a TOML/JSON file (or the example built into the binary),
//! reloaded when the file changes and whenever new build options arrive (SIGHUP).
//!
//! Changes are found by polling the file's metadata (modification time, size, inode) every
//! [`POLL_INTERVAL`]: unlike inotify this also sees edits through bind mounts and Kubernetes'
//! ConfigMap symlink swaps, and costs one `stat` per interval. A changed file is read only once
//! its metadata has held still for [`SETTLE`], so a write in progress is not taken for the new
//! catalog; a file whose bytes are what is already served publishes nothing (the SOA serial
//! stays). A file that fails to read or parse, or is empty, is reported (file, line, key) and
//! the previous snapshot stays; the next change is tried again. Every full file is published
//! as a full build: a file is read whole anyway, and the source keeps no copy of the data.

pub mod format;
mod split;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::backend::publish::Publisher;
use crate::catalog::model::CatalogData;
use crate::catalog::{BuildOptions, Snapshot};
use crate::config::{CatalogSource, EMBEDDED_CATALOG};
use format::CatalogFileError;

/// How often the file's metadata is checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a changed file's metadata must hold still before it is read.
pub const SETTLE: Duration = Duration::from_millis(100);
/// Longest wait for a file that keeps changing; it is read then anyway.
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Reads the static catalog from its source.
pub fn read(source: &CatalogSource, datacenter: &str) -> Result<CatalogData, CatalogFileError> {
    read_text(source).and_then(|(text, path)| format::parse(&path, &text, datacenter))
}

fn read_text(source: &CatalogSource) -> Result<(String, PathBuf), CatalogFileError> {
    match source {
        CatalogSource::File(path) => std::fs::read_to_string(path)
            .map(|text| (text, path.clone()))
            // The full path looked at, also when the catalog was named relative to the cwd.
            .map_err(|error| CatalogFileError::Read { path: std::path::absolute(path).unwrap_or(path.clone()), error }),
        CatalogSource::Embedded => Ok((EMBEDDED_CATALOG.to_owned(), PathBuf::from("<built-in example catalog>"))),
    }
}

/// Reads the catalog and builds a snapshot from it. The returned [`Fingerprint`] was taken
/// before reading, so a change made while reading is still seen as a change by [`run`].
pub fn build(
    source: &CatalogSource,
    options: Arc<BuildOptions>,
) -> Result<(Snapshot, Option<Fingerprint>), CatalogFileError> {
    let version = version_of(source);
    let started = Instant::now();
    let (text, path) = read_text(source)?;
    let read = started.elapsed();
    let data = format::parse(&path, &text, &options.datacenter)?;
    drop(text);
    let parsed = started.elapsed();
    let snapshot = Snapshot::build(&data, options);
    debug!(
        read_ms = read.as_millis() as u64,
        parse_ms = (parsed - read).as_millis() as u64,
        build_ms = (started.elapsed() - parsed).as_millis() as u64,
        "Static catalog read, parsed and built."
    );
    // Freeing the model costs a tenth of the build: done off the start-up path, after which
    // the freed pages go back to the OS.
    let freeing = std::thread::Builder::new().name("catalog-free".into()).spawn(move || {
        drop(data);
        crate::memory::release_freed();
    });
    if let Err(error) = freeing {
        debug!(%error, "No thread to free the catalog model on; freed on this one.");
    }
    Ok((snapshot, version))
}

/// What identifies one version of the file without reading it. The status-change time is in
/// it so that a file made unreadable or readable again (chmod, chown) is read again too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    changed: (i64, i64),
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (inode, changed) = {
        use std::os::unix::fs::MetadataExt;
        (meta.ino(), (meta.ctime(), meta.ctime_nsec()))
    };
    #[cfg(not(unix))]
    let (inode, changed) = (0, (0, 0));
    Some(Fingerprint { modified: meta.modified().ok(), len: meta.len(), inode, changed })
}

fn version_of(source: &CatalogSource) -> Option<Fingerprint> {
    match source {
        CatalogSource::File(path) => fingerprint(path),
        CatalogSource::Embedded => None,
    }
}

/// What was last published: the file's content hash and the options it was built with.
#[derive(Debug, Default)]
struct Published {
    hash: Option<u64>,
    options: Option<Arc<BuildOptions>>,
}

/// Watches the source until `cancel`: reloads on a file change, on a new file (SIGHUP naming
/// another one) and on new build options. `seen` is the version the served snapshot was read
/// from (`None`: reload on the first look).
pub(crate) async fn run(
    mut source: watch::Receiver<CatalogSource>,
    mut seen: Option<Fingerprint>,
    mut publisher: Publisher,
    cancel: CancellationToken,
) {
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = Published { hash: None, options: Some(publisher.options()) };
    let mut current = true; // the served snapshot was built from `seen`
    loop {
        let trigger = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = publisher.options_changed() => "reload requested",
            changed = source.changed() => match changed {
                Ok(()) => "catalog file changed",
                Err(_) => break,
            },
            _ = interval.tick() => {
                let path = match &*source.borrow() {
                    CatalogSource::File(path) => Some(path.clone()),
                    CatalogSource::Embedded => None,
                };
                let now = path.as_deref().and_then(fingerprint);
                if now == seen {
                    if current {
                        publisher.unchanged();
                    }
                    continue;
                }
                seen = match path {
                    Some(path) => settled(&path, now).await,
                    None => now,
                };
                "file changed"
            }
        };
        let catalog = source.borrow_and_update().clone();
        current = reload(&catalog, &mut publisher, &mut published, trigger).await;
    }
    publisher.finish().await;
}

/// Waits until the file's metadata holds still for [`SETTLE`] (at most [`SETTLE_MAX`]).
async fn settled(path: &Path, mut last: Option<Fingerprint>) -> Option<Fingerprint> {
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    loop {
        tokio::time::sleep(SETTLE).await;
        let now = fingerprint(path);
        if now == last || tokio::time::Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// Reads and publishes; whether the source now matches what is served.
async fn reload(
    source: &CatalogSource,
    publisher: &mut Publisher,
    published: &mut Published,
    trigger: &'static str,
) -> bool {
    let datacenter = publisher.datacenter();
    let options = publisher.options();
    let source = source.clone();
    let read = tokio::task::spawn_blocking(move || {
        let (text, path) = read_text(&source)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        path.hash(&mut hasher);
        let hash = hasher.finish();
        Ok((hash, path, text))
    })
    .await;
    let (hash, path, text) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(error)) => return report(publisher, &error),
        Err(error) => {
            publisher.failed(crate::backend::failure::Failure::Read, &error);
            return false;
        }
    };
    if published.hash == Some(hash) && published.options.as_deref() == Some(&*options) {
        publisher.unchanged();
        return true;
    }
    let parsed = tokio::task::spawn_blocking(move || format::parse(&path, &text, &datacenter)).await;
    match parsed {
        Ok(Ok(data)) => {
            if publisher.rebuild(data, trigger).await.is_err() {
                return false;
            }
            *published = Published { hash: Some(hash), options: Some(options) };
            true
        }
        Ok(Err(error)) => report(publisher, &error),
        Err(error) => {
            publisher.failed(crate::backend::failure::Failure::Parse, &error);
            false
        }
    }
}

fn report(publisher: &mut Publisher, error: &CatalogFileError) -> bool {
    publisher.failed(error.failure(), error);
    false
}
