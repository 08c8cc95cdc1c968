//! The reverse map (S3.8): which node or service an address of the local datacenter belongs
//! to, built with a snapshot and patched by an update.

use std::net::IpAddr;
use std::sync::Arc;

use crate::catalog::model::{Address, CatalogData, Instance, lower};
use crate::catalog::records::{NodeRecords, relative};
use crate::catalog::snapshot::{Datacenter, Map, Update};

fn key(text: &str) -> Box<[u8]> {
    lower(text).as_bytes().into()
}

/// What a reverse lookup finds (S3.8).
#[derive(Debug, Clone)]
pub enum Pointer {
    /// A node: `<node>.node.<dc>`.
    Node(Arc<NodeRecords>),
    /// A service instance's own address: `<svc>.service.<dc>` labels.
    Service(Arc<[u8]>),
}

impl Pointer {
    /// The PTR target's relative labels.
    pub fn labels(&self) -> &[u8] {
        match self {
            Pointer::Node(node) => &node.labels,
            Pointer::Service(labels) => labels,
        }
    }
}

/// S3.8: node addresses first (first node wins), then service addresses, local DC only.
pub(crate) fn reverse_map(data: &CatalogData, dc: &Datacenter, local: &str) -> Map<IpAddr, Pointer> {
    let is_local = |name: &str| name.eq_ignore_ascii_case(local);
    let mut map = Map::default();
    for node in data.nodes.iter().filter(|n| is_local(&n.datacenter)) {
        if let (Address::Ip(ip), Some(records)) = (&node.address, dc.nodes.get(&*key(&node.name))) {
            map.entry(*ip).or_insert_with(|| Pointer::Node(Arc::clone(records)));
        }
    }
    for inst in data.instances.iter().filter(|i| is_local(&i.datacenter)) {
        if let Some(Address::Ip(ip)) = &inst.address {
            map.entry(*ip).or_insert_with(|| Pointer::Service(service_labels(inst)));
        }
    }
    map
}

fn service_labels(inst: &Instance) -> Arc<[u8]> {
    relative(&format!("{}.service.{}", inst.service, inst.datacenter)).into()
}

/// S3.8 after an update: the reverse map of the previous snapshot with the changed local
/// nodes and services replaced (nodes still win over services).
pub(crate) fn patch_reverse(
    previous: &Map<IpAddr, Pointer>,
    update: &Update<'_>,
    local: &Datacenter,
    local_key: &[u8],
) -> Map<IpAddr, Pointer> {
    let is_local = |dc: &str| lower(dc).as_bytes() == local_key;
    let changed_nodes: std::collections::HashSet<Box<[u8]>> = (update.nodes.iter().map(|n| (&*n.datacenter, &*n.name)))
        .chain(update.removed_nodes.iter().copied())
        .filter(|(dc, _)| is_local(dc))
        .map(|(_, name)| key(name))
        .collect();
    let changed_services: std::collections::HashSet<Box<[u8]>> = update
        .services
        .iter()
        .filter(|s| s.mesh.is_none() && is_local(s.datacenter))
        .map(|s| relative(&format!("{}.service.{}", s.name, local.name)).to_ascii_lowercase().into())
        .collect();
    let mut map = previous.clone();
    map.retain(|_, pointer| match pointer {
        Pointer::Node(node) => !changed_nodes.contains(&*node_key(node)),
        Pointer::Service(labels) => !changed_services.contains(&*labels.to_ascii_lowercase()),
    });
    for node in update.nodes.iter().filter(|n| is_local(&n.datacenter)) {
        if let (Address::Ip(ip), Some(records)) = (&node.address, local.nodes.get(&*key(&node.name))) {
            map.insert(*ip, Pointer::Node(Arc::clone(records)));
        }
    }
    for change in update.services.iter().filter(|s| s.mesh.is_none() && is_local(s.datacenter)) {
        for inst in &change.instances {
            if let Some(Address::Ip(ip)) = &inst.address {
                map.entry(*ip).or_insert_with(|| Pointer::Service(service_labels(inst)));
            }
        }
    }
    map
}

/// The lower-case node name of prepared node records: their labels without `.node.<dc>`.
fn node_key(node: &NodeRecords) -> Vec<u8> {
    let mut labels = Vec::new();
    let mut at = 0;
    while at < node.labels.len() && node.labels[at] != 0 {
        let len = node.labels[at] as usize;
        labels.push(&node.labels[at + 1..at + 1 + len]);
        at += 1 + len;
    }
    labels.truncate(labels.len().saturating_sub(2));
    labels.join(&b'.').to_ascii_lowercase()
}
