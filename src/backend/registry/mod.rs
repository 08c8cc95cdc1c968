//! What the database and etcd sources store: one node or one service instance per row (or
//! key), in the shape of a static catalog entry. Both stores read into [`NodeEntry`] and
//! [`ServiceEntry`] and convert with [`to_catalog`], which skips an invalid entry (naming it
//! and why) instead of rejecting the whole catalog. [`Registration`] is the checked input of
//! `consul-dns db register`, the same for every store.

/// The `consul-dns db` subcommands.
pub mod command;

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::catalog::model::{
    Address, CatalogData, Health, Instance, Node, TaggedAddresses, Weights, is_dns_label, is_dns_name, lower,
};

/// A `db` command the store's content refuses, the same for every store: nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// `db register` with an ID that is stored already.
    #[error("service ID {0:?} is registered already; deregister it first or choose another --id")]
    DuplicateId(String),
    /// `db deregister` or `db set-health` of an ID that is not stored.
    #[error("no service with ID {0:?} is registered")]
    UnknownId(String),
    /// `db register --node N` for a node not stored, without `--address` to create it.
    #[error("node {0:?} is not registered; give --address to create it")]
    UnknownNode(String),
}

/// One node as stored: the JSON of a static catalog `[[nodes]]` entry, plus its datacenter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Node name (a DNS name).
    pub name: String,
    /// IP or hostname.
    pub address: String,
    /// Datacenter; `None` = the daemon's local one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// Answered as TXT records of the node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// SRV weights as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryWeights {
    /// Weight while passing (1..=65535).
    pub passing: i64,
    /// Weight while warning (0..=65535).
    pub warning: i64,
}

impl Default for EntryWeights {
    fn default() -> Self {
        EntryWeights { passing: 1, warning: 1 }
    }
}

/// One service instance as stored: the JSON of a static catalog `[[services]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// Instance ID, unique in the store.
    #[serde(default)]
    pub id: String,
    /// Service name (one DNS label).
    pub name: String,
    /// The node it runs on; `None` = an instance with its own address only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its own address; `None` = the node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port (0..=65535); wide so that a bad stored value is reported, not misread.
    pub port: i64,
    /// Tags, answered as `<tag>.<service>.service.consul`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// SRV weights.
    #[serde(default)]
    pub weights: EntryWeights,
    /// `passing`, `warning` or `critical`.
    #[serde(default = "passing")]
    pub health: String,
    /// Kept for parity with Consul registrations; DNS does not answer it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// One row or key that could not even be decoded (a column of the wrong type, a value that is
/// not JSON): reported with its ID, as an invalid entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// `node NAME` or `service ID`.
    pub id: String,
    /// What is wrong.
    pub reason: String,
}

/// Everything in a store, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    /// Nodes.
    pub nodes: Vec<NodeEntry>,
    /// Service instances.
    pub services: Vec<ServiceEntry>,
    /// Rows or keys that do not decode.
    pub bad: Vec<BadRow>,
}

fn passing() -> String {
    "passing".into()
}

/// Converts stored entries into a catalog: entries that cannot be served are passed to
/// `skipped` with their ID and reason and left out; the rest is always a valid catalog. A node
/// without a datacenter and a node-less instance belong to `local_dc`.
pub fn to_catalog(
    nodes: Vec<NodeEntry>,
    services: Vec<ServiceEntry>,
    local_dc: &str,
    skipped: &mut dyn FnMut(&str, &dyn fmt::Display),
) -> CatalogData {
    let mut data = CatalogData::default();
    // Lower-cased node name → its datacenter (names are unique across the store).
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    for entry in nodes {
        let id = format!("node {}", entry.name);
        match convert_node(entry, local_dc) {
            Ok(node) if known.contains_key(&*lower(&node.name)) => {
                skipped(&id, &"a node of this name (ignoring case) is stored already")
            }
            Ok(node) => {
                known.insert(lower(&node.name).into_owned(), node.datacenter.clone());
                data.nodes.push(node);
            }
            Err(reason) => skipped(&id, &reason),
        }
    }
    let mut ids = HashSet::new();
    for entry in services {
        let id = format!("service {}", entry.id);
        match convert_service(entry, local_dc, &known) {
            Ok(inst) if !ids.insert(inst.id.clone()) => skipped(&id, &"this ID is stored twice"),
            Ok(inst) => data.instances.push(inst),
            Err(reason) => skipped(&id, &reason),
        }
    }
    data
}

