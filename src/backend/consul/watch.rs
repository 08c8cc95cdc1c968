//! One blocking query, looped: the index rules of H3.6, a token bucket against churn (H3.7),
//! jittered backoff on errors, and the decoded body handed to the syncer only when the index
//! moved.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::client::Client;
use super::wire::{ServiceList, WireCheck, WireIngress, WireNode};
use super::{Event, SyncError};
use crate::backend::backoff::{Backoff, RateLimit};
use crate::backend::failure::Failure;

/// Retry delays after errors: 100 ms doubling to 2 s, +50% jitter (H3.7's doubling, capped
/// low so a Consul that is back is seen within seconds; see `backoff::SOURCE_RETRY_MAX`).
pub const BACKOFF_MIN: Duration = crate::backend::backoff::SOURCE_RETRY_MIN;
/// The backoff cap.
pub const BACKOFF_MAX: Duration = crate::backend::backoff::SOURCE_RETRY_MAX;
/// Rounds a churning watch may run back to back…
pub const CHURN_BURST: u32 = 4;
/// …then one per this interval: the longest a change waits behind churn.
pub const CHURN_EVERY: Duration = Duration::from_millis(250);

/// What the index a blocking query returned means (H3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Higher than sent (or the first read): apply the body, block again with this index.
    Changed(u64),
    /// Same as sent: nothing changed.
    Unchanged,
    /// Lower than sent: start over from 0 and re-read at once.
    WentBackwards,
}

/// H3.6: backwards → reset; same → unchanged. A reply without an index (none, or 0) says
/// nothing about change: its body is applied, and the next query sends 1 (Consul's own
/// client rule: never block with 0), so a Consul that keeps answering 0 is polled at the
/// churn limit and its changes still arrive.
pub fn step(sent: u64, returned: Option<u64>) -> Step {
    let Some(returned) = returned.filter(|&r| r > 0) else { return Step::Changed(1) };
    if sent == 0 {
        Step::Changed(returned)
    } else if returned < sent {
        Step::WentBackwards
    } else if returned == sent {
        Step::Unchanged
    } else {
        Step::Changed(returned)
    }
}

/// The per-datacenter watches: the three of the aggregate strategy (H5.4) and the ingress
/// gateways' config entries (S2.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `/v1/catalog/services`.
    Services,
    /// `/v1/catalog/nodes`.
    Nodes,
    /// `/v1/health/state/any`.
    Checks,
    /// `/v1/config/ingress-gateway`.
    Ingress,
}

impl Topic {
    /// Every watch, in start order.
    pub const ALL: [Topic; 4] = [Topic::Services, Topic::Nodes, Topic::Checks, Topic::Ingress];
}

impl Topic {
    fn path(self) -> &'static str {
        match self {
            Topic::Services => "/v1/catalog/services",
            Topic::Nodes => "/v1/catalog/nodes",
            // Only the checks that can change an answer (S4): small bodies however large the
            // catalog; the index still moves with every check write (H3.5).
            Topic::Checks => "/v1/health/state/any?filter=Status%20!%3D%20%22passing%22",
            Topic::Ingress => "/v1/config/ingress-gateway",
        }
    }

    /// Name in logs and the status index table.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Services => "services",
            Topic::Nodes => "nodes",
            Topic::Checks => "checks",
            Topic::Ingress => "ingress",
        }
    }
}

/// A decoded watch body.
#[derive(Debug)]
pub enum Body {
    /// Service name → tags.
    Services(ServiceList),
    /// Every node.
    Nodes(Vec<WireNode>),
    /// Every check.
    Checks(Vec<WireCheck>),
    /// Every ingress gateway config entry.
    Ingress(Vec<WireIngress>),
}

