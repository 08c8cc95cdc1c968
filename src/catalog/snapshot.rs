//! An immutable, indexed, ready-to-answer view of the catalog.
//!
//! [`Snapshot::build`] turns [`CatalogData`] into per-datacenter maps keyed by the lower-case
//! names DNS asks for: nodes prepared once and shared, services as arrays of compact
//! [`PreparedInstance`]s (eligible only, S4.1) with duplicate and tag bits worked out, so the
//! answer path does one hash lookup and a pass over a small array. Services, nodes and
//! datacenters sit behind `Arc`s so a later build can share what did not change.
//!
//! Memory (the 100,000 × 3 benchmark catalog): about 48 bytes per instance plus one shared
//! record per node and one small allocation per service and per distinct tag set.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::catalog::model::{CatalogData, Instance, MeshKind, Node, lower};
use crate::catalog::records::{Addr, FAMILIES, Family, NodeRecords, PreparedInstance, flags, relative};
use crate::catalog::reverse::ReverseMap;
use crate::config::{Config, TtlTable};

pub use crate::catalog::reverse::Pointer;

/// Hash map with a fast, seeded hasher: the query path hashes every question.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The settings a snapshot bakes into its records. A change rebuilds the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// The local datacenter: answers for names without a DC (S2.5), NS set, reverse map.
    pub datacenter: String,
    /// TTL of node, `.addr.` and NS records (S6.1).
    pub node_ttl: u32,
    /// TTL of service records (S6.2).
    pub service_ttl: TtlTable,
    /// Answer only instances whose checks all pass (S4.1).
    pub only_passing: bool,
    /// Add node meta as TXT to SRV additional sections (S3.5).
    pub node_meta_txt: bool,
}

impl BuildOptions {
    /// What the snapshot builder bakes in, from the configuration.
    pub fn from_config(config: &Config) -> BuildOptions {
        BuildOptions {
            datacenter: config.datacenter.clone(),
            node_ttl: config.node_ttl,
            service_ttl: config.service_ttl.clone(),
            only_passing: config.only_passing,
            node_meta_txt: true,
        }
    }

    /// Options with every TTL at `ttl_secs`, warning instances answered and node meta as TXT
    /// (the daemon's defaults but for the TTLs, which the config decides).
    pub fn new(datacenter: &str, ttl_secs: u32) -> BuildOptions {
        BuildOptions {
            datacenter: datacenter.to_owned(),
            node_ttl: ttl_secs,
            service_ttl: TtlTable::new(ttl_secs),
            only_passing: false,
            node_meta_txt: true,
        }
    }
}

/// The prepared records of one service in one datacenter.
#[derive(Debug)]
pub struct ServiceRecords {
    /// TTL of every record of this service (S6.2).
    pub ttl: u32,
    /// Bit 0: every instance gives a distinct SRV record; bit `1 + f`: every instance gives a
    /// distinct IP record for family `f`. Then the whole instance list is the candidate list
    /// and the answer path skips filtering it (the usual case).
    pub uniform: u8,
    /// Eligible instances, catalog order.
    pub instances: Box<[PreparedInstance]>,
    /// Distinct tags, lower-cased; tag `i < 64` is bit `i` of an instance's `tag_bits`.
    pub tags: Box<[Arc<str>]>,
    /// `(instance, tag)` pairs for tags beyond the 64th distinct one (rare).
    pub extra_tags: Option<Box<[ExtraTag]>>,
}

impl ServiceRecords {
    /// Does instance `i` carry `tag` (lower-case)? Tag filters fold case (S2.6d).
    pub fn tag_filter(&self, tag: &[u8]) -> TagFilter<'_> {
        match self.tags.iter().position(|t| t.as_bytes() == tag) {
            Some(i) if i < 64 => TagFilter::Bit(1 << i),
            Some(_) => TagFilter::Extra(self.extra_tags.as_deref().unwrap_or_default(), tag.to_vec().into()),
            None => TagFilter::Nobody,
        }
    }
}

