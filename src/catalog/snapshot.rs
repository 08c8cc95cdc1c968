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

use crate::catalog::model::{Address, CatalogData, Instance, lower};
use crate::catalog::records::{Addr, FAMILIES, Family, NodeRecords, PreparedInstance, flags, relative};
use crate::catalog::ttl::TtlTable;

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
#[derive(Debug, Default)]
pub struct Datacenter {
    /// Name as stored.
    pub name: Box<str>,
    /// The name as one wire label, for `.addr.` targets.
    pub label: Box<[u8]>,
    /// Lower-case service name → records. Only services with eligible instances.
    pub services: Map<Box<[u8]>, Arc<ServiceRecords>>,
    /// Lower-case node name → records.
    pub nodes: Map<Box<[u8]>, Arc<NodeRecords>>,
}

/// One name server of the NS set (S5.4).
#[derive(Debug, Clone)]
pub struct NameServer {
    /// `<node>.node.<dc>` lower-cased, as relative labels.
    pub labels: Box<[u8]>,
    /// The node's address, if it is an IP.
    pub glue: Option<Addr>,
}

/// What a reverse lookup finds (S3.8).
#[derive(Debug, Clone)]
pub enum Pointer {
    /// A node: `<node>.node.<dc>`.
    Node(Arc<NodeRecords>),
    /// A service instance's own address: `<svc>.service.<dc>` labels.
    Service(Box<[u8]>),
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
    reverse: Map<IpAddr, Pointer>,
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
            reverse: Map::default(),
            name_servers: Box::new([]),
            counts: Counts::default(),
        }
    }

    /// Builds the indexes and prepared records. The data should have passed
    /// [`CatalogData::validate`]; instances on unknown nodes are skipped.
    pub fn build(data: &CatalogData, options: Arc<BuildOptions>) -> Snapshot {
        let mut snapshot = Snapshot::empty(options, true);
        let mut dcs: Map<Cow<'_, str>, Datacenter> = Map::default();
        for node in &data.nodes {
            let dc = datacenter_entry(&mut dcs, &node.datacenter);
            dc.nodes.insert(key(&node.name), Arc::new(NodeRecords::build(node)));
        }
        snapshot.counts.nodes = data.nodes.len();
        let mut groups: Map<(Cow<'_, str>, Cow<'_, str>), Vec<&Instance>> = Map::default();
        let mut order = Vec::new();
        for inst in data.instances.iter().filter(|i| i.health.is_eligible(snapshot.options.only_passing)) {
            let group_key = (lower(&inst.datacenter), lower(&inst.service));
            groups
                .entry(group_key)
                .or_insert_with_key(|k| {
                    order.push(k.clone());
                    Vec::new()
                })
                .push(inst);
        }
        let mut tags = Interner::default();
        for group_key in &order {
            let list = &groups[group_key];
            let ttl = snapshot.options.service_ttl.lookup(&group_key.1);
            let dc = datacenter_entry(&mut dcs, &list[0].datacenter);
            let records = build_service(list, &dc.nodes, ttl, &mut tags);
            if records.instances.is_empty() {
                continue;
            }
            snapshot.counts.services += 1;
            snapshot.counts.instances += records.instances.len();
            dc.services.insert(group_key.1.as_bytes().into(), Arc::new(records));
        }
        let local = String::from_utf8_lossy(&snapshot.local_dc).into_owned();
        if let Some(dc) = dcs.get(local.as_str()) {
            let servers = groups.get(&(Cow::Borrowed(local.as_str()), Cow::Borrowed("consul")));
            snapshot.name_servers = name_servers(servers.map_or(&[][..], Vec::as_slice), dc);
            snapshot.reverse = reverse_map(data, dc, &local);
        }
        snapshot.datacenters = dcs.into_iter().map(|(k, v)| (k.as_bytes().into(), Arc::new(v))).collect();
        snapshot.local = snapshot.datacenters.get(&snapshot.local_dc).cloned();
        snapshot
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

fn datacenter_entry<'a, 'd>(dcs: &'a mut Map<Cow<'d, str>, Datacenter>, name: &'d str) -> &'a mut Datacenter {
    dcs.entry(lower(name)).or_insert_with(|| Datacenter {
        name: name.into(),
        label: relative(name),
        services: Map::default(),
        nodes: Map::default(),
    })
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
        for tag in &inst.tags {
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
fn name_servers(servers: &[&Instance], dc: &Datacenter) -> Box<[NameServer]> {
    let mut seen = std::collections::HashSet::new();
    servers
        .iter()
        .filter_map(|inst| node_of(inst, &dc.nodes).ok().flatten())
        .filter(|node| seen.insert(Arc::as_ptr(node)))
        .map(|node| NameServer {
            labels: node.labels.to_ascii_lowercase().into(),
            glue: node.addresses.choose(Family::Any).filter(|a| a.is_ip()).cloned(),
        })
        .collect()
}

/// S3.8: node addresses first (first node wins), then service addresses, local DC only.
fn reverse_map(data: &CatalogData, dc: &Datacenter, local: &str) -> Map<IpAddr, Pointer> {
    let is_local = |name: &str| name.eq_ignore_ascii_case(local);
    let mut map = Map::default();
    for node in data.nodes.iter().filter(|n| is_local(&n.datacenter)) {
        if let (Address::Ip(ip), Some(records)) = (&node.address, dc.nodes.get(&*key(&node.name))) {
            map.entry(*ip).or_insert_with(|| Pointer::Node(Arc::clone(records)));
        }
    }
    for inst in data.instances.iter().filter(|i| is_local(&i.datacenter)) {
        if let Some(Address::Ip(ip)) = &inst.address {
            map.entry(*ip).or_insert_with(|| {
                Pointer::Service(relative(&format!("{}.service.{}", inst.service, inst.datacenter)))
            });
        }
    }
    map
}
