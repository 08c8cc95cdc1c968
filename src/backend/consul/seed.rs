//! The first answers of a Consul-mode start, before the first sync completes: the catalog
//! restored from `state_dir` if it is young enough, else the static catalog if one was given
//! explicitly, else an unsynced empty snapshot (SERVFAIL in the domain, not NXDOMAIN: CoreDNS's
//! not-synced rule).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::backend::file;
use crate::catalog::persist::{self, Restored};
use crate::catalog::{BuildOptions, Snapshot};
use crate::config::Config;

/// The snapshot to serve first, and the restored data the syncer starts from.
pub fn initial(config: &Config, options: &Arc<BuildOptions>) -> (Snapshot, Option<Restored>) {
    if let Some(restored) = config.state_dir.as_deref().and_then(|dir| restore(dir, config.max_stale)) {
        let mut restored_options = (**options).clone();
        if config.consul.as_ref().is_some_and(|c| c.datacenter.is_none()) {
            restored_options.datacenter = restored.datacenter.clone();
        }
        let snapshot = Snapshot::build(&restored.data, Arc::new(restored_options));
        return (snapshot, Some(restored));
    }
    if config.static_given {
        match file::build(&config.catalog, Arc::clone(options)) {
            Ok((snapshot, _)) => {
                info!(source = ?config.catalog, "Static catalog loaded; serving it until Consul answers.");
                return (snapshot, None);
            }
            Err(error) => warn!(%error, "Static catalog rejected; nothing to serve until Consul answers."),
        }
    }
    info!("No catalog to restore; names in the domain get SERVFAIL until Consul answers.");
    (Snapshot::empty(Arc::clone(options), false), None)
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