/// An `(instance index, tag)` pair beyond the 64 tags `tag_bits` can hold.
pub type ExtraTag = (u32, Arc<str>);

/// How to test instances for a tag.
#[derive(Debug)]
pub enum TagFilter<'a> {
    /// Instances with this bit in `tag_bits`.
    Bit(u64),
    /// Instances listed with this tag among the extra pairs.
    Extra(&'a [ExtraTag], Box<[u8]>),
    /// No instance has the tag.
    Nobody,
}

impl TagFilter<'_> {
    /// Does instance `i` pass?
    pub fn admits(&self, i: usize, inst: &PreparedInstance) -> bool {
        match self {
            TagFilter::Bit(bit) => inst.tag_bits & bit != 0,
            TagFilter::Extra(pairs, tag) => pairs.iter().any(|(at, t)| *at as usize == i && t.as_bytes() == &**tag),
            TagFilter::Nobody => false,
        }
    }
}

/// One datacenter's indexes.
#[derive(Debug, Default, Clone)]
pub struct Datacenter {
    /// Name as stored.
    pub name: Box<str>,
    /// The name as one wire label, for `.addr.` targets.
    pub label: Box<[u8]>,
    /// Lower-case service name → records. Only services with eligible instances.
    pub services: Map<Box<[u8]>, Arc<ServiceRecords>>,
    /// Lower-case node name → records.
    pub nodes: Map<Box<[u8]>, Arc<NodeRecords>>,
    /// `<service>.connect` endpoints by lower-case service name (S2.10); eligible only.
    pub connect: Map<Box<[u8]>, Arc<ServiceRecords>>,
    /// `<service>.ingress` gateways by lower-case service name (S2.10); eligible only.
    pub ingress: Map<Box<[u8]>, Arc<ServiceRecords>>,
}

impl Datacenter {
    /// Nothing to answer: a datacenter exists only while it has a node or a service.
    fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.services.is_empty() && self.connect.is_empty() && self.ingress.is_empty()
    }

    /// The records a service name answers with: its own instances (`mesh = None`), or its
    /// `.connect` / `.ingress` endpoints.
    pub fn lookup(&self, mesh: Option<MeshKind>, name: &[u8]) -> Option<&Arc<ServiceRecords>> {
        self.map(mesh).get(name)
    }

    fn map(&self, mesh: Option<MeshKind>) -> &Map<Box<[u8]>, Arc<ServiceRecords>> {
        match mesh {
            None => &self.services,
            Some(MeshKind::Connect) => &self.connect,
            Some(MeshKind::Ingress) => &self.ingress,
        }
    }

    fn map_mut(&mut self, mesh: Option<MeshKind>) -> &mut Map<Box<[u8]>, Arc<ServiceRecords>> {
        match mesh {
            None => &mut self.services,
            Some(MeshKind::Connect) => &mut self.connect,
            Some(MeshKind::Ingress) => &mut self.ingress,
        }
    }
}

/// One service's instances as they are now, for [`Snapshot::update`].
#[derive(Debug, Clone)]
pub struct ServiceUpdate<'a> {
    /// Datacenter of the service.
    pub datacenter: &'a str,
    /// The service name (for mesh entries: the name asked for, `<name>.connect`).
    pub name: &'a str,
    /// `None` for the service itself, else which mesh name these endpoints answer.
    pub mesh: Option<MeshKind>,
    /// Every instance now registered, any health; empty when the service is gone.
    pub instances: Vec<&'a Instance>,
}

/// What changed since a snapshot, for [`Snapshot::update`].
#[derive(Debug, Clone, Default)]
pub struct Update<'a> {
    /// Nodes added or changed.
    pub nodes: Vec<&'a Node>,
    /// Nodes removed: `(datacenter, name)`.
    pub removed_nodes: Vec<(&'a str, &'a str)>,
    /// Services to rebuild. Must include every service (and mesh entry) with an instance on a
    /// changed node: prepared instances hold their node's records.
    pub services: Vec<ServiceUpdate<'a>>,
}

impl Update<'_> {
    /// Nothing to do?
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.removed_nodes.is_empty() && self.services.is_empty()
    }
}

