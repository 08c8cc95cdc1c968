//! The static catalog backend: a TOML/JSON file (or the copy built into the binary), reloaded
//! when the file changes and whenever new build options arrive (SIGHUP).
//!
//! Changes are found by polling the file's metadata (modification time, size, inode) every
//! [`POLL_INTERVAL`]: unlike inotify this also sees edits through bind mounts and Kubernetes'
//! ConfigMap symlink swaps, and costs one `stat` per interval. A file that fails to read or
//! parse is reported (file, line, key) and the previous snapshot stays; the next change is
//! tried again. Every read is reported through `telemetry`'s sync events; a poll that finds
//! the file unchanged since a good read confirms the catalog is current.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backend::catalog_file::{self, CatalogFileError};
use crate::catalog::model::CatalogData;
use crate::catalog::{BuildOptions, Catalog, Snapshot};
use crate::config::{CatalogSource, EMBEDDED_CATALOG};
use crate::telemetry::{self, Backend};

/// How often the file's metadata is checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Reads the static catalog from its source.
pub fn read(source: &CatalogSource, datacenter: &str) -> Result<CatalogData, CatalogFileError> {
    match source {
        CatalogSource::File(path) => catalog_file::load(path, datacenter),
        CatalogSource::Embedded => {
            catalog_file::parse(Path::new("<built-in config/services.toml>"), EMBEDDED_CATALOG, datacenter)
        }
    }
}

/// Reads the catalog and builds a snapshot from it. The returned [`Fingerprint`] was taken
/// before reading, so a change made while reading is still seen as a change by [`watch`].
pub fn build(
    source: &CatalogSource,
    options: Arc<BuildOptions>,
) -> Result<(Snapshot, Option<Fingerprint>), CatalogFileError> {
    let version = match source {
        CatalogSource::File(path) => fingerprint(path),
        CatalogSource::Embedded => None,
    };
    let data = read(source, &options.datacenter)?;
    let snapshot = Snapshot::build(&data, options);
    drop(data);
    crate::memory::release_freed();
    Ok((snapshot, version))
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Fingerprint { modified: meta.modified().ok(), len: meta.len(), inode })
}

/// Watches the source until `cancel`: reloads on a file change and on every new value of
/// `options` (the app sends one per SIGHUP, changed or not). `seen` is the version the
/// published snapshot was read from (`None`: reload on the first look).
pub async fn watch(
    source: CatalogSource,
    mut seen: Option<Fingerprint>,
    catalog: Arc<Catalog>,
    mut options: watch::Receiver<Arc<BuildOptions>>,
    cancel: CancellationToken,
) {
    let path: Option<PathBuf> = match &source {
        CatalogSource::File(path) => Some(path.clone()),
        CatalogSource::Embedded => None,
    };
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current = true; // the served snapshot was built from `seen`
    loop {
        let trigger = tokio::select! {
            _ = cancel.cancelled() => return,
            changed = options.changed() => match changed {
                Ok(()) => "reload requested",
                Err(_) => return,
            },
            _ = interval.tick() => {
                let now = path.as_deref().and_then(fingerprint);
                if now == seen {
                    if current {
                        telemetry::sync_unchanged(Backend::File);
                    }
                    continue;
                }
                seen = now;
                "file changed"
            }
        };
        let options = options.borrow_and_update().clone();
        current = reload(&source, &catalog, options, trigger).await;
    }
}

/// Reads and publishes; whether it worked.
async fn reload(source: &CatalogSource, catalog: &Catalog, options: Arc<BuildOptions>, trigger: &'static str) -> bool {
    let built = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || build(&source, options)).await
    };
    match built {
        Ok(Ok((snapshot, _))) => {
            let counts = snapshot.counts();
            let serial = catalog.publish(snapshot);
            telemetry::sync_succeeded(Backend::File, trigger, counts, serial);
            true
        }
        Ok(Err(error)) => {
            telemetry::sync_failed(Backend::File, error.reason(), &error);
            false
        }
        Err(error) => {
            telemetry::sync_failed(Backend::File, "panic", &error);
            false
        }
    }
}
