//! The catalog as the running source last described it, per datacenter, and what changed since
//! the last publish: the input of both the full build ([`Mirror::data`]) and the incremental
//! one ([`Mirror::update`]).
//!
//! A source changes the mirror in whatever grain it sees (a whole catalog with
//! [`Mirror::replace`], one datacenter, one node, one service); the mirror compares each change
//! with what it holds and records only real differences, plus the consequences the snapshot
//! relies on: a changed or removed node dirties every service (and mesh name) with an instance
//! on it, because prepared instances hold their node's records. Invariant: a snapshot built
//! from [`Mirror::data`] and one reached by applying every [`Mirror::update`] since answer
//! alike (checked by the randomized oracle in `tests`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::catalog::model::{CatalogData, Instance, MeshEndpoint, MeshKind, Node, lower};
use crate::catalog::snapshot::{ServiceUpdate, Update};

/// `(mesh kind or none, lower-case service name)`: one answerable service name. The name is
/// one allocation shared by every map that holds the key.
type ServiceKey = (Option<MeshKind>, Arc<str>);

/// What must be rebuilt at the next publish.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    /// `(dc key, service key)`.
    services: HashSet<(String, ServiceKey)>,
    /// `(dc key, node key)` → the datacenter's and node's names as stored, for removals.
    nodes: BTreeMap<(String, String), (String, String)>,
}

impl Dirty {
    /// Nothing to publish?
    pub(crate) fn is_empty(&self) -> bool {
        self.services.is_empty() && self.nodes.is_empty()
    }
}

/// One service name with instances on a node, and how many.
#[derive(Debug)]
struct OnNode {
    name: Arc<str>,
    count: u32,
    mesh: Option<MeshKind>,
}

/// One datacenter.
#[derive(Debug, Default)]
struct DcMirror {
    name: String,
    nodes: HashMap<String, Arc<Node>>,
    services: HashMap<ServiceKey, Vec<Arc<Instance>>>,
    /// node key → the service names with an instance on it.
    on_node: HashMap<String, Vec<OnNode>>,
}

/// Every datacenter the source described, and what changed.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    dcs: BTreeMap<String, DcMirror>,
    dirty: Dirty,
}

/// One datacenter's catalog as shared pieces, for [`Mirror::replace_datacenter`]: a source that
/// keeps its own copy hands over the same allocations instead of clones.
#[derive(Debug, Default)]
pub(crate) struct Part {
    /// Every node.
    pub(crate) nodes: Vec<Arc<Node>>,
    /// Every instance.
    pub(crate) instances: Vec<Arc<Instance>>,
    /// Mesh endpoints: which name, the service asked for, the instance answering.
    pub(crate) mesh: Vec<(MeshKind, String, Arc<Instance>)>,
}

impl From<CatalogData> for Part {
    fn from(data: CatalogData) -> Part {
        Part {
            nodes: data.nodes.into_iter().map(Arc::new).collect(),
            instances: data.instances.into_iter().map(Arc::new).collect(),
            mesh: data.mesh.into_iter().map(|e| (e.kind, e.service, Arc::new(e.instance))).collect(),
        }
    }
}

impl Part {
    /// The plain catalog (clones every entry).
    pub(crate) fn into_data(self) -> CatalogData {
        CatalogData {
            nodes: self.nodes.iter().map(|node| (**node).clone()).collect(),
            instances: self.instances.iter().map(|inst| (**inst).clone()).collect(),
            mesh: self
                .mesh
                .into_iter()
                .map(|(kind, service, inst)| MeshEndpoint { kind, service, instance: (*inst).clone() })
                .collect(),
        }
    }
}

impl Mirror {
    /// A mirror holding `data`, nothing dirty (it describes what is already served).
    pub(crate) fn seeded(data: CatalogData) -> Mirror {
        let mut mirror = Mirror::default();
        mirror.replace(data);
        mirror.dirty = Dirty::default();
        mirror
    }

    /// Anything changed since the last [`Mirror::take_dirty`]?
    pub(crate) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Takes what changed, for [`Mirror::update`].
    pub(crate) fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    /// The datacenters held, as first spelled.
    pub(crate) fn datacenter_names(&self) -> Vec<String> {
        self.dcs.values().map(|d| d.name.clone()).collect()
    }

    /// The whole catalog becomes `data`: every datacenter it does not name is removed.
    pub(crate) fn replace(&mut self, data: CatalogData) {
        let mut parts = split_by_datacenter(data);
        let gone: Vec<String> = self.dcs.keys().filter(|k| !parts.contains_key(*k)).cloned().collect();
        for key in gone {
            self.remove_datacenter(&key);
        }
        for (_, part) in std::mem::take(&mut parts) {
            self.replace_datacenter(part.0, part.1);
        }
    }

