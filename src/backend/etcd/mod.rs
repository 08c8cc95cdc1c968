//! The etcd source: the catalog as keys `<prefix>nodes/<name>` and `<prefix>services/<id>`,
//! each holding the JSON object of a static catalog entry (see [`crate::backend::registry`]).
//! Read with one range read at a revision, then followed by a watch from the next revision.

pub mod client;
pub(crate) mod watch;

use std::time::Duration;

use thiserror::Error;

use crate::backend::failure::Failure;
use crate::backend::registry::{BadRow, NodeEntry, Refusal, Registration, ServiceEntry, Tables};
pub use client::EtcdClient;
use client::{Compare, KeyValue};

/// Why an etcd call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EtcdError {
    /// No endpoint answered, or a stream broke.
    #[error("etcd is unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// etcd answered with an error.
    #[error("etcd answered HTTP {status}: {message}")]
    Status {
        /// HTTP status (0 inside a watch stream).
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// A response that is not the JSON expected.
    #[error("etcd sent something unexpected: {0}")]
    Decode(String),
    /// The store's content refuses the command.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The key changed while it was being updated, several times in a row.
    #[error("service {0:?} kept changing while it was updated; try again")]
    Contended(String),
}

impl EtcdError {
    /// The failure reason this error is counted under.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            EtcdError::Unreachable(_) => Failure::Network,
            EtcdError::Timeout(_) => Failure::Timeout,
            EtcdError::Decode(_) => Failure::Decode,
            EtcdError::Status { status: 401 | 403, .. } => Failure::Forbidden,
            EtcdError::Status { status: 429 | 503, .. } => Failure::RateLimited,
            _ => Failure::ServerError,
        }
    }
}

/// The catalog keys under one prefix.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    client: EtcdClient,
    prefix: String,
}

impl EtcdStore {
    /// A store over these endpoints; `prefix` ends with `/`.
    pub fn new(endpoints: &[String], prefix: &str) -> Result<EtcdStore, EtcdError> {
        Ok(EtcdStore { client: EtcdClient::new(endpoints)?, prefix: prefix.to_owned() })
    }

    /// The client, for the watch.
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn node_key(&self, name: &str) -> String {
        format!("{}nodes/{name}", self.prefix)
    }

    fn service_key(&self, id: &str) -> String {
        format!("{}services/{id}", self.prefix)
    }

    /// Everything under the prefix, and the revision it is current at.
    pub async fn read(&self) -> Result<(i64, Tables), EtcdError> {
        let (revision, kvs) = self.client.range(&self.prefix).await?;
        let mut tables = Tables::default();
        for kv in kvs {
            self.decode_into(&kv, &mut tables);
        }
        Ok((revision, tables))
    }

    /// Files one key into `tables`: a node, a service, or a bad entry. Keys under the prefix
    /// that are neither `nodes/` nor `services/` are reported too.
    pub fn decode_into(&self, kv: &KeyValue, tables: &mut Tables) {
        match self.decode(kv) {
            Ok(Decoded::Node(node)) => tables.nodes.push(node),
            Ok(Decoded::Service(service)) => tables.services.push(service),
            Err(bad) => tables.bad.push(bad),
        }
    }

    fn decode(&self, kv: &KeyValue) -> Result<Decoded, BadRow> {
        let rest = kv.key.strip_prefix(&self.prefix).unwrap_or(&kv.key);
        let bad = |reason: String| BadRow { id: format!("key {}", kv.key), reason };
        if let Some(name) = rest.strip_prefix("nodes/") {
            let node: NodeEntry = serde_json::from_slice(&kv.value)
                .map_err(|e| bad(format!("not a node object (name, address, datacenter, meta): {e}")))?;
            if node.name != name {
                return Err(bad(format!("the value names node {:?}, the key {name:?}", node.name)));
            }
            return Ok(Decoded::Node(node));
        }
        if let Some(id) = rest.strip_prefix("services/") {
            let mut service: ServiceEntry = serde_json::from_slice(&kv.value).map_err(|e| {
                bad(format!("not a service object (name, port, id, node, address, tags, weights, health, meta): {e}"))
            })?;
            if service.id.is_empty() {
                service.id = id.to_owned();
            } else if service.id != id {
                return Err(bad(format!("the value has ID {:?}, the key {id:?}", service.id)));
            }
            return Ok(Decoded::Service(service));
        }
        Err(bad("neither nodes/<name> nor services/<id>".into()))
    }

    /// Stores a registration, refused (nothing changed) when the ID is taken or its node is
    /// neither stored nor given an address. One transaction: the service key must be absent
    /// (and the node key too, when it is created here).
    pub async fn register(&self, registration: Registration) -> Result<Registration, EtcdError> {
        let id = registration.service.id.clone();
        let mut registration = registration;
        if let Some(node) = registration.service.node.clone() {
            match self.client.get(&self.node_key(&node)).await? {
                Some(kv) => {
                    let stored: NodeEntry = serde_json::from_slice(&kv.value)
                        .map_err(|e| EtcdError::Decode(format!("node {node:?} holds no node object: {e}")))?;
                    registration = registration.for_existing_node(&stored.address);
                }
                None if registration.node.is_none() => return Err(Refusal::UnknownNode(node).into()),
                None => {}
            }
        }
        let service_key = self.service_key(&id);
        let mut compare = vec![Compare::Absent(service_key.clone())];
        let mut puts = vec![(service_key, to_json(&registration.service))];
        if let Some(node) = &registration.node {
            compare.push(Compare::Absent(self.node_key(&node.name)));
            puts.push((self.node_key(&node.name), to_json(node)));
        }
        if self.client.txn(&compare, &puts, &[]).await? {
            return Ok(registration);
        }
        if self.client.get(&self.service_key(&id)).await?.is_some() {
            Err(Refusal::DuplicateId(id).into())
        } else {
            Err(EtcdError::Contended(id)) // the node appeared meanwhile
        }
    }

    /// Removes one instance (its node stays).
    pub async fn deregister(&self, id: &str) -> Result<(), EtcdError> {
        if self.client.delete(&self.service_key(id)).await? {
            Ok(())
        } else {
            Err(Refusal::UnknownId(id.to_owned()).into())
        }
    }

    /// Sets one instance's health: read, change, write back if nobody wrote in between.
    pub async fn set_health(&self, id: &str, health: &str) -> Result<(), EtcdError> {
        let key = self.service_key(id);
        for _ in 0..5 {
            let kv = self.client.get(&key).await?.ok_or_else(|| EtcdError::from(Refusal::UnknownId(id.to_owned())))?;
            let mut service: ServiceEntry = serde_json::from_slice(&kv.value)
                .map_err(|e| EtcdError::Decode(format!("service {id:?} holds no service object: {e}")))?;
            service.health = health.to_owned();
            let puts = [(key.clone(), to_json(&service))];
            if self.client.txn(&[Compare::ModRevision(key.clone(), kv.mod_revision)], &puts, &[]).await? {
                return Ok(());
            }
        }
        Err(EtcdError::Contended(id.to_owned()))
    }

    /// Writes a raw value under the prefix (tests write bad keys this way).
    pub async fn put_raw(&self, rest: &str, value: &[u8]) -> Result<(), EtcdError> {
        self.client.put(&format!("{}{rest}", self.prefix), value).await
    }
}

enum Decoded {
    Node(NodeEntry),
    Service(ServiceEntry),
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // The entry types are plain strings, numbers and maps of strings: serializing cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}
