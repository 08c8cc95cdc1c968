//! The backend's copy of each datacenter, built from the watch bodies and the per-service
//! health reads, and the bookkeeping that turns one change into the smallest snapshot update:
//! which services (and `.connect` names) must be rebuilt, which nodes changed.
//!
//! Health comes from two sources kept consistent by `ModifyIndex`: the DC-wide list of
//! non-passing checks (`/v1/health/state/any?filter=Status != "passing"`, one watch) and the
//! checks inside each health entry. A check flip therefore needs no extra request: the checks
//! watch returns, the store finds the instances on that node (or with that service ID), and
//! only their services are rebuilt.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::wire::{AddressSet, Member, ServiceList, TagLists, WireCheck, WireEntry, WireIngress, WireNode, aggregate};
use crate::backend::mirror::{Mirror, Part};
use crate::catalog::model::{CatalogData, Instance, MeshKind, Node, lower};

/// A non-passing check (passing ones are not kept: they never change an answer).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Check {
    id: String,
    service_id: String,
    status: String,
    modify_index: u64,
}

/// A member's instance in [`Dc`]'s `by_node` index, hashed and compared by its service ID:
/// the index finds an ID without holding a copy of it. Always the member's own allocation.
#[derive(Debug)]
struct ById(Arc<Instance>);

impl PartialEq for ById {
    fn eq(&self, other: &ById) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that `Borrow<str>` lookups find it.
        self.0.id.as_str().hash(state);
    }
}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

/// One datacenter.
#[derive(Debug)]
pub struct Dc {
    /// Name as Consul spells it.
    pub name: String,
    set: AddressSet,
    services_list: Option<ServiceList>,
    nodes_seen: bool,
    checks_seen: bool,
    /// The initial sync has completed: changes are published incrementally from now on.
    pub live: bool,
    /// Nodes in the catalog: those of the last node list, and those its instances name (a
    /// health entry may name a node before the node list has it). A node that is neither goes.
    nodes: HashMap<String, Arc<Node>>,
    /// Node keys of the last node list.
    listed: std::collections::HashSet<String>,
    /// Node key → its `CreateIndex` in the last node list.
    created: HashMap<String, u64>,
    checks: HashMap<String, Vec<Check>>,
    /// Lower-case service name → its instances; the key is shared with `by_node`.
    services: HashMap<Arc<str>, Vec<Member>>,
    /// node → (service ID → service), to find what a node or check change touches.
    by_node: HashMap<String, HashMap<ById, Arc<str>>>,
    /// service asked for → services with a proxy for it (or itself, when connect-native).
    connect_sources: HashMap<String, BTreeSet<String>>,
    /// ingress gateway service → the services it exposes (config entries, S2.10).
    ingress: HashMap<String, BTreeSet<String>>,
    /// The instances' tag lists, shared.
    tag_lists: TagLists,
}

/// What must be rebuilt at the next publish.
#[derive(Debug, Default)]
pub struct Dirty {
    services: BTreeSet<(String, String)>,
    connect: BTreeSet<(String, String)>,
    ingress: BTreeSet<(String, String)>,
    /// Nodes added, changed or removed.
    nodes: BTreeSet<(String, String)>,
}

/// Every datacenter served.
#[derive(Debug, Default)]
pub struct Store {
    dcs: BTreeMap<String, Dc>,
    dirty: Dirty,
}

impl Store {
    /// Adds a datacenter to serve; `set` chooses LAN or WAN addresses (S3.3).
    pub fn add_dc(&mut self, name: &str, set: AddressSet) {
        self.dcs.insert(lower(name).into_owned(), Dc::new(name, set));
    }

    /// Datacenter by name.
    #[cfg(test)]
    pub fn dc(&self, name: &str) -> Option<&Dc> {
        self.dcs.get(&*lower(name))
    }

    fn dc_mut(&mut self, name: &str) -> Option<(&mut Dc, &mut Dirty)> {
        let dc = self.dcs.get_mut(&*lower(name))?;
        Some((dc, &mut self.dirty))
    }

