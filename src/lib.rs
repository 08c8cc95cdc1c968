//! consul-dns: a DNS server for Consul's DNS namespace (`<svc>.service.consul` and friends).
//!
//! Backends *write* an immutable catalog snapshot; the DNS server *reads* it. Nothing else
//! connects them:
//! - [`backend`] watches a source (a static file; the Consul catalog, databases), converts what
//!   it reads into [`catalog::model`] values, validates them, and publishes a new
//!   [`catalog::Snapshot`]; a failed read publishes nothing, so the last good snapshot serves.
//! - [`catalog`] holds the current snapshot behind `arc_swap::ArcSwap`; building a snapshot
//!   prepares every record once (addresses per query type, SRV targets, glue, TXT).
//! - [`dns`] parses a query without allocating, classifies its name ([`dns::name`]), builds the
//!   response from the snapshot ([`dns::answer`], pure), and sends it ([`dns::server`]: one UDP
//!   loop per worker thread, TCP on tokio). Names outside the domain go to upstream resolvers
//!   ([`dns::forward`], on tokio, never on a UDP worker) for clients [`dns::acl`] allows.
//! - [`config`] merges file < environment < flags and rejects unknown keys with file and line;
//!   [`app`] wires the pieces; [`telemetry`] sets up logs and counts; [`http`] serves metrics,
//!   health, readiness, the catalog as JSON and CPU profiles.
//!
//! `dns` never imports `backend` and `backend` never imports `dns`: both meet at `catalog`.
//! Behaviour follows the items S1–S15 of `docs/behaviour.md`, cited throughout; the Consul HTTP
//! API the Consul backend reads is `docs/consul-api.md` (H1–H6).

#![warn(missing_docs)]

pub mod app;
pub mod backend;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod dns;
pub mod fuzzing;
pub mod healthcheck;
pub mod http;
pub mod memory;
pub mod query;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub mod wire;

#[cfg(test)]
mod oracle;
