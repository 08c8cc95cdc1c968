//! Why a sync step failed: the reasons the live backend counts failures by (the `reason`
//! label of `consul_dns_sync_failures_total`, see [`crate::telemetry`]).

/// Why a sync step failed; the `reason` label of `consul_dns_sync_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureReason {
    /// Connection refused, reset, DNS failure of the Consul address.
    Network,
    /// No answer within the HTTP timeout.
    Timeout,
    /// 403: the token lacks a permission.
    Forbidden,
    /// 429 or 503: Consul asks us to slow down.
    RateLimited,
    /// 5xx other than 503.
    ServerError,
    /// Any other unexpected status.
    OtherStatus,
    /// A body that is not the JSON we expect (truncated, wrong shape).
    Decode,
    /// The index went backwards (snapshot restore, leader change): the watch starts over.
    IndexWentBackwards,
    /// Writing the on-disk snapshot failed.
    Persist,
}

impl FailureReason {
    /// Every reason, in label order.
    pub const ALL: [FailureReason; 9] = [
        FailureReason::Network,
        FailureReason::Timeout,
        FailureReason::Forbidden,
        FailureReason::RateLimited,
        FailureReason::ServerError,
        FailureReason::OtherStatus,
        FailureReason::Decode,
        FailureReason::IndexWentBackwards,
        FailureReason::Persist,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Network => "network",
            FailureReason::Timeout => "timeout",
            FailureReason::Forbidden => "forbidden",
            FailureReason::RateLimited => "rate_limited",
            FailureReason::ServerError => "server_error",
            FailureReason::OtherStatus => "other_status",
            FailureReason::Decode => "decode",
            FailureReason::IndexWentBackwards => "index_went_backwards",
            FailureReason::Persist => "persist",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_snake_case() {
        let labels: std::collections::BTreeSet<&str> = FailureReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), FailureReason::ALL.len());
        assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