    /// Datacenter `dc` becomes `data` (whose entries all belong to it).
    pub(crate) fn replace_datacenter(&mut self, dc: String, data: impl Into<Part>) {
        let data: Part = data.into();
        let key = lower(&dc).into_owned();
        let new_nodes: HashSet<String> = data.nodes.iter().map(|n| lower(&n.name).into_owned()).collect();
        let old_nodes: Vec<String> = self.dcs.get(&key).map_or_else(Vec::new, |d| d.nodes.keys().cloned().collect());
        let mut services: HashMap<(Option<MeshKind>, String), Vec<Arc<Instance>>> = HashMap::new();
        for inst in data.instances {
            services.entry((None, lower(&inst.service).into_owned())).or_default().push(inst);
        }
        for (kind, service, instance) in data.mesh {
            services.entry((Some(kind), lower(&service).into_owned())).or_default().push(instance);
        }
        let old_services: Vec<ServiceKey> =
            self.dcs.get(&key).map_or_else(Vec::new, |d| d.services.keys().cloned().collect());
        for node in data.nodes {
            self.set_node(node);
        }
        for (service_key, instances) in services.iter_mut() {
            let list = std::mem::take(instances);
            self.set_service(&dc, service_key.0, &service_key.1, list);
        }
        for old in old_services.into_iter().filter(|(mesh, name)| !services.contains_key(&(*mesh, name.to_string()))) {
            self.set_service(&dc, old.0, &old.1, Vec::new());
        }
        for old in old_nodes.into_iter().filter(|k| !new_nodes.contains(k)) {
            self.remove_node(&dc, &old);
        }
        if let Some(d) = self.dcs.get_mut(&key) {
            d.name = dc;
            // Filled one instance at a time: give back what the vectors grew beyond that.
            d.on_node.values_mut().for_each(Vec::shrink_to_fit);
        }
    }

    /// Removes datacenter `dc` and everything in it.
    pub(crate) fn remove_datacenter(&mut self, dc: &str) {
        let key = lower(dc).into_owned();
        let Some(d) = self.dcs.get(&key) else { return };
        let name = d.name.clone();
        let services: Vec<ServiceKey> = d.services.keys().cloned().collect();
        let nodes: Vec<String> = d.nodes.keys().cloned().collect();
        for service in services {
            self.set_service(&name, service.0, &service.1, Vec::new());
        }
        for node in nodes {
            self.remove_node(&name, &node);
        }
        self.dcs.remove(&key);
    }

    fn dc_entry(&mut self, dc: &str) -> &mut DcMirror {
        self.dcs
            .entry(lower(dc).into_owned())
            .or_insert_with(|| DcMirror { name: dc.to_owned(), ..DcMirror::default() })
    }

    /// Adds or changes a node (a no-op when it is unchanged, except that the mirror then
    /// keeps `node`'s allocation, shared with the source).
    pub(crate) fn set_node(&mut self, node: Arc<Node>) {
        let node_key = lower(&node.name).into_owned();
        let dc = self.dc_entry(&node.datacenter);
        if let Some(held) = dc.nodes.get_mut(&node_key)
            && **held == *node
        {
            *held = node;
            return;
        }
        let (dc_name, node_name) = (dc.name.clone(), node.name.clone());
        dc.nodes.insert(node_key.clone(), node);
        self.node_dirty(&dc_name, &node_key, node_name);
    }

    /// Removes a node (a no-op when it is not there). Its instances should go too.
    pub(crate) fn remove_node(&mut self, dc: &str, name: &str) {
        let node_key = lower(name).into_owned();
        let Some(d) = self.dcs.get_mut(&*lower(dc)) else { return };
        let Some(node) = d.nodes.remove(&node_key) else { return };
        let dc_name = d.name.clone();
        self.node_dirty(&dc_name, &node_key, node.name.clone());
    }

    fn node_dirty(&mut self, dc: &str, node_key: &str, node_name: String) {
        let dc_key = lower(dc).into_owned();
        let d = &self.dcs[&dc_key];
        for on in d.on_node.get(node_key).into_iter().flatten() {
            self.dirty.services.insert((dc_key.clone(), (on.mesh, Arc::clone(&on.name))));
        }
        self.dirty.nodes.insert((dc_key, node_key.to_owned()), (d.name.clone(), node_name));
    }

    /// Sets the instances answering one service name (`mesh`: its `.connect` or `.ingress`
    /// endpoints); empty removes it. A no-op when nothing differs, except that the mirror then
    /// keeps `instances`' allocations, shared with the source.
    pub(crate) fn set_service(&mut self, dc: &str, mesh: Option<MeshKind>, name: &str, instances: Vec<Arc<Instance>>) {
        let lowered = lower(name);
        let d = self.dc_entry(dc);
        let probe: ServiceKey = (mesh, Arc::from(&*lowered));
        let (service_key, held) = match d.services.get_key_value(&probe) {
            Some((key, _)) => (key.clone(), true),
            None => (probe, false),
        };
        if let Some(old) = d.services.get_mut(&service_key)
            && *old == instances
        {
            *old = instances;
            return;
        }
        if !held && instances.is_empty() {
            return;
        }
        let old = d.services.remove(&service_key).unwrap_or_default();
        for inst in &old {
            d.count_on_node(inst, &service_key, false);
        }
        for inst in &instances {
            d.count_on_node(inst, &service_key, true);
        }
        if !instances.is_empty() {
            d.services.insert(service_key.clone(), instances);
        }
        let dc_key = lower(dc).into_owned();
        self.dirty.services.insert((dc_key, service_key));
    }