    /// A new services list; returns the services to (re)read: first those the list shows
    /// changed (new, or new tags), then every other one. The list names services with their
    /// tags only, so an instance added to or removed from a service whose tags stay the same
    /// (a re-registration with a new address or port, one of several instances deregistered,
    /// H3.4) does not show, whatever else changed at the same index: only reading every
    /// service again finds it. The ones that visibly changed are read first, so they are
    /// answered soonest.
    pub fn apply_services(&mut self, dc: &str, list: ServiceList) -> (Vec<String>, Vec<String>) {
        let Some((dc, dirty)) = self.dc_mut(dc) else { return (Vec::new(), Vec::new()) };
        let list: ServiceList =
            list.into_iter().filter(|(name, _)| crate::catalog::model::is_dns_label(name)).collect();
        let changed = |name: &String, tags| dc.services_list.as_ref().is_none_or(|old| old.get(name) != Some(tags));
        let (first, rest): (Vec<_>, Vec<_>) = list.iter().partition(|(name, tags)| changed(name, *tags));
        let fetch =
            (first.into_iter().map(|(n, _)| n.clone()).collect(), rest.into_iter().map(|(n, _)| n.clone()).collect());
        let listed: std::collections::HashSet<String> = list.keys().map(|name| lower(name).into_owned()).collect();
        let gone: Vec<Arc<str>> = dc.services.keys().filter(|key| !listed.contains(&***key)).cloned().collect();
        for key in gone {
            dc.replace_members(&key, Vec::new(), dirty);
        }
        dc.services_list = Some(list);
        dc.tag_lists.prune();
        fetch
    }

    /// A new node list (H5.5); returns the entries DNS cannot carry, and the services to read
    /// again. Nodes still referenced by instances stay until their instances go; the services
    /// with instances on a node that left the list are read again, because a node's
    /// deregistration takes its instances with it and the services list need not show it (a
    /// service keeps its name and tags while other instances remain).
    pub fn apply_nodes(&mut self, dc: &str, nodes: Vec<WireNode>) -> (Vec<String>, Vec<String>) {
        let Some((dc, dirty)) = self.dc_mut(dc) else { return (Vec::new(), Vec::new()) };
        dc.nodes_seen = true;
        let mut skipped = Vec::new();
        let mut next: HashMap<String, Arc<Node>> = HashMap::with_capacity(nodes.len());
        let mut reread: BTreeSet<String> = BTreeSet::new();
        let mut created = HashMap::with_capacity(nodes.len());
        for wire in nodes {
            let key = lower(&wire.name).into_owned();
            if dc.created.get(&key).is_some_and(|&before| before != wire.create_index) {
                // Deregistered and registered again between two reads: its instances went too.
                reread.extend(dc.by_node.get(&key).into_iter().flat_map(|ids| ids.values().map(|s| s.to_string())));
            }
            created.insert(key, wire.create_index);
            match wire.to_model(&dc.name, dc.set) {
                Ok(node) => {
                    let key = lower(&node.name).into_owned();
                    // An unchanged node keeps its allocation, which the mirror shares.
                    let node = match dc.nodes.get(&key) {
                        Some(held) if **held == node => Arc::clone(held),
                        _ => Arc::new(node),
                    };
                    next.insert(key, node);
                }
                Err(reason) => skipped.push(reason),
            }
        }
        dc.created = created;
        for (key, node) in &next {
            if dc.nodes.get(key).is_none_or(|held| !Arc::ptr_eq(held, node)) {
                dc.node_changed(key, dirty);
            }
        }
        let unlisted: Vec<String> = dc.listed.iter().filter(|k| !next.contains_key(*k)).cloned().collect();
        for key in &unlisted {
            reread.extend(dc.by_node.get(key).into_iter().flat_map(|ids| ids.values().map(|s| s.to_string())));
        }
        dc.listed = next.keys().cloned().collect();
        let removed: Vec<String> = dc.nodes.keys().filter(|k| !next.contains_key(*k)).cloned().collect();
        for key in removed {
            if dc.by_node.get(&key).is_some_and(|ids| !ids.is_empty()) {
                next.insert(key.clone(), Arc::clone(&dc.nodes[&key]));
            } else {
                dirty.nodes.insert((dc.key(), key));
            }
        }
        dc.nodes = next;
        (skipped, reread.into_iter().collect())
    }

