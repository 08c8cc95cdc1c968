//! The Consul backend: the live catalog through blocking queries, never less than the last good
//! state.
//!
//! # Strategy: four long polls per datacenter (docs/consul-api.md H5.4)
//! Per served datacenter, watches block on `/v1/catalog/services`, `/v1/catalog/nodes`,
//! `/v1/health/state/any?filter=Status != "passing"` and `/v1/config/ingress-gateway` (which
//! services each ingress gateway exposes, for `.ingress`); the number of long polls is
//! constant whatever the catalog's size, so an agent's 200-connections-per-IP
//! limit (H1.4) is never near. `/v1/health/service/<s>` (without `?passing`: S4 is applied
//! here, with warnings, maintenance and weights) is read once per service at start, then only
//! for services whose tag set changed or that appeared; when the services index moves with no
//! visible change (a re-registration with a new address or port, H3.4) every service of that
//! datacenter is read again, behind every known change and at most an eighth of the
//! connections at a time. A check flip costs no extra request: the
//! checks watch returns the non-passing checks, and the instances on that node (or with that
//! service ID) are re-judged. Rejected alternative: one blocking query per service — exact and
//! cheap through an agent's streaming backend, but 10,000 services need 10,000 held
//! connections, 50 times an agent's per-client limit.
//!
//! # State machine
//! `discover` (agent self, tolerating 403 → configured datacenter, H5.8; the datacenter list,
//! narrowed by `datacenters`) retries with backoff until Consul answers. Then each datacenter
//! is *syncing* until its services, nodes and checks watches have returned once and its services have been read; it
//! then goes *live*. The first publish waits until every datacenter is live (or
//! [`FIRST_SYNC_GRACE`] after the first one is), so no datacenter's names go from SERVFAIL to
//! NXDOMAIN merely because it synced later; each datacenter going live after that rebuilds the
//! whole catalog (restored data still stands in for datacenters not live yet). From then on every change marks services dirty in the
//! [`store::Store`]; dirty services are rebuilt and published as a [`Snapshot::update`] that
//! shares everything else, at most once per [`COALESCE`] (or twice the last update's cost)
//! while changes stream in. SIGHUP's new build options rebuild everything from the store.
//! After a publish the catalog is persisted (debounced, [`PERSIST_EVERY`]) to `state_dir`.
//!
//! # Invariants and failure behaviour
//! - Nothing is published from a failed read. A watch that fails keeps its index, logs once,
//!   counts the failure by reason in the metrics ([`crate::telemetry`]), and retries with jittered exponential
//!   backoff (100 ms → 2 s); a failed service read is retried the same way. DNS keeps
//!   answering the last good snapshot: a known service never turns into NXDOMAIN because
//!   Consul is down, slow or answers garbage (docs/behaviour.md K13).
//! - Index rules H3.6: backwards → 0 and read again at once; 0 → 1; same → unchanged. A token
//!   bucket per watch (burst 4, then one per 250 ms) stops a churning result from becoming a
//!   busy loop (H3.7).
//! - At most `max_conns` requests are in flight (a semaphore in [`client::Client`]); the
//!   four long polls per datacenter count against it, so at most `(max_conns − 1) / 4`
//!   datacenters are served.
//! - The token is sent as `X-Consul-Token` (marked sensitive) and never logged.
//!
//! # Limits
//! The datacenter list is read at start only. Wildcard (`*`) services of ingress gateways are
//! not expanded, and the ingress watch does not hold up a datacenter's first sync (older
//! Consuls and restricted tokens may not serve it). A re-registration that changes only an
//! address or port costs one read per service of its datacenter, paced so that known changes
//! are not held up (measured: 6.7 s for 10,000 services, three reads at a time). The store
//! keeps the synced instances as plain data beside the snapshot, shared with the mirror: 106
//! MB RSS for 100,000 instances, against 35 MB for the same catalog from a static file.

pub mod client;
pub mod store;
mod sync;
pub mod watch;
pub mod wire;

use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::backend::failure::Failure;
use crate::backend::publish::Publisher;
pub use crate::config::ConsulSettings as Settings;
use watch::Body;
use wire::WireEntry;

/// Longest wait, once one datacenter has synced, for the others before the first publish.
pub const FIRST_SYNC_GRACE: Duration = Duration::from_secs(5);

/// Syncs from Consul through `publisher` until `cancel`.
pub(crate) async fn run(settings: Settings, mut publisher: Publisher, cancel: CancellationToken) {
    match client::Client::new(&settings) {
        Ok(client) => sync::Syncer::new(settings, client, publisher).run(cancel).await,
        Err(error) => {
            publisher.failed(error.reason(), &error);
            publisher.finish().await;
        }
    }
}