    /// The snapshot update for `dirty`.
    pub(crate) fn update<'s>(&'s self, dirty: &'s Dirty) -> Update<'s> {
        let mut update = Update::default();
        for ((dc_key, node_key), (dc_name, node_name)) in &dirty.nodes {
            match self.dcs.get(dc_key).and_then(|d| d.nodes.get(node_key)) {
                Some(node) => update.nodes.push(node),
                None => update.removed_nodes.push((dc_name, node_name)),
            }
        }
        for (dc_key, key) in &dirty.services {
            let (mesh, name) = (key.0, &*key.1);
            let Some(d) = self.dcs.get(dc_key) else {
                // The whole datacenter went: its services go with it (named by the dirty key).
                update.services.push(ServiceUpdate { datacenter: dc_key, name, mesh, instances: Vec::new() });
                continue;
            };
            let instances = d.services.get(key).map_or_else(Vec::new, |list| list.iter().map(|inst| &**inst).collect());
            update.services.push(ServiceUpdate { datacenter: &d.name, name, mesh, instances });
        }
        update
    }

    /// The whole catalog as plain data (clones every entry).
    #[cfg(test)]
    pub(crate) fn data(&self) -> CatalogData {
        self.shared().into_data()
    }

    /// The catalog as shared pieces: cheap to take on an async task, turned into
    /// [`CatalogData`] off it.
    pub(crate) fn shared(&self) -> Shared {
        let mut shared = Shared::default();
        for d in self.dcs.values() {
            shared.nodes.extend(d.nodes.values().cloned());
            for ((mesh, name), list) in &d.services {
                shared.instances.extend(list.iter().map(|inst| (*mesh, Arc::clone(name), Arc::clone(inst))));
            }
        }
        shared
    }
}

impl DcMirror {
    fn count_on_node(&mut self, inst: &Instance, service: &ServiceKey, add: bool) {
        let Some(node) = &inst.node else { return };
        let node_key = lower(node);
        let Some(services) = self.on_node.get_mut(&*node_key) else {
            if add {
                let on = OnNode { name: Arc::clone(&service.1), count: 1, mesh: service.0 };
                self.on_node.insert(node_key.into_owned(), vec![on]);
            }
            return;
        };
        let at = services.iter().position(|on| on.mesh == service.0 && on.name == service.1);
        match (at, add) {
            (Some(at), true) => services[at].count += 1,
            (None, true) => services.push(OnNode { name: Arc::clone(&service.1), count: 1, mesh: service.0 }),
            (Some(at), false) => {
                services[at].count -= 1;
                if services[at].count == 0 {
                    services.swap_remove(at);
                    if services.is_empty() {
                        self.on_node.remove(&*node_key);
                    }
                }
            }
            (None, false) => {}
        }
    }
}

/// The catalog as shared pieces, see [`Mirror::shared`].
#[derive(Debug, Default)]
pub(crate) struct Shared {
    nodes: Vec<Arc<Node>>,
    instances: Vec<(Option<MeshKind>, Arc<str>, Arc<Instance>)>,
}

impl Shared {
    /// The plain catalog (clones every entry: run it off the async runtime).
    pub(crate) fn into_data(self) -> CatalogData {
        let nodes = self.nodes.iter().map(|node| (**node).clone()).collect();
        let mut data = CatalogData { nodes, ..CatalogData::default() };
        for (mesh, service, inst) in self.instances {
            match mesh {
                None => data.instances.push((*inst).clone()),
                Some(kind) => {
                    data.mesh.push(MeshEndpoint { kind, service: service.to_string(), instance: (*inst).clone() })
                }
            }
        }
        data
    }
}

/// `data` split per datacenter (by lower-case name), each with its name as first spelled.
fn split_by_datacenter(data: CatalogData) -> BTreeMap<String, (String, CatalogData)> {
    fn part<'p>(parts: &'p mut BTreeMap<String, (String, CatalogData)>, dc: &str) -> &'p mut CatalogData {
        &mut parts.entry(lower(dc).into_owned()).or_insert_with(|| (dc.to_owned(), CatalogData::default())).1
    }
    let mut parts = BTreeMap::new();
    for node in data.nodes {
        let dc = node.datacenter.clone();
        part(&mut parts, &dc).nodes.push(node);
    }
    for inst in data.instances {
        let dc = inst.datacenter.clone();
        part(&mut parts, &dc).instances.push(inst);
    }
    for endpoint in data.mesh {
        let dc = endpoint.instance.datacenter.clone();
        part(&mut parts, &dc).mesh.push(endpoint);
    }
    parts
}

#[cfg(test)]
mod tests;