    /// A new list of non-passing checks (H5.4), read at `index`.
    pub fn apply_checks(&mut self, dc: &str, checks: Vec<WireCheck>, index: u64) {
        let Some((dc, dirty)) = self.dc_mut(dc) else { return };
        dc.checks_seen = true;
        let mut next: HashMap<String, Vec<Check>> = HashMap::new();
        for wire in checks.into_iter().filter(|c| c.status != "passing") {
            next.entry(lower(&wire.node).into_owned()).or_default().push(Check {
                id: wire.check_id,
                service_id: wire.service_id,
                status: wire.status,
                modify_index: wire.modify_index,
            });
        }
        // A check read later through a health entry is newer than this list: keep it.
        for (node, old) in &dc.checks {
            for check in old.iter().filter(|c| c.modify_index > index) {
                let list = next.entry(node.clone()).or_default();
                list.retain(|c| c.id != check.id);
                list.push(check.clone());
            }
        }
        for list in next.values_mut() {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let nodes: BTreeSet<&String> = dc.checks.keys().chain(next.keys()).collect();
        let mut touched = Vec::new();
        for node in nodes {
            let (old, new) = (dc.checks.get(node), next.get(node));
            if old != new {
                touched.push((node.clone(), changed_service_ids(old, new)));
            }
        }
        dc.checks = next;
        for (node, ids) in touched {
            dc.checks_touched(&node, ids, dirty);
        }
    }

    /// The ingress gateways' config entries: which services each gateway exposes (S2.10).
    pub fn apply_ingress(&mut self, dc: &str, entries: &[WireIngress]) {
        let Some((dc, dirty)) = self.dc_mut(dc) else { return };
        let mut next: HashMap<String, BTreeSet<String>> = HashMap::new();
        for entry in entries {
            let exposed = next.entry(lower(&entry.name).into_owned()).or_default();
            exposed.extend(entry.services().map(|s| lower(s).into_owned()));
        }
        let gateways: BTreeSet<&String> = dc.ingress.keys().chain(next.keys()).collect();
        for gateway in gateways {
            let (old, new) = (dc.ingress.get(gateway), next.get(gateway));
            if old != new {
                for service in old.into_iter().flatten().chain(new.into_iter().flatten()) {
                    dirty.ingress.insert((dc.key(), service.clone()));
                }
            }
        }
        dc.ingress = next;
    }

    /// The health entries of one service (H5.2); returns the entries DNS cannot carry.
    pub fn apply_health(&mut self, dc: &str, service: &str, entries: Vec<WireEntry>) -> Vec<String> {
        let Some((dc, dirty)) = self.dc_mut(dc) else { return Vec::new() };
        let mut skipped = Vec::new();
        let mut members = Vec::with_capacity(entries.len());
        for entry in entries {
            let node_key = lower(&entry.node.name).into_owned();
            if !dc.nodes.contains_key(&node_key) {
                match entry.node.to_model(&dc.name, dc.set) {
                    Ok(node) => {
                        dc.nodes.insert(node_key.clone(), Arc::new(node));
                        dc.node_changed(&node_key, dirty);
                    }
                    Err(reason) => {
                        skipped.push(reason);
                        continue;
                    }
                }
            }
            for check in entry.checks.iter().flatten() {
                dc.merge_check(check, dirty);
            }
            match Member::from_entry(&entry, &dc.name, dc.set, &mut dc.tag_lists) {
                Ok(member) => members.push(member),
                Err(reason) => skipped.push(reason),
            }
        }
        dc.replace_members(&lower(service), members, dirty);
        skipped
    }

    /// Marks datacenter `name` live if its initial sync is complete (`fetching` = reads still
    /// outstanding there); true when it just became live.
    pub fn try_go_live(&mut self, name: &str, fetching: bool) -> bool {
        let Some(dc) = self.dcs.get_mut(&*lower(name)) else { return false };
        if dc.live || fetching || dc.services_list.is_none() || !dc.nodes_seen || !dc.checks_seen {
            return false;
        }
        dc.live = true;
        true
    }

    /// Has every datacenter synced?
    pub fn all_live(&self) -> bool {
        self.dcs.values().all(|dc| dc.live)
    }

    /// Recomputes the health of every instance whose service is dirty (S4.1).
    pub fn refresh_health(&mut self) {
        for (dc_key, service) in &self.dirty.services {
            if let Some(dc) = self.dcs.get_mut(dc_key.as_str()) {
                dc.refresh_health(service);
            }
        }
    }

    /// Recomputes health, takes what is dirty and names its services (`.connect`/`.ingress` for
    /// mesh names), services first, each kind sorted.
    #[cfg(test)]
    pub(crate) fn dirty_service_names(&mut self) -> Vec<String> {
        self.refresh_health();
        let dirty = std::mem::take(&mut self.dirty);
        let names = |set: &BTreeSet<(String, String)>, suffix: &str| {
            set.iter().map(|(_, name)| format!("{name}{suffix}")).collect::<Vec<_>>()
        };
        [names(&dirty.services, ""), names(&dirty.connect, ".connect"), names(&dirty.ingress, ".ingress")].concat()
    }

    /// Datacenter `dc` (lower-case key) with its name, if it is served: the store's own nodes
    /// and instances, shared (not copied) with whoever keeps them.
    pub(crate) fn dc_data(&mut self, dc: &str) -> Option<(String, Part)> {
        let d = self.dcs.get(dc)?;
        Some((d.name.clone(), d.export()))
    }

    /// Datacenter `dc` (lower-case key) as plain data (a copy), if it is served.
    pub(crate) fn dc_catalog(&mut self, dc: &str) -> Option<CatalogData> {
        Some(self.dc_data(dc)?.1.into_data())
    }

    /// Hands what changed in live datacenters to `mirror` (health recomputed first); changes
    /// in datacenters still syncing are dropped: they reach the mirror whole when they go live.
    pub(crate) fn export_changes(&mut self, mirror: &mut Mirror) {
        self.refresh_health();
        let dirty = std::mem::take(&mut self.dirty);
        let live = |dc: &str| self.dcs.get(dc).filter(|d| d.live);
        for (dc, key) in &dirty.nodes {
            let Some(d) = live(dc) else { continue };
            match d.nodes.get(key) {
                Some(node) => mirror.set_node(Arc::clone(node)),
                None => mirror.remove_node(&d.name, key),
            }
        }
        for (dc, key) in &dirty.services {
            if let Some(d) = live(dc) {
                let instances = d
                    .services
                    .get(key.as_str())
                    .map_or_else(Vec::new, |m| m.iter().map(|m| Arc::clone(&m.instance)).collect());
                mirror.set_service(&d.name, None, key, instances);
            }
        }
        for (kind, set) in [(MeshKind::Connect, &dirty.connect), (MeshKind::Ingress, &dirty.ingress)] {
            for (dc, key) in set {
                if let Some(d) = live(dc) {
                    let instances = d.mesh_endpoints(kind, key).into_iter().cloned().collect();
                    mirror.set_service(&d.name, Some(kind), key, instances);
                }
            }
        }
    }
}

/// Service IDs whose non-passing checks differ between two lists of one node; `""` (a node
/// check) means every instance on the node.
fn changed_service_ids(old: Option<&Vec<Check>>, new: Option<&Vec<Check>>) -> BTreeSet<String> {
    let empty = Vec::new();
    let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let mut ids = BTreeSet::new();
    for check in old.iter().filter(|c| !new.contains(c)).chain(new.iter().filter(|c| !old.contains(c))) {
        ids.insert(check.service_id.clone());
    }
    ids
}

impl Dc {
    fn new(name: &str, set: AddressSet) -> Dc {
        Dc {
            name: name.to_owned(),
            set,
            services_list: None,
            nodes_seen: false,
            checks_seen: false,
            live: false,
            nodes: HashMap::new(),
            listed: Default::default(),
            created: HashMap::new(),
            checks: HashMap::new(),
            services: HashMap::new(),
            by_node: HashMap::new(),
            connect_sources: HashMap::new(),
            ingress: HashMap::new(),
            tag_lists: TagLists::default(),
        }
    }