/// One name server of the NS set (S5.4).
#[derive(Debug, Clone)]
pub struct NameServer {
    /// `<node>.node.<dc>` lower-cased, as relative labels.
    pub labels: Box<[u8]>,
    /// The node's address, if it is an IP.
    pub glue: Option<Addr>,
}

/// Counts for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Services with at least one eligible instance, all datacenters.
    pub services: usize,
    /// Eligible instances.
    pub instances: usize,
    /// Nodes.
    pub nodes: usize,
}

/// The catalog as the DNS layer reads it.
#[derive(Debug)]
pub struct Snapshot {
    options: Arc<BuildOptions>,
    serial: u32,
    synced: bool,
    local_dc: Box<[u8]>,
    /// The local datacenter, also in `datacenters`: most questions name no DC, and this spares
    /// them a hash lookup.
    local: Option<Arc<Datacenter>>,
    datacenters: Map<Box<[u8]>, Arc<Datacenter>>,
    reverse: Arc<ReverseMap>,
    name_servers: Box<[NameServer]>,
    counts: Counts,
}

fn key(text: &str) -> Box<[u8]> {
    lower(text).as_bytes().into()
}

impl Snapshot {
    /// A snapshot with no data. `synced = false` makes the DNS layer answer SERVFAIL for names
    /// in the domain rather than NXDOMAIN (a Consul-only start with nothing restored).
    pub fn empty(options: Arc<BuildOptions>, synced: bool) -> Snapshot {
        let local_dc = key(&options.datacenter);
        Snapshot {
            options,
            serial: 0,
            synced,
            local_dc,
            local: None,
            datacenters: Map::default(),
            reverse: Arc::default(),
            name_servers: Box::new([]),
            counts: Counts::default(),
        }
    }