/// Why one read from Consul failed.
#[derive(Debug, Error)]
pub enum SyncError {
    /// The client cannot be set up (CA bundle, token).
    #[error("{0}")]
    Setup(String),
    /// Connection refused, reset, timeout.
    #[error("GET {url}: {}", network_sentence(source))]
    Network {
        /// The URL (the token is a header, never in it).
        url: String,
        /// The HTTP error.
        source: reqwest::Error,
    },
    /// A status other than 200 (a 403 says what the token lacks).
    #[error("GET {url}: HTTP {status}: {}", status_sentence(url, *status, body))]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body (Consul's reason).
        body: String,
    },
    /// A body that is not the JSON we expect.
    #[error("GET {url}: unexpected body: {message}")]
    Decode {
        /// The URL.
        url: String,
        /// The parser's message.
        message: String,
    },
    /// The blocking index went backwards (H3.6).
    #[error("index went backwards from {sent} to {returned}")]
    IndexWentBackwards {
        /// The index sent.
        sent: u64,
        /// The index returned.
        returned: u64,
    },
}

/// What a transport error means, in words: "connection refused" said plainly, with what to
/// check, rather than the client library's generic "error sending request".
fn network_sentence(error: &reqwest::Error) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut deepest = error.to_string();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return "connection refused: nothing listens there; is the Consul agent running, and is \
                            this its HTTP address (consul, CONSUL_HTTP_ADDR)?"
                        .into();
                }
                std::io::ErrorKind::ConnectionReset => return "the connection was reset by Consul".into(),
                _ => {}
            }
        }
        deepest = e.to_string();
        cause = e.source();
    }
    if error.is_timeout() {
        return "no answer in time".into();
    }
    if error.is_connect() {
        return format!("cannot connect: {deepest}");
    }
    deepest
}

/// The ACL permissions a read of `url` needs.
fn permissions_for(url: &str) -> &'static str {
    let path = url.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| &rest[i..])).unwrap_or(url);
    match path {
        p if p.starts_with("/v1/agent/self") => "agent:read",
        p if p.starts_with("/v1/catalog/nodes") => "node:read",
        p if p.starts_with("/v1/catalog/services") => "service:read",
        p if p.starts_with("/v1/config/") => "service:read",
        _ => "node:read and service:read",
    }
}

/// A status in words. A 403 is the token, not an outage: say whether Consul does not know it
/// or which permission it lacks (from Consul's own reason when it gives one).
fn status_sentence(url: &str, status: u16, body: &str) -> String {
    if status != 403 {
        return body.to_owned();
    }
    if body.contains("ACL not found") {
        return "Consul does not know this ACL token (ACL not found): check consul_token, consul_token_file or \
                CONSUL_HTTP_TOKEN; the token needs node:read and service:read"
            .into();
    }
    let lacks = body.split("lacks permission '").nth(1).and_then(|rest| rest.split('\'').next());
    match lacks {
        Some(permission) => format!(
            "Consul rejected the token: it lacks {permission}; give its policy node:read and service:read \
             (node_prefix \"\" and service_prefix \"\" with policy \"read\")"
        ),
        None => format!(
            "Consul rejected the token ({body}): it needs {} for this read; give its policy node:read and \
             service:read",
            permissions_for(url)
        ),
    }
}

impl SyncError {
    /// The failure reason it counts as.
    pub fn reason(&self) -> Failure {
        match self {
            SyncError::Setup(_) => Failure::OtherStatus,
            SyncError::Network { source, .. } if source.is_timeout() => Failure::Timeout,
            SyncError::Network { source, .. } if source.is_decode() || source.is_body() => Failure::Decode,
            SyncError::Network { .. } => Failure::Network,
            SyncError::Status { status: 403, .. } => Failure::Forbidden,
            SyncError::Status { status: 429 | 503, .. } => Failure::RateLimited,
            SyncError::Status { status: 500..=599, .. } => Failure::ServerError,
            SyncError::Status { .. } => Failure::OtherStatus,
            SyncError::Decode { .. } => Failure::Decode,
            SyncError::IndexWentBackwards { .. } => Failure::IndexWentBackwards,
        }
    }
}

/// What the syncer's tasks report.
#[derive(Debug)]
pub enum Event {
    /// A watch returned a new body.
    Watch {
        /// Datacenter.
        dc: String,
        /// The decoded body.
        body: Body,
        /// Its index.
        index: u64,
    },
    /// A service's health entries were read (or not).
    Health {
        /// Datacenter.
        dc: String,
        /// Service.
        service: String,
        /// The entries.
        result: Result<Vec<WireEntry>, SyncError>,
    },
    /// A watch returned with nothing new: the data is still current.
    Confirmed,
    /// A watch failed.
    Failed {
        /// Why.
        failure: Failure,
        /// What happened, for the log (the first failure of a streak is logged).
        error: String,
    },
}
