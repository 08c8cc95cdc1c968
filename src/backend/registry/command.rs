//! `consul-dns db init|register|deregister|set-health|list`: the catalog in a database or
//! etcd, changed without writing SQL or keys by hand. Input is checked before anything is
//! sent; a refused command changes nothing and says why in one sentence.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::Subcommand;
use serde::Serialize;
use thiserror::Error;

use super::{InputError, NodeEntry, Registration, ServiceEntry, Tables, health_word};
use crate::backend::etcd::{EtcdError, EtcdStore};
use crate::backend::sql::{SqlError, SqlStore};
use crate::config::database::{DatabaseSettings, EtcdSettings};

/// What to do with the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum DbAction {
    /// Create the catalog tables, or migrate them to this version (SQL; nothing to do for etcd)
    Init,
    /// Register a service instance
    Register {
        /// Service name (one DNS label): answered as <name>.service.consul
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The instance's address; with --node, the node's address when the node is new
        #[arg(long, value_name = "ADDRESS")]
        address: Option<String>,
        /// Port answered in SRV records
        #[arg(long, value_name = "PORT")]
        port: u16,
        /// Instance ID, unique [default: the service name]
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Tags, comma-separated: answered as <tag>.<name>.service.consul
        #[arg(long, value_name = "TAGS", value_delimiter = ',')]
        tags: Vec<String>,
        /// The node it runs on (created with --address when it is not registered)
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// SRV weight while passing (1..=65535)
        #[arg(long, value_name = "N", default_value_t = 1)]
        weight: u32,
    },
    /// Remove a service instance (its node stays)
    Deregister {
        /// Instance ID
        id: String,
    },
    /// Set an instance's health: passing, warning or critical
    SetHealth {
        /// Instance ID
        id: String,
        /// passing, warning or critical
        health: String,
    },
    /// List the registered instances
    List {
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// Where the catalog lives.
#[derive(Debug, Clone)]
pub enum Target {
    /// An SQL database.
    Sql(DatabaseSettings),
    /// etcd.
    Etcd(EtcdSettings),
}

/// Why a `db` command did nothing.
#[derive(Debug, Error)]
pub enum DbError {
    /// Bad input.
    #[error("{0}")]
    Input(#[from] InputError),
    /// The database refused or failed.
    #[error("{0}")]
    Sql(#[from] SqlError),
    /// etcd refused or failed.
    #[error("{0}")]
    Etcd(#[from] EtcdError),
}

enum Store {
    Sql(SqlStore),
    Etcd(EtcdStore),
}

impl Store {
    async fn register(&self, registration: Registration) -> Result<Registration, DbError> {
        Ok(match self {
            Store::Sql(store) => store.register(registration).await?,
            Store::Etcd(store) => store.register(registration).await?,
        })
    }

    async fn read(&self) -> Result<Tables, DbError> {
        Ok(match self {
            Store::Sql(store) => store.read().await?.1,
            Store::Etcd(store) => store.read().await?.1,
        })
    }
}

/// Runs one command; the text to print on success.
pub async fn execute(action: &DbAction, target: &Target) -> Result<String, DbError> {
    let store = match target {
        Target::Sql(settings) => Store::Sql(SqlStore::open(&settings.url, matches!(action, DbAction::Init))?),
        Target::Etcd(settings) => Store::Etcd(EtcdStore::new(&settings.endpoints, &settings.prefix)?),
    };
    let output = run(action, &store, target).await;
    if let Store::Sql(sql) = &store {
        sql.close().await;
    }
    output
}

async fn run(action: &DbAction, store: &Store, target: &Target) -> Result<String, DbError> {
    match action {
        DbAction::Init => match (store, target) {
            (Store::Sql(sql), Target::Sql(settings)) => {
                let applied = sql.init().await?;
                Ok(match applied.as_slice() {
                    [] => format!("{} at {}: the catalog tables are up to date", sql.dialect().name(), settings.url),
                    versions => format!(
                        "{} at {}: applied schema version {}",
                        sql.dialect().name(),
                        settings.url,
                        versions.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                    ),
                })
            }
            (_, _) => {
                store.read().await?; // proves the cluster answers
                Ok("etcd needs no schema: keys nodes/<name> and services/<id> under the prefix are read as they are"
                    .into())
            }
        },
        DbAction::Register { name, address, port, id, tags, node, weight } => {
            let registration =
                Registration::new(name, address.as_deref(), *port, id.as_deref(), tags, node.as_deref(), *weight)?;
            let done = store.register(registration).await?;
            let created = done.node.as_ref().map_or_else(String::new, |n| format!(" (node {} created)", n.name));
            Ok(format!(
                "registered {} as service {} port {}{created}",
                done.service.id, done.service.name, done.service.port
            ))
        }
        DbAction::Deregister { id } => {
            match store {
                Store::Sql(sql) => sql.deregister(id).await?,
                Store::Etcd(etcd) => etcd.deregister(id).await?,
            }
            Ok(format!("deregistered {id}"))
        }
        DbAction::SetHealth { id, health } => {
            let health = health_word(health)?;
            match store {
                Store::Sql(sql) => sql.set_health(id, health).await?,
                Store::Etcd(etcd) => etcd.set_health(id, health).await?,
            }
            Ok(format!("{id} is {health}"))
        }
        DbAction::List { json } => {
            let tables = store.read().await?;
            Ok(if *json { list_json(&tables) } else { list_table(&tables) })
        }
    }
}

#[derive(Serialize)]
struct Listed<'a> {
    id: &'a str,
    name: &'a str,
    node: Option<&'a str>,
    address: Option<&'a str>,
    port: i64,
    tags: &'a [String],
    weight_passing: i64,
    weight_warning: i64,
    health: &'a str,
}

fn listed<'a>(service: &'a ServiceEntry, nodes: &BTreeMap<&str, &'a NodeEntry>) -> Listed<'a> {
    let node_address = service.node.as_deref().and_then(|n| nodes.get(n)).map(|n| n.address.as_str());
    Listed {
        id: &service.id,
        name: &service.name,
        node: service.node.as_deref(),
        address: service.address.as_deref().or(node_address),
        port: service.port,
        tags: &service.tags,
        weight_passing: service.weights.passing,
        weight_warning: service.weights.warning,
        health: &service.health,
    }
}

fn node_index(tables: &Tables) -> BTreeMap<&str, &NodeEntry> {
    tables.nodes.iter().map(|n| (n.name.as_str(), n)).collect()
}

fn sorted(tables: &Tables) -> Vec<&ServiceEntry> {
    let mut services: Vec<&ServiceEntry> = tables.services.iter().collect();
    services.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    services
}

fn list_json(tables: &Tables) -> String {
    let nodes = node_index(tables);
    let rows: Vec<Listed<'_>> = sorted(tables).into_iter().map(|s| listed(s, &nodes)).collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

fn list_table(tables: &Tables) -> String {
    let nodes = node_index(tables);
    let header = ["ID", "SERVICE", "NODE", "ADDRESS", "PORT", "TAGS", "HEALTH", "WEIGHTS"].map(str::to_owned);
    let mut rows = vec![header];
    for service in sorted(tables) {
        let row = listed(service, &nodes);
        rows.push([
            row.id.to_owned(),
            row.name.to_owned(),
            row.node.unwrap_or("-").to_owned(),
            row.address.unwrap_or("-").to_owned(),
            row.port.to_string(),
            if row.tags.is_empty() { "-".into() } else { row.tags.join(",") },
            row.health.to_owned(),
            format!("{}/{}", row.weight_passing, row.weight_warning),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for bad in &tables.bad {
        let _ = writeln!(out, "skipped {}: {}", bad.id, bad.reason);
    }
    out.trim_end().to_owned()
}