fn decode(topic: Topic, url: &str, bytes: &[u8]) -> Result<Body, SyncError> {
    let error = |e: serde_json::Error| SyncError::Decode { url: url.to_owned(), message: e.to_string() };
    Ok(match topic {
        Topic::Services => Body::Services(serde_json::from_slice(bytes).map_err(error)?),
        Topic::Nodes => {
            Body::Nodes(serde_json::from_slice::<Option<Vec<_>>>(bytes).map_err(error)?.unwrap_or_default())
        }
        Topic::Checks => {
            Body::Checks(serde_json::from_slice::<Option<Vec<_>>>(bytes).map_err(error)?.unwrap_or_default())
        }
        Topic::Ingress => {
            Body::Ingress(serde_json::from_slice::<Option<Vec<_>>>(bytes).map_err(error)?.unwrap_or_default())
        }
    })
}

/// Runs one watch until `cancel` or until the syncer hangs up.
pub async fn run(client: Client, dc: String, topic: Topic, events: mpsc::Sender<Event>, cancel: CancellationToken) {
    let mut index = 0;
    let mut backoff = Backoff::try_new(BACKOFF_MIN, BACKOFF_MAX, 0.5).expect("valid constants");
    let mut limit = RateLimit::new(CHURN_BURST, CHURN_EVERY);
    let watch = format!("{dc} {}", topic.name());
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            result = round(&client, &dc, topic, &mut index, &mut limit) => result,
        };
        let event = match result {
            Ok(Some((body, index))) => {
                backoff.reset();
                Event::Watch { dc: dc.clone(), body, index }
            }
            Ok(None) => {
                backoff.reset();
                Event::Confirmed
            }
            Err(SyncError::IndexWentBackwards { sent, returned }) => {
                // H3.6 rule 1: the index is 0 again, so the next round re-reads at once.
                debug!(watch, sent, returned, "Consul index went backwards; reading again.");
                let error = format!("{watch}: index went backwards from {sent} to {returned}; reading again");
                Event::Failed { failure: Failure::IndexWentBackwards, error }
            }
            Err(error) => {
                // The agent may have been replaced by one whose indexes start again: a blocking
                // read with the old index would hang for the whole wait, and an index that
                // comes back equal would read as "unchanged". Read afresh once it answers.
                index = 0;
                let delay = backoff.next_delay();
                debug!(watch, %error, ?delay, "Consul read failed; retrying.");
                let failed = Event::Failed { failure: error.reason(), error: format!("{watch}: {error}") };
                if events.send(failed).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// One blocking read: the body and new index when it moved, `None` when it did not.
async fn round(
    client: &Client,
    dc: &str,
    topic: Topic,
    index: &mut u64,
    limit: &mut RateLimit,
) -> Result<Option<(Body, u64)>, SyncError> {
    limit.acquire().await;
    let reply = client.get(topic.path(), Some(dc), Some(*index)).await?;
    let decoding = std::time::Instant::now();
    // Only a body that decodes counts as a successful read, changed or not.
    let body = decode(topic, topic.path(), &reply.body)?;
    debug!(
        dc,
        watch = topic.name(),
        bytes = reply.body.len(),
        decode_us = decoding.elapsed().as_micros() as u64,
        "Watch returned."
    );
    match step(*index, reply.index) {
        Step::WentBackwards => {
            let sent = std::mem::take(index);
            Err(SyncError::IndexWentBackwards { sent, returned: reply.index.unwrap_or(0) })
        }
        Step::Unchanged => Ok(None),
        Step::Changed(next) => {
            *index = next;
            Ok(Some((body, next)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h3_6_index_rules() {
        let cases = [
            // (sent, returned, want)
            (0, Some(5), Step::Changed(5)),
            (0, Some(0), Step::Changed(1)),
            (0, None, Step::Changed(1)),
            (5, Some(5), Step::Unchanged),
            (5, Some(9), Step::Changed(9)),
            (9, Some(5), Step::WentBackwards),
            (1, Some(0), Step::Changed(1)),
            (7, Some(0), Step::Changed(1)),
            (7, None, Step::Changed(1)),
        ];
        for (sent, returned, want) in cases {
            assert_eq!(step(sent, returned), want, "sent {sent}, returned {returned:?}");
        }
    }
}
