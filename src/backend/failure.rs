//! Why a read of a catalog source failed: one vocabulary for every source, used as the
//! `reason` label of `consul_dns_sync_failures_total` and in the log lines that go with it.

/// Why a sync step failed; the `reason` label of `consul_dns_sync_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// Connection refused or reset, an unknown host: the source is not reachable.
    Network,
    /// No answer in time.
    Timeout,
    /// The source refused our credentials (HTTP 403, a database login rejected).
    Forbidden,
    /// The source asks us to slow down (HTTP 429 or 503).
    RateLimited,
    /// The source failed on its side (HTTP 5xx, a database error).
    ServerError,
    /// Any other unexpected status.
    OtherStatus,
    /// A body that is not what we expect (truncated, wrong shape).
    Decode,
    /// The source's change index went backwards (a restore, a leader change): read again.
    IndexWentBackwards,
    /// A file could not be read.
    Read,
    /// A file is not valid TOML or JSON, or has an unknown key.
    Parse,
    /// Data that parses but cannot be served (a name DNS cannot carry, a dangling node).
    Invalid,
    /// An empty catalog file: most likely a write in progress, never served.
    Empty,
    /// Building the snapshot failed (a bug: the task panicked).
    Build,
    /// Writing the on-disk copy of the catalog failed.
    Persist,
    /// A database without the catalog tables (`consul-dns db init` has not run) or with a
    /// schema newer than this binary.
    Schema,
}

impl Failure {
    /// Every reason, in label order.
    pub const ALL: [Failure; 15] = [
        Failure::Network,
        Failure::Timeout,
        Failure::Forbidden,
        Failure::RateLimited,
        Failure::ServerError,
        Failure::OtherStatus,
        Failure::Decode,
        Failure::IndexWentBackwards,
        Failure::Read,
        Failure::Parse,
        Failure::Invalid,
        Failure::Empty,
        Failure::Build,
        Failure::Persist,
        Failure::Schema,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Network => "network",
            Failure::Timeout => "timeout",
            Failure::Forbidden => "forbidden",
            Failure::RateLimited => "rate_limited",
            Failure::ServerError => "server_error",
            Failure::OtherStatus => "other_status",
            Failure::Decode => "decode",
            Failure::IndexWentBackwards => "index_went_backwards",
            Failure::Read => "read",
            Failure::Parse => "parse",
            Failure::Invalid => "invalid",
            Failure::Empty => "empty",
            Failure::Build => "build",
            Failure::Persist => "persist",
            Failure::Schema => "schema",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_snake_case() {
        let labels: std::collections::BTreeSet<&str> = Failure::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Failure::ALL.len());
        assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