    /// Builds the indexes and prepared records. The data should have passed
    /// [`CatalogData::validate`]; instances on unknown nodes are skipped.
    pub fn build(data: &CatalogData, options: Arc<BuildOptions>) -> Snapshot {
        let mut snapshot = Snapshot::empty(options, true);
        let mut dcs: Map<Cow<'_, str>, Datacenter> = Map::default();
        // Each datacenter's node table made its final size at once, not grown by rehashing.
        let mut node_counts: Map<Cow<'_, str>, usize> = Map::default();
        for node in &data.nodes {
            *node_counts.entry(lower(&node.datacenter)).or_default() += 1;
        }
        for node in &data.nodes {
            if let Some(count) = node_counts.remove(&*lower(&node.datacenter)) {
                datacenter_entry(&mut dcs, &node.datacenter).nodes.reserve(count);
            }
        }
        for (node, records) in data.nodes.iter().zip(build_nodes(&data.nodes)) {
            let dc = datacenter_entry(&mut dcs, &node.datacenter);
            dc.nodes.insert(key(&node.name), records);
        }
        snapshot.counts.nodes = data.nodes.len();
        // Eligible instances by (datacenter, service), in the order the services first appear.
        type GroupKey<'a> = (Cow<'a, str>, Cow<'a, str>);
        let mut group_of: Map<GroupKey<'_>, usize> = Map::default();
        let mut groups: Vec<(GroupKey<'_>, Vec<&Instance>)> = Vec::new();
        for inst in data.instances.iter().filter(|i| i.health.is_eligible(snapshot.options.only_passing)) {
            let next = groups.len();
            let at = *group_of.entry((lower(&inst.datacenter), lower(&inst.service))).or_insert_with_key(|k| {
                groups.push((k.clone(), Vec::new()));
                next
            });
            groups[at].1.push(inst);
        }
        drop(group_of);
        let mut service_counts: Map<&str, usize> = Map::default();
        for ((dc, _), list) in &groups {
            *service_counts.entry(&**dc).or_default() += 1;
            datacenter_entry(&mut dcs, &list[0].datacenter);
        }
        for (dc, count) in service_counts {
            if let Some(dc) = dcs.get_mut(dc) {
                dc.services.reserve(count);
            }
        }
        // The services are independent of each other: both threads take chunks of them in turn,
        // the second after building the reverse map (it needs only the local datacenter's nodes
        // and the model), so whichever is done first helps the other.
        let local = String::from_utf8_lossy(&snapshot.local_dc).into_owned();
        let options = &snapshot.options;
        let next_chunk = AtomicUsize::new(0);
        let build_chunks = |tags: &mut Interner| {
            let mut built = Vec::new();
            loop {
                let chunk = next_chunk.fetch_add(1, Ordering::Relaxed);
                let Some(part) = groups.chunks(SERVICE_CHUNK).nth(chunk) else { return built };
                let records: Vec<ServiceRecords> = part
                    .iter()
                    .map(|((dc, service), list)| {
                        let ttl = options.service_ttl.lookup(service);
                        build_service(list, &dcs[dc].nodes, ttl, tags)
                    })
                    .collect();
                built.push((chunk, records));
            }
        };
        let (mut built, reverse, mut tags) = std::thread::scope(|scope| {
            let second = scope.spawn(|| {
                let reverse = dcs.get(local.as_str()).map(|dc| local_reverse_map(data, dc));
                let mut tags = Interner::default();
                (build_chunks(&mut tags), reverse)
            });
            let mut tags = Interner::default();
            let mut built = build_chunks(&mut tags);
            let (more, reverse) = second.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            built.extend(more);
            (built, reverse, tags)
        });
        built.sort_unstable_by_key(|(chunk, _)| *chunk);
        let built = built.into_iter().flat_map(|(_, records)| records);
        for ((group_key, _), records) in groups.iter().zip(built) {
            if records.instances.is_empty() {
                continue;
            }
            snapshot.counts.services += 1;
            snapshot.counts.instances += records.instances.len();
            let dc = dcs.get_mut(&group_key.0).expect("created above");
            dc.services.insert(group_key.1.as_bytes().into(), Arc::new(records));
        }
        build_mesh(data, &mut dcs, &snapshot.options, &mut tags);
        dcs.retain(|_, dc| !dc.is_empty());
        if let Some(dc) = dcs.get(local.as_str()) {
            snapshot.name_servers = name_servers(dc);
            snapshot.reverse = Arc::new(reverse.unwrap_or_default());
        }
        snapshot.datacenters = dcs.into_iter().map(|(k, v)| (k.as_bytes().into(), Arc::new(v))).collect();
        snapshot.local = snapshot.datacenters.get(&snapshot.local_dc).cloned();
        snapshot
    }

    /// A new snapshot: this one with `update` applied. Untouched datacenters, services and
    /// nodes are shared with this snapshot by `Arc`; only the listed services are rebuilt, so
    /// the cost follows the size of the change (plus one copy of the touched datacenters'
    /// maps), not the size of the catalog.
    pub fn update(&self, update: &Update<'_>, options: Arc<BuildOptions>) -> Snapshot {
        let mut next = Snapshot::empty(options, true);
        next.datacenters = self.datacenters.clone();
        next.counts = self.counts;
        let mut touched: Map<Box<[u8]>, Datacenter> = Map::default();
        for (dc, name) in &update.removed_nodes {
            if self.edit(&mut touched, dc).nodes.remove(&*key(name)).is_some() {
                next.counts.nodes -= 1;
            }
        }
        for node in &update.nodes {
            let records = Arc::new(NodeRecords::build(node));
            if self.edit(&mut touched, &node.datacenter).nodes.insert(key(&node.name), records).is_none() {
                next.counts.nodes += 1;
            }
        }
        let mut tags = Interner::default();
        for change in &update.services {
            let dc = self.edit(&mut touched, change.datacenter);
            next.rebuild_service(dc, change, &mut tags);
        }
        let local_touched = touched.contains_key(&self.local_dc);
        next.reverse = Arc::clone(&self.reverse);
        next.name_servers = self.name_servers.clone();
        for (k, dc) in touched {
            if dc.is_empty() {
                next.datacenters.remove(&k);
            } else {
                next.datacenters.insert(k, Arc::new(dc));
            }
        }
        next.local = next.datacenters.get(&next.local_dc).cloned();
        if local_touched {
            match next.datacenters.get(&self.local_dc) {
                Some(local) => {
                    next.name_servers = name_servers(local);
                    next.reverse = Arc::new(self.patch_reverse(update, local));
                }
                None => {
                    next.name_servers = Box::new([]);
                    next.reverse = Arc::default();
                }
            }
        }
        next
    }

    /// The reverse map after `update`: the changed local nodes' and services' claims replaced.
    fn patch_reverse(&self, update: &Update<'_>, local: &Datacenter) -> ReverseMap {
        let is_local = |dc: &str| lower(dc).as_bytes() == &*self.local_dc;
        let mut map = (*self.reverse).clone();
        for (_, name) in update.removed_nodes.iter().filter(|(dc, _)| is_local(dc)) {
            map.set_node(&key(name), None);
        }
        for node in update.nodes.iter().filter(|n| is_local(&n.datacenter)) {
            let k = key(&node.name);
            map.set_node(&k, local.nodes.get(&k));
        }
        for change in update.services.iter().filter(|s| s.mesh.is_none() && is_local(s.datacenter)) {
            map.set_service(&key(change.name), &change.instances, &local.name);
        }
        map
    }

    /// The copy of datacenter `name` that an update edits, made on first use.
    fn edit<'t>(&self, touched: &'t mut Map<Box<[u8]>, Datacenter>, name: &str) -> &'t mut Datacenter {
        let k = key(name);
        touched
            .entry(k)
            .or_insert_with_key(|k| self.datacenters.get(k).map_or_else(|| new_datacenter(name), |dc| (**dc).clone()))
    }

    fn rebuild_service(&mut self, dc: &mut Datacenter, change: &ServiceUpdate<'_>, tags: &mut Interner) {
        let name = key(change.name);
        let eligible: Vec<&Instance> =
            change.instances.iter().copied().filter(|i| i.health.is_eligible(self.options.only_passing)).collect();
        let ttl = self.options.service_ttl.lookup(&String::from_utf8_lossy(&name));
        let records = build_service(&eligible, &dc.nodes, ttl, tags);
        let counted = change.mesh.is_none();
        if let Some(old) = dc.map_mut(change.mesh).remove(&name)
            && counted
        {
            self.counts.services -= 1;
            self.counts.instances -= old.instances.len();
        }
        if !records.instances.is_empty() {
            if counted {
                self.counts.services += 1;
                self.counts.instances += records.instances.len();
            }
            dc.map_mut(change.mesh).insert(name, Arc::new(records));
        }
    }

    /// The datacenter a question names (`None` = the local one); `None` if unknown (S2.11).
    pub fn datacenter(&self, name: Option<&[u8]>) -> Option<&Datacenter> {
        match name {
            None => self.local.as_deref(),
            Some(name) if *name == *self.local_dc => self.local.as_deref(),
            Some(name) => self.datacenters.get(name).map(|dc| &**dc),
        }
    }

    /// What an address in the local datacenter reverse-maps to (S3.8).
    pub fn reverse(&self, ip: &IpAddr) -> Option<&Pointer> {
        self.reverse.get(ip)
    }

    /// The NS set: eligible instances of service `consul` in the local datacenter (S5.4).
    pub fn name_servers(&self) -> &[NameServer] {
        &self.name_servers
    }

    /// The settings baked into this snapshot.
    pub fn options(&self) -> &BuildOptions {
        &self.options
    }

    /// The settings, shareable with the next build.
    pub fn options_arc(&self) -> Arc<BuildOptions> {
        Arc::clone(&self.options)
    }

    /// SOA serial: the catalog generation, monotonic (S15).
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Sets the serial; done by `Catalog::publish`.
    pub(crate) fn set_serial(&mut self, serial: u32) {
        self.serial = serial;
    }

    /// False until a live backend has synced at least once (answers are SERVFAIL meanwhile).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Sizes, for logs and metrics.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Every datacenter, for debugging views.
    pub fn datacenters(&self) -> impl Iterator<Item = &Datacenter> {
        self.datacenters.values().map(|dc| &**dc)
    }
}

