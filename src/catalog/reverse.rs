//! The reverse map (S3.8): which node or service an address of the local datacenter belongs
//! to.
//!
//! One policy, used by the full build and by every update: each node and each service of the
//! local datacenter *claims* its IP addresses, and an address answers with its best claimant —
//! nodes before services, then the lowest lower-case name (the order Consul's own catalog lists
//! them in). The winner depends only on the set of claimants, never on the order data arrived
//! in, so a snapshot reached by updates answers exactly as one built from scratch.

use std::net::IpAddr;
use std::sync::Arc;

use crate::catalog::model::{Address, Instance};
use crate::catalog::records::{Addr, NodeRecords, relative};

type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// What a reverse lookup finds (S3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Who claims an address; the derived order is the tie-break (nodes first, then by name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Claimant {
    Node(Box<[u8]>),
    Service(Box<[u8]>),
}

/// The claimants of one address, best first.
type Claims = Arc<[(Claimant, Pointer)]>;

/// The reverse map of the local datacenter with what each name claims, so an update can take
/// a name's old claims back.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReverseMap {
    by_ip: Map<IpAddr, Claims>,
    node_ip: Map<Box<[u8]>, IpAddr>,
    service_ips: Map<Box<[u8]>, Box<[IpAddr]>>,
}

impl ReverseMap {
    /// What `ip` reverse-maps to.
    pub(crate) fn get(&self, ip: &IpAddr) -> Option<&Pointer> {
        self.by_ip.get(ip).and_then(|claims| claims.first()).map(|(_, pointer)| pointer)
    }

    /// Every address with what it maps to (debugging views and tests).
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Pointer)> {
        self.by_ip.iter().filter_map(|(ip, claims)| Some((ip, &claims.first()?.1)))
    }

    /// Sets node `key`'s claim from its prepared records (`None`: the node is gone).
    pub(crate) fn set_node(&mut self, key: &[u8], records: Option<&Arc<NodeRecords>>) {
        let claimant = Claimant::Node(key.into());
        if let Some(ip) = self.node_ip.remove(key) {
            self.unclaim(ip, &claimant);
        }
        let Some(records) = records else { return };
        if let Some(ip) = records.addresses.plain.as_ref().and_then(ip_of) {
            self.node_ip.insert(key.into(), ip);
            self.claim(ip, claimant, Pointer::Node(Arc::clone(records)));
        }
    }

    /// Sets service `key`'s claims from all its instances in the local datacenter, any health
    /// (empty: the service is gone). `dc` is the datacenter's name as stored.
    pub(crate) fn set_service(&mut self, key: &[u8], instances: &[&Instance], dc: &str) {
        let claimant = Claimant::Service(key.into());
        for ip in self.service_ips.remove(key).into_iter().flatten() {
            self.unclaim(ip, &claimant);
        }
        let mut ips: Vec<IpAddr> = instances
            .iter()
            .filter_map(|inst| match &inst.address {
                Some(Address::Ip(ip)) => Some(*ip),
                _ => None,
            })
            .collect();
        ips.sort_unstable();
        ips.dedup();
        let Some(spelling) = instances.iter().map(|inst| inst.service.as_str()).min() else { return };
        if ips.is_empty() {
            return;
        }
        let labels: Arc<[u8]> = relative(&format!("{spelling}.service.{dc}")).into();
        for ip in &ips {
            self.claim(*ip, claimant.clone(), Pointer::Service(Arc::clone(&labels)));
        }
        self.service_ips.insert(key.into(), ips.into());
    }

    fn claim(&mut self, ip: IpAddr, claimant: Claimant, pointer: Pointer) {
        let mut claims: Vec<(Claimant, Pointer)> = self.by_ip.get(&ip).map_or_else(Vec::new, |c| c.to_vec());
        let at = claims.partition_point(|(c, _)| *c < claimant);
        claims.insert(at, (claimant, pointer));
        self.by_ip.insert(ip, claims.into());
    }

    fn unclaim(&mut self, ip: IpAddr, claimant: &Claimant) {
        let Some(claims) = self.by_ip.get(&ip) else { return };
        let rest: Vec<(Claimant, Pointer)> = claims.iter().filter(|(c, _)| c != claimant).cloned().collect();
        if rest.is_empty() {
            self.by_ip.remove(&ip);
        } else {
            self.by_ip.insert(ip, rest.into());
        }
    }
}

fn ip_of(addr: &Addr) -> Option<IpAddr> {
    match addr {
        Addr::V4(octets) => Some(IpAddr::from(*octets)),
        Addr::V6(octets) => Some(IpAddr::from(*octets)),
        Addr::Host(_) => None,
    }
}