    fn key(&self) -> String {
        lower(&self.name).into_owned()
    }

    fn mark_service(&self, key: &str, dirty: &mut Dirty) {
        let dc = self.key();
        dirty.services.insert((dc.clone(), key.to_owned()));
        for member in self.services.get(key).into_iter().flatten() {
            if let Some(dest) = &member.proxy_for {
                dirty.connect.insert((dc.clone(), lower(dest).into_owned()));
            }
            if member.native {
                dirty.connect.insert((dc.clone(), key.to_owned()));
            }
        }
        for exposed in self.ingress.get(key).into_iter().flatten() {
            dirty.ingress.insert((dc.clone(), exposed.clone()));
        }
    }

    fn node_changed(&self, node: &str, dirty: &mut Dirty) {
        dirty.nodes.insert((self.key(), node.to_owned()));
        let services: BTreeSet<&str> =
            self.by_node.get(node).into_iter().flat_map(|ids| ids.values().map(|s| &**s)).collect();
        for service in services {
            self.mark_service(service, dirty);
        }
    }

    fn checks_touched(&self, node: &str, ids: BTreeSet<String>, dirty: &mut Dirty) {
        let Some(on_node) = self.by_node.get(node) else { return };
        let services: BTreeSet<&str> = if ids.contains("") {
            on_node.values().map(|s| &**s).collect()
        } else {
            ids.iter().filter_map(|id| on_node.get(id.as_str())).map(|s| &**s).collect()
        };
        for service in services {
            self.mark_service(service, dirty);
        }
    }