fn convert_node(entry: NodeEntry, local_dc: &str) -> Result<Node, String> {
    if !is_dns_name(&entry.name) {
        return Err(format!("name {:?} is not a DNS name (letters, digits, '-', '_', dot-separated)", entry.name));
    }
    let datacenter = entry.datacenter.unwrap_or_else(|| local_dc.to_owned());
    if !is_dns_label(&datacenter) {
        return Err(format!("datacenter {datacenter:?} is not one DNS label"));
    }
    let address = Address::check(&entry.address).map_err(|e| e.to_string())?;
    Ok(Node {
        name: entry.name,
        datacenter,
        address,
        tagged: TaggedAddresses::default(),
        meta: entry.meta.into_iter().collect(),
    })
}

fn convert_service(entry: ServiceEntry, local_dc: &str, nodes: &BTreeMap<String, String>) -> Result<Instance, String> {
    if entry.id.trim().is_empty() {
        return Err("the ID is empty".into());
    }
    if !is_dns_label(&entry.name) {
        return Err(format!("service name {:?} is not one DNS label (letters, digits, '-', '_')", entry.name));
    }
    let port = u16::try_from(entry.port).map_err(|_| format!("port {} is out of range 0..=65535", entry.port))?;
    let health = Health::parse(&entry.health)
        .ok_or_else(|| format!("health {:?} is not passing, warning or critical", entry.health))?;
    let weights = weights(entry.weights)?;
    let datacenter = match &entry.node {
        Some(node) => nodes.get(&*lower(node)).cloned().ok_or_else(|| format!("node {node:?} is not stored"))?,
        None => local_dc.to_owned(),
    };
    let address = match entry.address.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        Some(text) => Some(Address::check(text).map_err(|e| e.to_string())?),
        None if entry.node.is_none() => return Err("it has neither a node nor an address".into()),
        None => None,
    };
    Ok(Instance {
        id: entry.id,
        service: entry.name,
        datacenter,
        node: entry.node,
        address,
        tagged: TaggedAddresses::default(),
        port,
        tags: crate::catalog::model::tags(entry.tags),
        weights,
        health,
    })
}

fn weights(stored: EntryWeights) -> Result<Weights, String> {
    let passing = u16::try_from(stored.passing).ok().filter(|w| *w > 0);
    let warning = u16::try_from(stored.warning).ok();
    match (passing, warning) {
        (Some(passing), Some(warning)) => Ok(Weights { passing, warning }),
        (None, _) => Err(format!("weight_passing {} is out of range 1..=65535", stored.passing)),
        (_, None) => Err(format!("weight_warning {} is out of range 0..=65535", stored.warning)),
    }
}

/// Why a `db` command refuses its input; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// A name that DNS cannot carry.
    #[error("{what} {value:?} is not a DNS label: use letters, digits, '-' and '_' (at most 63)")]
    NotALabel {
        /// `service name`, `node`.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// An address that is empty.
    #[error("the address is empty")]
    EmptyAddress,
    /// Neither a node nor an address.
    #[error("give --address (and --node to place the instance on a node)")]
    NoAddress,
    /// Health not in the vocabulary.
    #[error("health {0:?} is not one of passing, warning, critical")]
    Health(String),
    /// A weight out of range.
    #[error("weight {0} is out of range 1..=65535")]
    Weight(u32),
    /// A bad ID.
    #[error("the ID {0:?} must be 1 to 255 characters without '/' or spaces")]
    Id(String),
    /// A tag that is empty or has spaces.
    #[error("tag {0:?} must be one DNS label (letters, digits, '-', '_')")]
    Tag(String),
}

/// A checked `db register`: the service instance and, with `--node`, its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The instance to store.
    pub service: ServiceEntry,
    /// The node to create when it is not stored yet (name and the given address).
    pub node: Option<NodeEntry>,
}

