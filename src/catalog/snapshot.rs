//! An immutable, indexed, ready-to-answer view of the catalog.
//!
//! [`Snapshot::build`] turns [`CatalogData`] into per-datacenter maps keyed by the lower-case
//! names DNS asks for, holding [`PreparedInstance`]s and the per-query-type instance lists
//! (eligible only, de-duplicated, S3.4/S3.5/S4.1), so the answer path does one hash lookup and
//! copies. Services, nodes and datacenters sit behind `Arc`s so a later build can share them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::catalog::model::{Address, CatalogData, Instance, Node};
use crate::catalog::records::{AddrRecord, Family, NodeRecords, PreparedInstance, Target, node_address};
use crate::catalog::ttl::TtlTable;
use crate::wire;

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

/// Index of a family in per-family arrays: A, AAAA, ANY.
pub fn family_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
        Family::Any => 2,
    }
}

/// No group: the instance gives no record of that kind.
pub const NO_GROUP: u32 = u32::MAX;

/// The prepared records of one service in one datacenter.
#[derive(Debug)]
pub struct ServiceRecords {
    /// TTL of every record of this service (S6.2).
    pub ttl: u32,
    /// Eligible instances, catalog order.
    pub instances: Box<[PreparedInstance]>,
    /// Instances giving distinct SRV records (S3.5 de-duplication).
    pub srv: Box<[u32]>,
    /// Per family (A, AAAA, ANY): instances giving distinct IP records (S3.4 de-duplication).
    pub ips: [Box<[u32]>; 3],
    /// Per family: instances giving distinct CNAMEs (used only when no instance gives an IP).
    pub cnames: [Box<[u32]>; 3],
    /// Per instance: de-duplication group for SRV, then A, AAAA, ANY (`NO_GROUP` if none).
    pub groups: Box<[[u32; 4]]>,
    /// Number of SRV groups, then per family the number of address groups.
    pub group_counts: [u32; 4],
}

/// One datacenter's indexes.
#[derive(Debug, Default)]
pub struct Datacenter {
    /// Name as stored.
    pub name: Box<str>,
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
    /// The node's address record, if it is an IP.
    pub glue: Option<AddrRecord>,
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
    datacenters: Map<Box<[u8]>, Arc<Datacenter>>,
    reverse: Map<IpAddr, Box<[u8]>>,
    name_servers: Box<[NameServer]>,
    counts: Counts,
}

impl Snapshot {
    /// A snapshot with no data. `synced = false` makes the DNS layer answer SERVFAIL for names
    /// in the domain rather than NXDOMAIN (a Consul-only start with nothing restored).
    pub fn empty(options: Arc<BuildOptions>, synced: bool) -> Snapshot {
        let local_dc = options.datacenter.to_ascii_lowercase().into_bytes().into();
        Snapshot {
            options,
            serial: 0,
            synced,
            local_dc,
            datacenters: Map::default(),
            reverse: Map::default(),
            name_servers: Box::new([]),
            counts: Counts::default(),
        }
    }

    /// Builds the indexes and prepared records. The data must have passed
    /// [`CatalogData::validate`]; instances on unknown nodes are skipped.
    pub fn build(data: &CatalogData, options: Arc<BuildOptions>) -> Snapshot {
        let mut snapshot = Snapshot::empty(options, true);
        let nodes = index_nodes(&data.nodes);
        let mut services: HashMap<(String, String), Vec<&Instance>> = HashMap::new();
        let mut service_order = Vec::new();
        for inst in &data.instances {
            if !inst.health.is_eligible(snapshot.options.only_passing) {
                continue;
            }
            let key = (inst.datacenter.to_ascii_lowercase(), inst.service.to_ascii_lowercase());
            services
                .entry(key.clone())
                .or_insert_with(|| {
                    service_order.push(key);
                    Vec::new()
                })
                .push(inst);
        }
        let mut dcs: HashMap<String, Datacenter> = HashMap::new();
        for node in &data.nodes {
            let dc = datacenter_entry(&mut dcs, &node.datacenter);
            dc.nodes.insert(lower(&node.name), Arc::new(NodeRecords::build(node)));
            snapshot.counts.nodes += 1;
        }
        for key in &service_order {
            let list = &services[key];
            let ttl = snapshot.options.service_ttl.lookup(&key.1);
            let records = build_service(list, &nodes, ttl, snapshot.options.node_meta_txt);
            if records.instances.is_empty() {
                continue;
            }
            snapshot.counts.services += 1;
            snapshot.counts.instances += records.instances.len();
            let dc = datacenter_entry(&mut dcs, &list[0].datacenter);
            dc.services.insert(key.1.as_bytes().into(), Arc::new(records));
        }
        snapshot.name_servers =
            name_servers(&snapshot.local_dc, services.get(&(local(&snapshot), "consul".into())), &nodes);
        snapshot.reverse = reverse_map(data, &snapshot.local_dc);
        snapshot.datacenters = dcs.into_iter().map(|(k, v)| (k.into_bytes().into(), Arc::new(v))).collect();
        snapshot
    }

    /// The datacenter a question names (`None` = the local one); `None` if unknown (S2.11).
    pub fn datacenter(&self, name: Option<&[u8]>) -> Option<&Datacenter> {
        self.datacenters.get(name.unwrap_or(&self.local_dc)).map(|dc| &**dc)
    }