/// S3.8 for a full build: every node and service of the local datacenter claims its addresses
/// (services with instances of any health, as an update does).
fn local_reverse_map(data: &CatalogData, local: &Datacenter) -> ReverseMap {
    let mut map = ReverseMap::default();
    for (k, records) in &local.nodes {
        map.set_node(k, Some(records));
    }
    let mut services: Map<Cow<'_, str>, Vec<&Instance>> = Map::default();
    for inst in data.instances.iter().filter(|i| i.datacenter.eq_ignore_ascii_case(&local.name)) {
        services.entry(lower(&inst.service)).or_default().push(inst);
    }
    for (k, instances) in &services {
        map.set_service(k.as_bytes(), instances, &local.name);
    }
    map
}

/// Services a thread of [`Snapshot::build`] takes at a time.
const SERVICE_CHUNK: usize = 2048;

/// Catalogs with at least this many nodes prepare them on two threads.
const PARALLEL_NODES: usize = 4096;

/// Each node's records, in order; on two threads for a large catalog.
fn build_nodes(nodes: &[Node]) -> Vec<Arc<NodeRecords>> {
    let prepare = |node: &Node| Arc::new(NodeRecords::build(node));
    if nodes.len() < PARALLEL_NODES {
        return nodes.iter().map(prepare).collect();
    }
    let (first, second) = nodes.split_at(nodes.len() / 2);
    std::thread::scope(|scope| {
        let second = scope.spawn(|| second.iter().map(prepare).collect::<Vec<_>>());
        let mut built = Vec::with_capacity(nodes.len());
        built.extend(first.iter().map(prepare));
        built.extend(second.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        built
    })
}

fn datacenter_entry<'a, 'd>(dcs: &'a mut Map<Cow<'d, str>, Datacenter>, name: &'d str) -> &'a mut Datacenter {
    dcs.entry(lower(name)).or_insert_with(|| new_datacenter(name))
}

fn new_datacenter(name: &str) -> Datacenter {
    Datacenter { name: name.into(), label: relative(name), ..Datacenter::default() }
}

/// S2.10: `.connect` and `.ingress` records, grouped by the service they answer for.
fn build_mesh<'a>(
    data: &'a CatalogData,
    dcs: &mut Map<Cow<'a, str>, Datacenter>,
    options: &BuildOptions,
    tags: &mut Interner,
) {
    type Group<'a> = (Cow<'a, str>, MeshKind, Cow<'a, str>);
    let mut groups: Map<Group<'a>, Vec<&Instance>> = Map::default();
    for endpoint in data.mesh.iter().filter(|e| e.instance.health.is_eligible(options.only_passing)) {
        let group_key = (lower(&endpoint.instance.datacenter), endpoint.kind, lower(&endpoint.service));
        groups.entry(group_key).or_default().push(&endpoint.instance);
    }
    for ((dc_name, kind, service), list) in groups {
        let Some(dc) = dcs.get_mut(&dc_name) else { continue };
        let records = build_service(&list, &dc.nodes, options.service_ttl.lookup(&service), tags);
        if !records.instances.is_empty() {
            dc.map_mut(Some(kind)).insert(service.as_bytes().into(), Arc::new(records));
        }
    }
}

/// Shares one lower-cased `Arc<str>` per distinct tag across a build.
#[derive(Debug, Default)]
pub struct Interner(Map<Box<str>, Arc<str>>);

impl Interner {
    /// The shared, lower-cased copy of `text`.
    pub fn get(&mut self, text: &str) -> Arc<str> {
        let lowered = lower(text);
        if let Some(shared) = self.0.get(&*lowered) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(&*lowered);
        self.0.insert(lowered.into(), Arc::clone(&shared));
        shared
    }
}

fn node_of(inst: &Instance, nodes: &Map<Box<[u8]>, Arc<NodeRecords>>) -> Result<Option<Arc<NodeRecords>>, ()> {
    match &inst.node {
        None => Ok(None),
        Some(name) => nodes.get(lower(name).as_bytes()).map(|n| Some(Arc::clone(n))).ok_or(()),
    }
}

/// Prepares a service's instances: records, tag bits and duplicate flags.
pub fn build_service(
    list: &[&Instance],
    nodes: &Map<Box<[u8]>, Arc<NodeRecords>>,
    ttl: u32,
    interner: &mut Interner,
) -> ServiceRecords {
    let mut instances = Vec::with_capacity(list.len());
    let mut tags: Vec<Arc<str>> = Vec::new();
    let mut extra_tags = Vec::new();
    for inst in list {
        let Ok(node) = node_of(inst, nodes) else { continue };
        let mut prepared = PreparedInstance::build(inst, node);
        if prepared.target().is_none() {
            continue;
        }
        for tag in inst.tags.iter() {
            let tag = interner.get(tag);
            let index = tags.iter().position(|t| Arc::ptr_eq(t, &tag)).unwrap_or_else(|| {
                tags.push(Arc::clone(&tag));
                tags.len() - 1
            });
            if index < 64 {
                prepared.tag_bits |= 1 << index;
            } else {
                extra_tags.push((instances.len() as u32, tag));
            }
        }
        instances.push(prepared);
    }
    mark_duplicates(&mut instances);
    let mut uniform = u8::from(instances.iter().all(|i| i.flags & flags::SRV_DUP == 0));
    for family in FAMILIES {
        let f = family as u16;
        let distinct_ips = instances.iter().all(|i| i.has_ip(family) && i.flags & (flags::ADDR_DUP << f) == 0);
        uniform |= u8::from(distinct_ips) << (1 + f);
    }
    ServiceRecords {
        ttl,
        uniform,
        instances: instances.into(),
        tags: tags.into(),
        extra_tags: (!extra_tags.is_empty()).then(|| extra_tags.into()),
    }
}

/// Sets the `*_DUP` flags: a record equal to an earlier instance's is skipped when answering
/// for the whole service (S3.4, S3.5). Tag-filtered answers de-duplicate on the fly.
fn mark_duplicates(instances: &mut [PreparedInstance]) {
    let mut dups = vec![0u16; instances.len()];
    first_seen(instances.iter().map(PreparedInstance::srv_key), &mut dups, flags::SRV_DUP);
    for family in FAMILIES {
        first_seen(instances.iter().map(|i| i.address(family)), &mut dups, flags::ADDR_DUP << family as u16);
    }
    for (inst, dup) in instances.iter_mut().zip(dups) {
        inst.flags |= dup;
    }
}

/// Services with at most this many instances compare pairwise instead of hashing.
const PAIRWISE_MAX: usize = 16;

fn first_seen<K: Hash + Eq>(keys: impl Iterator<Item = Option<K>>, dups: &mut [u16], flag: u16) {
    if dups.len() <= PAIRWISE_MAX {
        let keys: Vec<Option<K>> = keys.collect();
        for (i, k) in keys.iter().enumerate() {
            if k.is_some() && keys[..i].contains(k) {
                dups[i] |= flag;
            }
        }
        return;
    }
    let mut seen: std::collections::HashSet<K, foldhash::fast::RandomState> = Default::default();
    for (i, k) in keys.enumerate() {
        if let Some(k) = k
            && !seen.insert(k)
        {
            dups[i] |= flag;
        }
    }
}

/// S5.4: the nodes of the eligible `consul` instances (the answer path picks three).
fn name_servers(dc: &Datacenter) -> Box<[NameServer]> {
    let mut seen = std::collections::HashSet::new();
    let servers = dc.services.get(&b"consul"[..]).map_or(&[][..], |records| &records.instances[..]);
    servers
        .iter()
        .filter_map(|inst| inst.node.clone())
        .filter(|node| seen.insert(Arc::as_ptr(node)))
        .map(|node| NameServer {
            labels: node.labels.to_ascii_lowercase().into(),
            glue: node.addresses.choose(Family::Any).filter(|a| a.is_ip()).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
