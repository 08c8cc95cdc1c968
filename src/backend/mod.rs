//! Backends: sources of catalog data.
//!
//! The contract is one method's worth: produce a complete, validated
//! [`crate::catalog::model::CatalogData`] or an error. On success the backend builds a
//! snapshot and publishes it; on error it publishes nothing, so the last good snapshot keeps
//! serving, and it says so in the log. Must not import `dns`.

pub mod backoff;
pub mod catalog_file;
pub mod consul;
pub mod etcd;
pub mod file;
pub mod registry;
pub mod sql;
pub mod status;