    fn merge_check(&mut self, wire: &WireCheck, dirty: &mut Dirty) {
        let node = lower(&wire.node).into_owned();
        let list = self.checks.entry(node.clone()).or_default();
        let existing = list.iter().position(|c| c.id == wire.check_id);
        if existing.is_some_and(|at| list[at].modify_index > wire.modify_index) {
            return;
        }
        let before = existing.map(|at| list[at].clone());
        if let Some(at) = existing {
            list.remove(at);
        }
        if wire.status != "passing" {
            list.push(Check {
                id: wire.check_id.clone(),
                service_id: wire.service_id.clone(),
                status: wire.status.clone(),
                modify_index: wire.modify_index,
            });
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        if list.is_empty() {
            self.checks.remove(&node);
        }
        let was = before.as_ref().map_or("passing", |c| c.status.as_str());
        if was != wire.status {
            self.checks_touched(&node, BTreeSet::from([wire.service_id.clone()]), dirty);
        }
    }

    fn replace_members(&mut self, key: &str, members: Vec<Member>, dirty: &mut Dirty) {
        let members = last_copy_of_each(members);
        if self.services.get(key).is_some_and(|old| *old == members) {
            return;
        }
        self.take_over(key, &members, dirty);
        self.mark_service(key, dirty);
        let (key, old): (Arc<str>, Vec<Member>) = match self.services.remove_entry(key) {
            Some(held) => held,
            None => (Arc::from(key), Vec::new()),
        };
        for member in &old {
            self.unindex(&key, member);
        }
        for member in &members {
            self.index(&key, member);
        }
        for node in old.iter().filter_map(|m| m.instance.node.as_deref()) {
            self.drop_if_unreferenced(&lower(node), dirty);
        }
        if !members.is_empty() {
            self.services.insert(Arc::clone(&key), members);
            self.refresh_health(&key);
        }
        self.mark_service(&key, dirty);
    }

    /// Consul keeps one registration per service ID on a node: a member read for `key` that
    /// another service still holds (the ID was registered again under a new name, and the old
    /// service has not been read since) leaves that service now, so no moment's catalog holds
    /// the instance twice.
    fn take_over(&mut self, key: &str, members: &[Member], dirty: &mut Dirty) {
        let moved: Vec<(Arc<str>, String, String)> = members
            .iter()
            .filter_map(|m| {
                let node = lower(m.instance.node.as_deref()?).into_owned();
                let holder = self.by_node.get(&node)?.get(m.instance.id.as_str())?;
                (**holder != *key).then(|| (Arc::clone(holder), node, m.instance.id.clone()))
            })
            .collect();
        for (holder, node, id) in moved {
            self.mark_service(&holder, dirty);
            let Some(held) = self.services.get_mut(&holder) else { continue };
            let Some(at) = held
                .iter()
                .position(|m| m.instance.id == id && m.instance.node.as_deref().is_some_and(|n| lower(n) == node))
            else {
                continue;
            };
            let member = held.remove(at);
            if held.is_empty() {
                self.services.remove(&holder);
            }
            self.unindex(&holder, &member);
            self.refresh_health(&holder);
            self.mark_service(&holder, dirty);
        }
    }

    fn index(&mut self, key: &Arc<str>, member: &Member) {
        if let Some(node) = &member.instance.node {
            let ids = self.by_node.entry(lower(node).into_owned()).or_default();
            // `insert` would keep the old key, and with it an outdated instance.
            ids.remove(member.instance.id.as_str());
            ids.insert(ById(Arc::clone(&member.instance)), Arc::clone(key));
        }
        if let Some(dest) = &member.proxy_for {
            self.connect_sources.entry(lower(dest).into_owned()).or_default().insert(key.to_string());
        }
        if member.native {
            self.connect_sources.entry(key.to_string()).or_default().insert(key.to_string());
        }
    }

    /// A node the node list no longer has goes with its last instance.
    fn drop_if_unreferenced(&mut self, node: &str, dirty: &mut Dirty) {
        if !self.listed.contains(node) && !self.by_node.contains_key(node) && self.nodes.remove(node).is_some() {
            dirty.nodes.insert((self.key(), node.to_owned()));
        }
    }

    fn unindex(&mut self, key: &str, member: &Member) {
        if let Some(node) = &member.instance.node {
            let node = lower(node);
            if let Some(ids) = self.by_node.get_mut(&*node) {
                ids.remove(member.instance.id.as_str());
                if ids.is_empty() {
                    self.by_node.remove(&*node);
                }
            }
        }
        let dests = member.proxy_for.iter().map(|d| lower(d).into_owned()).chain(member.native.then(|| key.to_owned()));
        for dest in dests {
            if let Some(sources) = self.connect_sources.get_mut(&dest) {
                sources.remove(key);
                if sources.is_empty() {
                    self.connect_sources.remove(&dest);
                }
            }
        }
    }

    /// Recomputes the health of `key`'s members; an instance whose health stays keeps its
    /// allocation (shared with the mirror), one whose health changes is copied and `by_node`
    /// moves to the copy.
    fn refresh_health(&mut self, key: &str) {
        let Dc { services, checks, by_node, .. } = self;
        let Some(members) = services.get_mut(key) else { return };
        for member in members {
            let health = {
                let node = member.instance.node.as_deref().map(lower).unwrap_or_default();
                let id = &member.instance.id;
                let node_checks = checks.get(&*node).into_iter().flatten();
                aggregate(
                    node_checks.filter(|c| c.service_id.is_empty() || c.service_id == *id).map(|c| c.status.as_str()),
                )
            };
            if member.instance.health == health {
                continue;
            }
            Arc::make_mut(&mut member.instance).health = health;
            let node = member.instance.node.as_deref().map(lower);
            if let Some(ids) = node.and_then(|node| by_node.get_mut(&*node))
                && let Some(service) = ids.remove(member.instance.id.as_str())
            {
                ids.insert(ById(Arc::clone(&member.instance)), service);
            }
        }
    }

    /// S2.10: the instances answering `<key>.connect` or `<key>.ingress`.
    fn mesh_endpoints(&self, kind: MeshKind, key: &str) -> Vec<&Arc<Instance>> {
        match kind {
            MeshKind::Connect => self.connect_endpoints(key),
            MeshKind::Ingress => self
                .ingress
                .iter()
                .filter(|(_, exposed)| exposed.contains(key))
                .flat_map(|(gateway, _)| self.services.get(gateway.as_str()).into_iter().flatten())
                .map(|m| &m.instance)
                .collect(),
        }
    }

    /// Every mesh endpoint of this datacenter: which name, the service asked for, the instance.
    fn mesh(&self) -> Vec<(MeshKind, String, Arc<Instance>)> {
        let exposed: BTreeSet<&String> = self.ingress.values().flatten().collect();
        let names = self
            .connect_sources
            .keys()
            .map(|k| (MeshKind::Connect, k))
            .chain(exposed.into_iter().map(|k| (MeshKind::Ingress, k)));
        names
            .flat_map(|(kind, key)| {
                self.mesh_endpoints(kind, key).into_iter().map(move |i| (kind, key.clone(), Arc::clone(i)))
            })
            .collect()
    }

    /// S2.10: proxies for `key`, and its own instances when they are connect-native.
    fn connect_endpoints(&self, key: &str) -> Vec<&Arc<Instance>> {
        let sources = self.connect_sources.get(key).into_iter().flatten();
        sources
            .flat_map(|source| self.services.get(source.as_str()).into_iter().flatten())
            .filter(|m| {
                m.proxy_for.as_deref().is_some_and(|d| lower(d) == key)
                    || (m.native && lower(&m.instance.service) == key)
            })
            .map(|m| &m.instance)
            .collect()
    }

    /// This datacenter's nodes and instances, shared.
    fn export(&self) -> Part {
        Part {
            nodes: self.nodes.values().cloned().collect(),
            instances: self.services.values().flatten().map(|m| Arc::clone(&m.instance)).collect(),
            mesh: self.mesh(),
        }
    }
}

/// `members` with each (node, service ID) once, its last copy kept, in read order.
fn last_copy_of_each(members: Vec<Member>) -> Vec<Member> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Member> = members
        .into_iter()
        .rev()
        .filter(|m| seen.insert((m.instance.node.as_deref().map(|n| lower(n).into_owned()), m.instance.id.clone())))
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests;