impl Registration {
    /// Checks the input of `db register`. `id` defaults to the service name.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        address: Option<&str>,
        port: u16,
        id: Option<&str>,
        tags: &[String],
        node: Option<&str>,
        weight: u32,
    ) -> Result<Registration, InputError> {
        let label = |what, value: &str| {
            if is_dns_label(value) {
                Ok(value.to_owned())
            } else {
                Err(InputError::NotALabel { what, value: value.into() })
            }
        };
        let name = label("service name", name)?;
        let id = id.unwrap_or(&name).to_owned();
        if id.is_empty() || id.len() > 255 || id.contains('/') || id.chars().any(char::is_whitespace) {
            return Err(InputError::Id(id));
        }
        let address = match address.map(str::trim) {
            Some("") => return Err(InputError::EmptyAddress),
            other => other.map(str::to_owned),
        };
        let node = node.map(|n| label("node", n)).transpose()?;
        if node.is_none() && address.is_none() {
            return Err(InputError::NoAddress);
        }
        if let Some(bad) = tags.iter().find(|t| !is_dns_label(t)) {
            return Err(InputError::Tag(bad.clone()));
        }
        let passing = u16::try_from(weight).ok().filter(|w| *w > 0).ok_or(InputError::Weight(weight))?;
        let node_entry = node.as_ref().zip(address.as_ref()).map(|(n, a)| NodeEntry {
            name: n.clone(),
            address: a.clone(),
            datacenter: None,
            meta: BTreeMap::new(),
        });
        Ok(Registration {
            service: ServiceEntry {
                id,
                name,
                // On a node, the address given is the node's (created with it) unless the node
                // exists with another one: the store decides (see `for_existing_node`).
                address: if node.is_some() { None } else { address },
                node,
                port: port.into(),
                tags: tags.to_vec(),
                weights: EntryWeights { passing: passing.into(), warning: 1 },
                health: passing_health(),
                meta: BTreeMap::new(),
            },
            node: node_entry,
        })
    }

    /// The node named by `--node` is stored already with `stored_address`: the node is left
    /// alone, and an address given that differs becomes the instance's own.
    pub fn for_existing_node(mut self, stored_address: &str) -> Registration {
        if let Some(node) = self.node.take()
            && node.address.trim() != stored_address.trim()
        {
            self.service.address = Some(node.address);
        }
        self
    }
}

fn passing_health() -> String {
    passing()
}

