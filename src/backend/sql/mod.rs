//! The SQL source: the catalog in SQLite, MySQL/MariaDB or PostgreSQL tables (see
//! [`schema`]), written by `consul-dns db` or by anything else that writes rows.

pub(crate) mod poll;
pub mod schema;
pub mod store;

use std::time::Duration;

use thiserror::Error;

use crate::backend::failure::Failure;
use crate::backend::registry::Refusal;
use crate::config::database::DatabaseUrl;
pub use store::SqlStore;

/// Why a database call failed. Messages never hold the URL's password.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SqlError {
    /// The URL or its options are not usable by the driver.
    #[error("the database URL cannot be used: {0}")]
    Config(String),
    /// The server cannot be reached or the connection broke.
    #[error("the database is unreachable: {0}")]
    Unreachable(String),
    /// No answer in time (connecting included).
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// The server refused or failed a statement.
    #[error("the database refused a statement: {0}")]
    Query(String),
    /// The tables are missing.
    #[error("the catalog tables are missing ({0}); run `consul-dns db init` with the same --database-url")]
    NotInitialized(String),
    /// The schema was written by a newer consul-dns.
    #[error(
        "the database schema is at version {found}, newer than this consul-dns knows ({known}); upgrade consul-dns"
    )]
    SchemaTooNew {
        /// Version found.
        found: i64,
        /// Newest version known here.
        known: i64,
    },
    /// A migration statement failed.
    #[error("migration {version} failed at `{statement}`: {error}")]
    Migration {
        /// The migration.
        version: i64,
        /// The statement that failed.
        statement: String,
        /// The server's message.
        error: String,
    },
    /// The store's content refuses the command.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl SqlError {
    /// Classifies a driver error.
    pub(crate) fn query(error: sqlx::Error) -> SqlError {
        match error {
            sqlx::Error::Configuration(e) => SqlError::Config(e.to_string()),
            sqlx::Error::Io(e) => SqlError::Unreachable(e.to_string()),
            sqlx::Error::Tls(e) => SqlError::Unreachable(format!("TLS: {e}")),
            sqlx::Error::Protocol(e) => SqlError::Unreachable(format!("protocol error: {e}")),
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                SqlError::Unreachable("the connection pool is closed".into())
            }
            sqlx::Error::PoolTimedOut => SqlError::Timeout(store::CALL_TIMEOUT), // see SqlStore::timed
            other => SqlError::Query(other.to_string()),
        }
    }

    /// [`SqlError::query`] for an error at start-up, with the URL's password blanked out of it.
    pub(crate) fn from_sqlx(error: sqlx::Error, url: &DatabaseUrl) -> SqlError {
        match SqlError::query(error) {
            SqlError::Config(text) => SqlError::Config(url.redact(&text)),
            SqlError::Unreachable(text) => SqlError::Unreachable(url.redact(&text)),
            SqlError::Query(text) => SqlError::Query(url.redact(&text)),
            other => other,
        }
    }

    /// A statement on the catalog tables failed: "no such table" and its kin mean `db init`
    /// has not run.
    pub(crate) fn missing_tables(error: SqlError) -> SqlError {
        match error {
            SqlError::Query(text)
                if ["no such table", "doesn't exist", "does not exist", "unable to open database file"]
                    .iter()
                    .any(|m| text.contains(m)) =>
            {
                SqlError::NotInitialized(text)
            }
            other => other,
        }
    }

    /// The failure reason this error is counted under.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            SqlError::Unreachable(_) => Failure::Network,
            SqlError::Timeout(_) => Failure::Timeout,
            SqlError::NotInitialized(_) | SqlError::SchemaTooNew { .. } | SqlError::Migration { .. } => Failure::Schema,
            SqlError::Config(_) => Failure::Invalid,
            SqlError::Query(text)
                if ["Access denied", "password authentication failed", "permission denied"]
                    .iter()
                    .any(|m| text.contains(m)) =>
            {
                Failure::Forbidden
            }
            _ => Failure::ServerError,
        }
    }
}
