//! `/health` and `/ready`.
//!
//! Alive means the process answers HTTP. Ready means DNS answers are worth sending traffic
//! to: the process is not stopping, the snapshot being served is synced (a Consul-only start
//! serves an unsynced, empty one until its first sync), a live source's static seed is not all
//! there is (503 "not synced: serving the static seed": the seed is a start-up stand-in, not
//! the registry), and, when a maximum age is set, the catalog was confirmed against its source
//! (a successful read, or the save time of a snapshot restored from disk) no longer ago than
//! that. A catalog restored from disk is ready (it is what a restart during an outage is for,
//! bounded by the maximum age), but the body says `synced: false` until the first read.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Why the daemon is not ready.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NotReady {
    /// SIGTERM arrived; the daemon is draining.
    Stopping,
    /// The catalog source's task is not running (it panicked): nothing follows the source.
    SourceDown,
    /// No synced snapshot yet.
    NotSynced,
    /// A live source has not been read yet; only its static seed is served.
    ServingSeed,
    /// A maximum age is set and no backend has said when its data is from.
    NeverConfirmed,
    /// The catalog is older than the maximum age.
    Stale {
        /// Its age.
        age: Duration,
    },
}

impl NotReady {
    fn reason(self) -> &'static str {
        match self {
            NotReady::Stopping => "stopping",
            NotReady::SourceDown => "source not running",
            NotReady::NotSynced => "not synced",
            NotReady::ServingSeed => "not synced: serving the static seed",
            NotReady::NeverConfirmed => "no successful sync yet",
            NotReady::Stale { .. } => "stale",
        }
    }
}

/// What readiness is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Facts {
    /// The process is stopping.
    pub stopping: bool,
    /// The catalog source's task ended while the process was not stopping.
    pub source_down: bool,
    /// The snapshot being served is synced.
    pub synced: bool,
    /// A live source not read yet: what stands in for it.
    pub seed: Option<Seed>,
    /// When the catalog was last confirmed against its source.
    pub as_of: Option<SystemTime>,
    /// The oldest catalog still ready (`None` = no limit, the default).
    pub max_age: Option<Duration>,
    /// Now.
    pub now: SystemTime,
}

/// What a live source's answers come from before its first successful read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// The static catalog given with the live source.
    Static,
    /// The catalog restored from the state directory.
    Restored,
}

impl Facts {
    /// Seconds since `as_of`.
    pub fn age(&self) -> Option<Duration> {
        self.as_of.map(|t| self.now.duration_since(t).unwrap_or_default())
    }
}

/// Ready, or why not.
pub fn readiness(facts: &Facts) -> Result<(), NotReady> {
    if facts.stopping {
        return Err(NotReady::Stopping);
    }
    if facts.source_down {
        return Err(NotReady::SourceDown);
    }
    if !facts.synced {
        return Err(NotReady::NotSynced);
    }
    if facts.seed == Some(Seed::Static) {
        return Err(NotReady::ServingSeed);
    }
    match (facts.max_age, facts.age()) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(NotReady::NeverConfirmed),
        (Some(max), Some(age)) if age > max => Err(NotReady::Stale { age }),
        _ => Ok(()),
    }
}

/// The body of `/ready`.
#[derive(Debug, Serialize)]
pub struct ReadyBody {
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    synced: bool,
    /// Before a live source's first read: what is served instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    serving: Option<&'static str>,
    serial: u32,
    age_seconds: Option<f64>,
    max_age_seconds: Option<f64>,
}

/// `/ready`'s body and whether it is ready.
pub fn ready_body(facts: &Facts, serial: u32) -> (bool, ReadyBody) {
    let verdict = readiness(facts);
    let body = ReadyBody {
        ready: verdict.is_ok(),
        reason: verdict.err().map(NotReady::reason),
        synced: facts.synced && facts.seed.is_none(),
        serving: match facts.seed {
            Some(Seed::Static) => Some("the static seed"),
            Some(Seed::Restored) => Some("the catalog restored from disk"),
            None => None,
        },
        serial,
        age_seconds: facts.age().map(|a| a.as_secs_f64()),
        max_age_seconds: facts.max_age.map(|a| a.as_secs_f64()),
    };
    (verdict.is_ok(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_table() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let ready = Facts {
            stopping: false,
            source_down: false,
            synced: true,
            seed: None,
            as_of: Some(now),
            max_age: None,
            now,
        };
        let cases = [
            ("synced, no limit", ready, Ok(())),
            ("synced, never confirmed, no limit", Facts { as_of: None, ..ready }, Ok(())),
            ("not synced", Facts { synced: false, ..ready }, Err(NotReady::NotSynced)),
            ("stopping", Facts { stopping: true, ..ready }, Err(NotReady::Stopping)),
            ("only the static seed", Facts { seed: Some(Seed::Static), ..ready }, Err(NotReady::ServingSeed)),
            ("restored from disk", Facts { seed: Some(Seed::Restored), ..ready }, Ok(())),
            ("source down", Facts { source_down: true, ..ready }, Err(NotReady::SourceDown)),
            ("young enough", Facts { as_of: Some(now - hour), max_age: Some(2 * hour), ..ready }, Ok(())),
            (
                "too old",
                Facts { as_of: Some(now - 2 * hour), max_age: Some(hour), ..ready },
                Err(NotReady::Stale { age: 2 * hour }),
            ),
            (
                "limit, never confirmed",
                Facts { as_of: None, max_age: Some(hour), ..ready },
                Err(NotReady::NeverConfirmed),
            ),
            ("clock went back", Facts { as_of: Some(now + hour), max_age: Some(hour), ..ready }, Ok(())),
        ];
        for (what, facts, want) in cases {
            assert_eq!(readiness(&facts), want, "{what}");
        }
    }
}