/// Checks a `db set-health` value, returning its stored form.
pub fn health_word(text: &str) -> Result<&'static str, InputError> {
    match Health::parse(text.trim()) {
        Some(Health::Passing) => Ok("passing"),
        Some(Health::Warning) => Ok("warning"),
        Some(Health::Critical) => Ok("critical"),
        None => Err(InputError::Health(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, address: &str) -> NodeEntry {
        NodeEntry { name: name.into(), address: address.into(), datacenter: None, meta: BTreeMap::new() }
    }

    fn service(id: &str, name: &str, node: Option<&str>, address: Option<&str>) -> ServiceEntry {
        ServiceEntry {
            id: id.into(),
            name: name.into(),
            node: node.map(Into::into),
            address: address.map(Into::into),
            port: 80,
            tags: vec![],
            weights: EntryWeights::default(),
            health: "passing".into(),
            meta: BTreeMap::new(),
        }
    }

    #[test]
    fn invalid_entries_are_skipped_with_their_id_and_the_rest_is_served() {
        let mut bad_port = service("p", "web", None, Some("10.0.0.9"));
        bad_port.port = 70000;
        let mut bad_health = service("h", "web", Some("n1"), None);
        bad_health.health = "sick".into();
        let mut bad_weight = service("w", "web", Some("n1"), None);
        bad_weight.weights.passing = 0;
        let nodes = vec![node("n1", "10.0.0.1"), node("N1", "10.0.0.2"), node("bad name", "10.0.0.3"), node("n2", "")];
        let services = vec![
            service("ok", "web", Some("n1"), None),
            service("own", "api", None, Some("10.0.0.5")),
            service("ok", "web", Some("n1"), None),
            service("lost", "web", Some("n9"), None),
            service("nowhere", "web", None, None),
            service("label", "no.label", None, Some("10.0.0.5")),
            bad_port,
            bad_health,
            bad_weight,
        ];
        let mut skipped = Vec::new();
        let data = to_catalog(nodes, services, "dc1", &mut |id, why| skipped.push(format!("{id}: {why}")));
        assert_eq!(data.validate(), Ok(()));
        assert_eq!(data.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["n1"]);
        assert_eq!(data.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["ok", "own"]);
        assert_eq!(skipped.len(), 10, "{skipped:#?}");
        for needle in [
            "node N1: a node of this name",
            "node bad name: name",
            "node n2: the address is empty",
            "service ok: this ID is stored twice",
            "service lost: node \"n9\" is not stored",
            "service nowhere: it has neither",
            "service label: service name",
            "service p: port 70000",
            "service h: health \"sick\"",
            "service w: weight_passing 0",
        ] {
            assert!(skipped.iter().any(|s| s.starts_with(needle)), "{needle} in {skipped:#?}");
        }
    }

    #[test]
    fn datacenters_come_from_the_node_or_the_local_one() {
        let mut remote = node("n2", "10.0.0.2");
        remote.datacenter = Some("dc2".into());
        let services = vec![service("a", "web", Some("n2"), None), service("b", "web", None, Some("h.example"))];
        let data = to_catalog(vec![remote], services, "dc1", &mut |id, why| panic!("{id}: {why}"));
        let dcs: Vec<&str> = data.instances.iter().map(|i| i.datacenter.as_str()).collect();
        assert_eq!(dcs, ["dc2", "dc1"]);
        assert_eq!(data.instances[1].address, Some(Address::Host("h.example".into())));
    }

    #[test]
    fn registrations_are_checked_before_anything_is_stored() {
        let ok = Registration::new("user", Some("127.0.0.31"), 8001, None, &["v1".into()], Some("n1"), 10).unwrap();
        assert_eq!((ok.service.id.as_str(), ok.service.address.as_deref()), ("user", None));
        assert_eq!(ok.node.as_ref().map(|n| n.address.as_str()), Some("127.0.0.31"));
        assert_eq!(ok.service.weights, EntryWeights { passing: 10, warning: 1 });
        let moved = ok.clone().for_existing_node("127.0.0.99");
        assert_eq!((moved.node, moved.service.address.as_deref()), (None, Some("127.0.0.31")));
        let same = ok.for_existing_node("127.0.0.31");
        assert_eq!((same.node, same.service.address), (None, None));
        let cases: [(Result<Registration, InputError>, &str); 6] = [
            (Registration::new("my svc", Some("1.2.3.4"), 1, None, &[], None, 1), "not a DNS label"),
            (Registration::new("web", None, 1, None, &[], None, 1), "give --address"),
            (Registration::new("web", Some(" "), 1, None, &[], None, 1), "address is empty"),
            (Registration::new("web", Some("1.2.3.4"), 1, Some("a/b"), &[], None, 1), "without '/'"),
            (Registration::new("web", Some("1.2.3.4"), 1, None, &["a b".into()], None, 1), "tag"),
            (Registration::new("web", Some("1.2.3.4"), 1, None, &[], None, 70000), "out of range"),
        ];
        for (result, says) in cases {
            let error = result.unwrap_err().to_string();
            assert!(error.contains(says), "{error} should say {says}");
        }
        assert_eq!(health_word("Warning"), Ok("warning"));
        assert!(health_word("sick").unwrap_err().to_string().contains("passing, warning, critical"));
    }

    #[test]
    fn entries_read_the_static_catalog_json_shape() {
        let json = r#"{"name":"web","port":80,"node":"n1","tags":["a"],"weights":{"passing":5,"warning":1},"health":"warning"}"#;
        let entry: ServiceEntry = serde_json::from_str(json).unwrap();
        assert_eq!((entry.port, entry.health.as_str(), entry.weights.passing), (80, "warning", 5));
        assert!(serde_json::from_str::<ServiceEntry>(r#"{"name":"web","port":80,"bogus":1}"#).is_err());
        let node: NodeEntry =
            serde_json::from_str(r#"{"name":"n1","address":"10.0.0.1","meta":{"rack":"a"}}"#).unwrap();
        assert_eq!(node.meta["rack"], "a");
    }
}
