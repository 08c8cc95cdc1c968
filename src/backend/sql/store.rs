//! The catalog tables through sqlx's Any driver: one code path for SQLite, MySQL/MariaDB and
//! PostgreSQL, runtime queries only (no database at build time), a bounded pool, and a
//! deadline on every call so that a hung server counts as a timeout instead of a stuck sync.

use std::collections::BTreeMap;
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::SqlError;
use super::schema::{MIGRATIONS, migrations_table, placeholders};
use crate::backend::registry::{BadRow, EntryWeights, NodeEntry, Refusal, Registration, ServiceEntry, Tables};
use crate::config::database::{DatabaseUrl, Dialect};

/// Most connections the daemon or a `db` command opens: the probe, a read, one spare.
pub const MAX_CONNECTIONS: u32 = 3;
/// How long one call (connecting included) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the pool tries to connect before the call fails (and says why).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The catalog tables of one database.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// What the pool connects to (holds the password: never shown).
    target: String,
    url: DatabaseUrl,
}

impl SqlStore {
    /// A lazily connecting pool: nothing is dialled until the first call, so a daemon starts
    /// (and answers from its seed) while the database is down. `create` makes a missing SQLite
    /// file (for `db init`).
    pub fn open(url: &DatabaseUrl, create: bool) -> Result<SqlStore, SqlError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let mut target = url.expose().to_owned();
        if url.dialect() == Dialect::Sqlite && !target.contains("mode=") {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(if create { "mode=rwc" } else { "mode=rw" });
        }
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(60)))
            .connect_lazy(&target)
            .map_err(|e| SqlError::from_sqlx(e, url))?;
        Ok(SqlStore { pool, dialect: url.dialect(), target, url: url.clone() })
    }

    /// The server kind.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn sql(&self, text: &str) -> String {
        placeholders(self.dialect, text)
    }

    async fn timed<T>(&self, call: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, SqlError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Err(sqlx::Error::PoolTimedOut)) => Err(self.why_no_connection().await),
            Ok(result) => result.map_err(SqlError::query),
            Err(_) => Err(SqlError::Timeout(CALL_TIMEOUT)),
        }
    }

    /// The pool gave up connecting without saying why (it retries until its deadline): one
    /// direct attempt names the cause, e.g. a refused connection or a rejected login.
    async fn why_no_connection(&self) -> SqlError {
        use sqlx::Connection;
        match tokio::time::timeout(Duration::from_secs(2), sqlx::AnyConnection::connect(&self.target)).await {
            Ok(Err(error)) => SqlError::from_sqlx(error, &self.url),
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                SqlError::Timeout(CONNECT_TIMEOUT)
            }
            Err(_) => SqlError::Timeout(CONNECT_TIMEOUT),
        }
    }

    /// Creates the tables, or brings them to this binary's newest version. Returns the versions
    /// applied now (empty when the schema was current).
    pub async fn init(&self) -> Result<Vec<i64>, SqlError> {
        self.timed(sqlx::raw_sql(&migrations_table(self.dialect)).execute(&self.pool)).await?;
        let applied: Vec<i64> = self
            .timed(sqlx::query("SELECT version FROM consul_dns_migrations").fetch_all(&self.pool))
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()
            .map_err(SqlError::query)?;
        let newest = MIGRATIONS.last().map_or(0, |m| m.version);
        if let Some(&ahead) = applied.iter().find(|v| **v > newest) {
            return Err(SqlError::SchemaTooNew { found: ahead, known: newest });
        }
        let mut done = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            // SQLite and PostgreSQL roll a failed migration back whole; MySQL commits DDL as it
            // goes, so a failure there names the statement.
            let mut tx = self.timed(self.pool.begin()).await?;
            for statement in (migration.statements)(self.dialect) {
                match tokio::time::timeout(CALL_TIMEOUT, sqlx::raw_sql(&statement).execute(&mut *tx)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return Err(SqlError::Migration {
                            version: migration.version,
                            statement,
                            error: e.to_string(),
                        });
                    }
                    Err(_) => return Err(SqlError::Timeout(CALL_TIMEOUT)),
                }
            }
            let record =
                self.sql("INSERT INTO consul_dns_migrations (version, description, applied_at) VALUES (?, ?, ?)");
            let query = sqlx::query(&record).bind(migration.version).bind(migration.description).bind(now_ms());
            self.timed(query.execute(&mut *tx)).await?;
            self.timed(tx.commit()).await?;
            done.push(migration.version);
        }
        Ok(done)
    }

    /// The change counter: moves on every write to the tables.
    pub async fn counter(&self) -> Result<i64, SqlError> {
        let row = self
            .timed(sqlx::query("SELECT counter FROM catalog_version WHERE id = 1").fetch_optional(&self.pool))
            .await;
        match row.map_err(SqlError::missing_tables)? {
            Some(row) => row.try_get::<i64, _>(0).map_err(SqlError::query),
            None => Err(SqlError::NotInitialized("the catalog_version row is missing".into())),
        }
    }

    /// Everything, in one transaction where the server allows a consistent read, with the
    /// counter it corresponds to (read first: a write during the read moves it again, so the
    /// next probe reloads).
    pub async fn read(&self) -> Result<(i64, Tables), SqlError> {
        let mut tx = self.timed(self.pool.begin()).await?;
        let counter = self
            .timed(sqlx::query("SELECT counter FROM catalog_version WHERE id = 1").fetch_optional(&mut *tx))
            .await
            .map_err(SqlError::missing_tables)?
            .map(|row| row.try_get::<i64, _>(0))
            .transpose()
            .map_err(SqlError::query)?
            .unwrap_or(0);
        let nodes = self
            .timed(sqlx::query("SELECT name, address, datacenter, meta FROM nodes ORDER BY name").fetch_all(&mut *tx))
            .await
            .map_err(SqlError::missing_tables)?;
        let services = self
            .timed(
                sqlx::query(
                    "SELECT id, name, node, address, port, tags, weight_passing, weight_warning, health, meta \
                     FROM services ORDER BY id",
                )
                .fetch_all(&mut *tx),
            )
            .await
            .map_err(SqlError::missing_tables)?;
        self.timed(tx.commit()).await?;
        let mut tables = Tables::default();
        for row in &nodes {
            match node_row(row) {
                Ok(node) => tables.nodes.push(node),
                Err(bad) => tables.bad.push(bad),
            }
        }
        for row in &services {
            match service_row(row) {
                Ok(service) => tables.services.push(service),
                Err(bad) => tables.bad.push(bad),
            }
        }
        Ok((counter, tables))
    }

    /// Stores a registration: refused (nothing changed) when its ID is taken or its node is
    /// neither stored nor given an address.
    pub async fn register(&self, registration: Registration) -> Result<Registration, SqlError> {
        let mut tx = self.timed(self.pool.begin()).await?;
        let id = registration.service.id.clone();
        let taken = self.sql("SELECT id FROM services WHERE id = ?");
        if self
            .timed(sqlx::query(&taken).bind(&id).fetch_optional(&mut *tx))
            .await
            .map_err(SqlError::missing_tables)?
            .is_some()
        {
            return Err(Refusal::DuplicateId(id).into());
        }
        let mut registration = registration;
        if let Some(node) = registration.service.node.clone() {
            let stored = self.sql("SELECT address FROM nodes WHERE name = ?");
            match self.timed(sqlx::query(&stored).bind(&node).fetch_optional(&mut *tx)).await? {
                Some(row) => {
                    let address: String = row.try_get(0).map_err(SqlError::query)?;
                    registration = registration.for_existing_node(&address);
                }
                None if registration.node.is_none() => return Err(Refusal::UnknownNode(node).into()),
                None => {}
            }
        }
        if let Some(node) = &registration.node {
            let insert = self.sql("INSERT INTO nodes (name, address, datacenter, meta) VALUES (?, ?, ?, ?)");
            let meta = serde_json::to_string(&node.meta).unwrap_or_else(|_| "{}".into());
            let query =
                sqlx::query(&insert).bind(&node.name).bind(&node.address).bind(node.datacenter.clone()).bind(meta);
            self.timed(query.execute(&mut *tx)).await?;
        }
        let service = &registration.service;
        let insert = self.sql(
            "INSERT INTO services (id, name, node, address, port, tags, weight_passing, weight_warning, health, \
             meta, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        let query = sqlx::query(&insert)
            .bind(&service.id)
            .bind(&service.name)
            .bind(service.node.clone())
            .bind(service.address.clone())
            .bind(service.port)
            .bind(serde_json::to_string(&service.tags).unwrap_or_else(|_| "[]".into()))
            .bind(service.weights.passing)
            .bind(service.weights.warning)
            .bind(&service.health)
            .bind(serde_json::to_string(&service.meta).unwrap_or_else(|_| "{}".into()))
            .bind(now_ms());
        self.timed(query.execute(&mut *tx)).await?;
        self.timed(tx.commit()).await?;
        Ok(registration)
    }

    /// Removes one instance (its node stays, as in Consul's catalog).
    pub async fn deregister(&self, id: &str) -> Result<(), SqlError> {
        let delete = self.sql("DELETE FROM services WHERE id = ?");
        let done =
            self.timed(sqlx::query(&delete).bind(id).execute(&self.pool)).await.map_err(SqlError::missing_tables)?;
        if done.rows_affected() == 0 { Err(Refusal::UnknownId(id.to_owned()).into()) } else { Ok(()) }
    }

    /// Sets one instance's health (`passing`, `warning`, `critical`).
    pub async fn set_health(&self, id: &str, health: &str) -> Result<(), SqlError> {
        let update = self.sql("UPDATE services SET health = ?, updated_at = ? WHERE id = ?");
        let query = sqlx::query(&update).bind(health).bind(now_ms()).bind(id);
        let done = self.timed(query.execute(&self.pool)).await.map_err(SqlError::missing_tables)?;
        if done.rows_affected() == 0 {
            // MySQL counts only rows that changed: tell "same value" from "no such ID".
            let exists = self.sql("SELECT id FROM services WHERE id = ?");
            if self.timed(sqlx::query(&exists).bind(id).fetch_optional(&self.pool)).await?.is_none() {
                return Err(Refusal::UnknownId(id.to_owned()).into());
            }
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn text(row: &AnyRow, column: &str, id: &str) -> Result<Option<String>, BadRow> {
    let bad =
        |e: &dyn std::fmt::Display| BadRow { id: id.to_owned(), reason: format!("column {column} is not text: {e}") };
    match row.try_get::<Option<String>, _>(column) {
        Ok(value) => Ok(value),
        // MySQL reports TEXT columns to the Any driver as BLOB: take the bytes as UTF-8.
        Err(error) => match row.try_get::<Option<Vec<u8>>, _>(column) {
            Ok(Some(bytes)) => String::from_utf8(bytes).map(Some).map_err(|e| bad(&e)),
            Ok(None) => Ok(None),
            Err(_) => Err(bad(&error)),
        },
    }
}

fn integer(row: &AnyRow, column: &str, id: &str) -> Result<i64, BadRow> {
    row.try_get::<i64, _>(column)
        .map_err(|e| BadRow { id: id.to_owned(), reason: format!("column {column} is not an integer: {e}") })
}

fn json<T: serde::de::DeserializeOwned + Default>(
    value: Option<String>,
    column: &str,
    shape: &str,
    id: &str,
) -> Result<T, BadRow> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(T::default()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| BadRow { id: id.to_owned(), reason: format!("column {column} is not {shape}: {e}") }),
    }
}

fn node_row(row: &AnyRow) -> Result<NodeEntry, BadRow> {
    let name = text(row, "name", "node ?")?.unwrap_or_default();
    let id = format!("node {name}");
    Ok(NodeEntry {
        address: text(row, "address", &id)?.unwrap_or_default(),
        datacenter: text(row, "datacenter", &id)?.filter(|dc| !dc.trim().is_empty()),
        meta: json::<BTreeMap<String, String>>(text(row, "meta", &id)?, "meta", "a JSON object of strings", &id)?,
        name,
    })
}

fn service_row(row: &AnyRow) -> Result<ServiceEntry, BadRow> {
    let service_id = text(row, "id", "service ?")?.unwrap_or_default();
    let id = format!("service {service_id}");
    Ok(ServiceEntry {
        name: text(row, "name", &id)?.unwrap_or_default(),
        node: text(row, "node", &id)?.filter(|n| !n.trim().is_empty()),
        address: text(row, "address", &id)?,
        port: integer(row, "port", &id)?,
        tags: json(text(row, "tags", &id)?, "tags", "a JSON array of strings", &id)?,
        weights: EntryWeights {
            passing: integer(row, "weight_passing", &id)?,
            warning: integer(row, "weight_warning", &id)?,
        },
        health: text(row, "health", &id)?.unwrap_or_default(),
        meta: json(text(row, "meta", &id)?, "meta", "a JSON object of strings", &id)?,
        id: service_id,
    })
}