    /// The PTR target labels for an address in the local datacenter (S3.8).
    pub fn reverse(&self, ip: &IpAddr) -> Option<&[u8]> {
        self.reverse.get(ip).map(|labels| &**labels)
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

fn local(snapshot: &Snapshot) -> String {
    String::from_utf8_lossy(&snapshot.local_dc).into_owned()
}

fn lower(text: &str) -> Box<[u8]> {
    text.to_ascii_lowercase().into_bytes().into()
}

fn datacenter_entry<'a>(dcs: &'a mut HashMap<String, Datacenter>, name: &str) -> &'a mut Datacenter {
    dcs.entry(name.to_ascii_lowercase()).or_insert_with(|| Datacenter { name: name.into(), ..Datacenter::default() })
}

type NodeIndex<'a> = HashMap<(String, String), &'a Node>;

fn index_nodes(nodes: &[Node]) -> NodeIndex<'_> {
    nodes.iter().map(|n| ((n.datacenter.to_ascii_lowercase(), n.name.to_ascii_lowercase()), n)).collect()
}

fn node_of<'a>(inst: &Instance, nodes: &NodeIndex<'a>) -> Result<Option<&'a Node>, ()> {
    match &inst.node {
        None => Ok(None),
        Some(name) => {
            nodes.get(&(inst.datacenter.to_ascii_lowercase(), name.to_ascii_lowercase())).map(|n| Some(*n)).ok_or(())
        }
    }
}

/// Prepares a service's instances and its de-duplicated per-type lists.
fn build_service(list: &[&Instance], nodes: &NodeIndex<'_>, ttl: u32, meta_txt: bool) -> ServiceRecords {
    let instances: Vec<PreparedInstance> =
        list.iter().filter_map(|inst| PreparedInstance::build(inst, node_of(inst, nodes).ok()?, meta_txt)).collect();
    let mut groups = vec![[NO_GROUP; 4]; instances.len()];
    let mut srv = Vec::new();
    let mut srv_seen: HashMap<(&Target, [u8; 2]), u32> = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        let next = srv_seen.len() as u32;
        let group = *srv_seen.entry(inst.srv_key()).or_insert_with(|| {
            srv.push(i as u32);
            next
        });
        groups[i][0] = group;
    }
    let mut ips: [Vec<u32>; 3] = Default::default();
    let mut cnames: [Vec<u32>; 3] = Default::default();
    let mut group_counts = [srv_seen.len() as u32, 0, 0, 0];
    for family in [Family::V4, Family::V6, Family::Any] {
        let f = family_index(family);
        let mut seen: HashMap<&AddrRecord, u32> = HashMap::new();
        for (i, inst) in instances.iter().enumerate() {
            let Some(record) = inst.addresses.get(family) else { continue };
            let next = seen.len() as u32;
            let list = if record.is_ip() { &mut ips[f] } else { &mut cnames[f] };
            groups[i][f + 1] = *seen.entry(record).or_insert_with(|| {
                list.push(i as u32);
                next
            });
        }
        group_counts[f + 1] = seen.len() as u32;
    }
    ServiceRecords {
        ttl,
        srv: srv.into(),
        ips: ips.map(Into::into),
        cnames: cnames.map(Into::into),
        groups: groups.into(),
        group_counts,
        instances: instances.into(),
    }
}

/// S5.4: up to all eligible `consul` instances' nodes (the answer path picks three), lower-case.
fn name_servers(local_dc: &[u8], servers: Option<&Vec<&Instance>>, nodes: &NodeIndex<'_>) -> Box<[NameServer]> {
    let mut seen = std::collections::HashSet::new();
    let dc = String::from_utf8_lossy(local_dc);
    servers
        .into_iter()
        .flatten()
        .filter_map(|inst| node_of(inst, nodes).ok().flatten())
        .filter(|node| seen.insert(node.name.to_ascii_lowercase()))
        .filter_map(|node| {
            let mut labels = Vec::new();
            let name = format!("{}.node.{dc}", node.name).to_ascii_lowercase();
            wire::push_labels(&name, &mut labels).ok()?;
            let glue = match node_address(node, Family::Any) {
                Address::Ip(IpAddr::V4(ip)) => Some(AddrRecord::V4(ip.octets())),
                Address::Ip(IpAddr::V6(ip)) => Some(AddrRecord::V6(ip.octets())),
                Address::Host(_) => None,
            };
            Some(NameServer { labels: labels.into(), glue })
        })
        .collect()
}

/// S3.8: node addresses first (first node wins), then service addresses, local DC only.
fn reverse_map(data: &CatalogData, local_dc: &[u8]) -> Map<IpAddr, Box<[u8]>> {
    let is_local = |dc: &str| dc.eq_ignore_ascii_case(&String::from_utf8_lossy(local_dc));
    let mut map = Map::default();
    for node in data.nodes.iter().filter(|n| is_local(&n.datacenter)) {
        if let Address::Ip(ip) = node.address {
            map.entry(ip).or_insert_with(|| crate::catalog::records::node_labels(node));
        }
    }
    for inst in data.instances.iter().filter(|i| is_local(&i.datacenter)) {
        if let Some(Address::Ip(ip)) = inst.address {
            let mut labels = Vec::new();
            if wire::push_labels(&format!("{}.service.{}", inst.service, inst.datacenter), &mut labels).is_ok() {
                map.entry(ip).or_insert_with(|| labels.into());
            }
        }
    }
    map
}
