//! The first answers, before a source has published: for the static catalog alone, the file
//! itself (a file that does not load stops the start); for a live source, the catalog restored
//! from the state directory if it is young enough, else the static catalog if one was given,
//! else an unsynced empty snapshot (SERVFAIL in the domain, not NXDOMAIN: CoreDNS's not-synced
//! rule), until the live source first publishes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::backend::file::{self, Fingerprint, format::CatalogFileError};
use crate::catalog::persist::{self, Restored};
use crate::catalog::{BuildOptions, Snapshot};
use crate::config::{Config, LiveSource};

/// What serves first, and what the publisher starts from.
pub(crate) struct Seed {
    /// The first snapshot.
    pub(crate) snapshot: Snapshot,
    /// The on-disk catalog it was built from, if it was restored.
    pub(crate) restored: Option<Restored>,
    /// The local datacenter the seed was built for, when not the configuration's.
    pub(crate) datacenter: Option<String>,
    /// The static file's version it was read from (static catalog alone).
    pub(crate) version: Option<Fingerprint>,
}

/// The seed for `config`; `Err` only for a static catalog alone that does not load.
pub(crate) fn seed(config: &Config, options: &Arc<BuildOptions>) -> Result<Seed, CatalogFileError> {
    let static_catalog = config.sources.static_catalog.as_ref();
    let Some(live) = &config.sources.live else {
        let Some(catalog) = static_catalog else {
            return Ok(Seed { snapshot: Snapshot::empty(Arc::clone(options), true), ..unseeded(options) });
        };
        let (snapshot, version) = file::build(catalog, Arc::clone(options))?;
        return Ok(Seed { snapshot, restored: None, datacenter: None, version });
    };
    if let Some(restored) = config.state_dir.as_deref().and_then(|dir| restore(dir, config.max_stale)) {
        let fixed = match live {
            LiveSource::Consul(consul) => consul.datacenter.clone(),
            LiveSource::Sql(_) | LiveSource::Etcd(_) => None,
        };
        let datacenter = fixed.unwrap_or_else(|| restored.datacenter.clone());
        let mut restored_options = (**options).clone();
        restored_options.datacenter = datacenter.clone();
        let snapshot = Snapshot::build(&restored.data, Arc::new(restored_options));
        return Ok(Seed { snapshot, restored: Some(restored), datacenter: Some(datacenter), version: None });
    }
    if let Some(catalog) = static_catalog {
        match file::build(catalog, Arc::clone(options)) {
            Ok((snapshot, _)) => {
                info!(source = %catalog, "Static catalog loaded; serving it until the live source answers.");
                return Ok(Seed { snapshot, ..unseeded(options) });
            }
            Err(error) => warn!(%error, "Static catalog rejected; nothing to serve until the live source answers."),
        }
    }
    info!("No catalog to restore; names in the domain get SERVFAIL until the live source answers.");
    Ok(unseeded(options))
}

fn unseeded(options: &Arc<BuildOptions>) -> Seed {
    Seed { snapshot: Snapshot::empty(Arc::clone(options), false), restored: None, datacenter: None, version: None }
}

/// The on-disk catalog, if there is one that parses and is not older than `max_stale`.
fn restore(dir: &Path, max_stale: Option<Duration>) -> Option<Restored> {
    let restored = match persist::restore(dir) {
        Ok(Some(restored)) => restored,
        Ok(None) => return None,
        Err(error) => {
            warn!(%error, "On-disk catalog ignored.");
            return None;
        }
    };
    if restored.age_from_mtime {
        warn!(
            "On-disk catalog written by an earlier version: its age is the file's modification time until the next write."
        );
    }
    let age = SystemTime::now().duration_since(restored.confirmed).unwrap_or_default();
    match max_stale {
        Some(max) if age > max => {
            warn!(
                age_secs = age.as_secs(),
                max_stale_secs = max.as_secs(),
                "On-disk catalog is older than max_stale; not served."
            );
            None
        }
        Some(_) => Some(restored),
        None => {
            warn!(age_secs = age.as_secs(), "Serving an on-disk catalog of any age (max_stale is not set).");
            Some(restored)
        }
    }
}
