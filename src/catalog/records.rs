//! Prepared records: for each instance and node, the address chosen per query type (S3.3), the
//! SRV target and its additional records (S3.5), and node meta as TXT (S3.6), worked out once
//! when a snapshot is built so that the answer path only copies.
//!
//! Names here are *relative*: wire-format labels without the domain, which the answer path
//! appends in the spelling the question used (S2.1, S2.12).

use std::net::IpAddr;

use crate::catalog::model::{Address, Instance, Node, TaggedAddresses};
use crate::wire::{self, rtype};

/// What one instance or node answers for one query type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddrRecord {
    /// An A record.
    V4([u8; 4]),
    /// An AAAA record.
    V6([u8; 16]),
    /// A CNAME to this absolute wire-format hostname.
    Host(Box<[u8]>),
}

impl AddrRecord {
    fn from_address(address: &Address) -> AddrRecord {
        match address {
            Address::Ip(IpAddr::V4(ip)) => AddrRecord::V4(ip.octets()),
            Address::Ip(IpAddr::V6(ip)) => AddrRecord::V6(ip.octets()),
            Address::Host(host) => AddrRecord::Host(absolute_name(host)),
        }
    }

    /// The record's type.
    pub fn rtype(&self) -> u16 {
        match self {
            AddrRecord::V4(_) => rtype::A,
            AddrRecord::V6(_) => rtype::AAAA,
            AddrRecord::Host(_) => rtype::CNAME,
        }
    }

    /// The record's RDATA.
    pub fn rdata(&self) -> &[u8] {
        match self {
            AddrRecord::V4(ip) => ip,
            AddrRecord::V6(ip) => ip,
            AddrRecord::Host(name) => name,
        }
    }

    /// Is this an IP (not a CNAME)?
    pub fn is_ip(&self) -> bool {
        !matches!(self, AddrRecord::Host(_))
    }
}

/// The records a query type selects (S3.3): A wants IPv4, AAAA IPv6, ANY and SRV either
/// (IPv6 preferred among tagged addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A.
    V4,
    /// AAAA.
    V6,
    /// ANY and SRV.
    Any,
}

impl Family {
    fn tagged(self, tagged: &TaggedAddresses) -> Option<&Address> {
        match self {
            Family::V4 => tagged.ipv4.as_ref(),
            Family::V6 => tagged.ipv6.as_ref(),
            Family::Any => tagged.ipv6.as_ref().or(tagged.ipv4.as_ref()),
        }
    }

    /// Turns the chosen address into a record if it suits this family: an IP of the asked
    /// family, or a hostname (CNAME). A v6 address never answers A (no fallback, S3.3).
    fn record(self, address: &Address) -> Option<AddrRecord> {
        let fits = match (self, address) {
            (_, Address::Host(_)) | (Family::Any, _) => true,
            (Family::V4, Address::Ip(ip)) => ip.is_ipv4(),
            (Family::V6, Address::Ip(ip)) => ip.is_ipv6(),
        };
        fits.then(|| AddrRecord::from_address(address))
    }
}

/// S3.3: the service's tagged address, else its own address; only if both are empty the node's
/// tagged address, else the node's address.
pub fn instance_address<'a>(inst: &'a Instance, node: Option<&'a Node>, family: Family) -> Option<&'a Address> {
    family.tagged(&inst.tagged).or(inst.address.as_ref()).or_else(|| node.map(|n| node_address(n, family)))
}

/// S3.3 applied to a node alone.
pub fn node_address(node: &Node, family: Family) -> &Address {
    family.tagged(&node.tagged).unwrap_or(&node.address)
}

/// The records an instance or node gives for A, AAAA and ANY.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressSet {
    /// For A.
    pub a: Option<AddrRecord>,
    /// For AAAA.
    pub aaaa: Option<AddrRecord>,
    /// For ANY.
    pub any: Option<AddrRecord>,
}

impl AddressSet {
    /// The record for one family.
    pub fn get(&self, family: Family) -> Option<&AddrRecord> {
        match family {
            Family::V4 => self.a.as_ref(),
            Family::V6 => self.aaaa.as_ref(),
            Family::Any => self.any.as_ref(),
        }
    }

    fn build(pick: impl Fn(Family) -> Option<Address>) -> AddressSet {
        let record = |family: Family| pick(family).and_then(|address| family.record(&address));
        AddressSet { a: record(Family::V4), aaaa: record(Family::V6), any: record(Family::Any) }
    }
}

/// An SRV target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Labels to which the response domain is appended (`node1.node.dc1`, `<hex>.addr.dc1`).
    Relative(Box<[u8]>),
    /// A complete external hostname.
    Absolute(Box<[u8]>),
}

/// Who owns an additional record of an SRV answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlueOwner {
    /// The SRV target itself (written as a pointer to it).
    Target,
    /// `<node>.node.<dc>` + the response domain, when the target is an `.addr.` name (S3.5).
    Node(Box<[u8]>),
}

/// One additional record of an SRV answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glue {
    /// Owner name.
    pub owner: GlueOwner,
    /// A, AAAA or TXT.
    pub rtype: u16,
    /// RDATA.
    pub rdata: Box<[u8]>,
}

/// An instance's SRV record, ready to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Priority (always 1), weight (S4.4), port, big-endian.
    pub fixed: [u8; 6],
    /// The target name.
    pub target: Target,
    /// Additional records: the target's address and the node's meta TXT.
    pub glue: Box<[Glue]>,
}

/// Everything the answer path needs about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedInstance {
    /// Tags, lower-cased (tag filters fold case, S2.6d).
    pub tags: Box<[Box<[u8]>]>,
    /// A / AAAA / ANY records.
    pub addresses: AddressSet,
    /// The SRV record.
    pub srv: SrvRecord,
}

impl PreparedInstance {
    /// Prepares an instance on its node (`node` is None only for static node-less instances).
    /// `None` if the instance has no address at all.
    pub fn build(inst: &Instance, node: Option<&Node>, node_meta_txt: bool) -> Option<PreparedInstance> {
        let addresses = AddressSet::build(|family| instance_address(inst, node, family).cloned());
        let weight = inst.weights.for_health(inst.health);
        let mut fixed = [0, 1, 0, 0, 0, 0];
        fixed[2..4].copy_from_slice(&weight.to_be_bytes());
        fixed[4..6].copy_from_slice(&inst.port.to_be_bytes());
        let (target, address) = srv_target(inst, node)?;
        let mut glue = Vec::new();
        if let Some(IpAddr::V4(ip)) = address {
            glue.push(Glue { owner: GlueOwner::Target, rtype: rtype::A, rdata: ip.octets().into() });
        } else if let Some(IpAddr::V6(ip)) = address {
            glue.push(Glue { owner: GlueOwner::Target, rtype: rtype::AAAA, rdata: ip.octets().into() });
        }
        if let (true, Some(node)) = (node_meta_txt, node) {
            let node_name = node_labels(node);
            let owner = match &target {
                Target::Relative(labels) if *labels == node_name => GlueOwner::Target,
                _ => GlueOwner::Node(node_name),
            };
            glue.extend(meta_txt(node).into_iter().map(|rdata| Glue {
                owner: owner.clone(),
                rtype: rtype::TXT,
                rdata,
            }));
        }
        Some(PreparedInstance {
            tags: inst.tags.iter().map(|t| t.to_ascii_lowercase().into_bytes().into()).collect(),
            addresses,
            srv: SrvRecord { fixed, target, glue: glue.into() },
        })
    }

    /// Identity for SRV de-duplication: target and port (S3.5: node, address, port).
    pub fn srv_key(&self) -> (&Target, [u8; 2]) {
        (&self.srv.target, [self.srv.fixed[4], self.srv.fixed[5]])
    }
}

/// S3.5: the SRV target and the IP its additional record carries. `None` for an instance with
/// no address at all (validation rejects those).
fn srv_target(inst: &Instance, node: Option<&Node>) -> Option<(Target, Option<IpAddr>)> {
    if let Some(address) = Family::Any.tagged(&inst.tagged).or(inst.address.as_ref()) {
        return Some(match address {
            Address::Host(host) => (Target::Absolute(absolute_name(host)), None),
            Address::Ip(ip) => (Target::Relative(addr_labels(*ip, &inst.datacenter)), Some(*ip)),
        });
    }
    let node = node?;
    let chosen = node_address(node, Family::Any);
    Some(match chosen {
        Address::Host(host) => (Target::Absolute(absolute_name(host)), None),
        Address::Ip(ip) if *chosen == node.address => (Target::Relative(node_labels(node)), Some(*ip)),
        Address::Ip(ip) => (Target::Relative(addr_labels(*ip, &node.datacenter)), Some(*ip)),
    })
}

/// Prepared answers for a node lookup (S3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecords {
    /// Node name as stored.
    pub name: Box<str>,
    /// A / AAAA / ANY records.
    pub addresses: AddressSet,
    /// One TXT RDATA per meta key.
    pub txt: Box<[Box<[u8]>]>,
}

impl NodeRecords {
    /// Prepares a node.
    pub fn build(node: &Node) -> NodeRecords {
        NodeRecords {
            name: node.name.as_str().into(),
            addresses: AddressSet::build(|family| Some(node_address(node, family).clone())),
            txt: meta_txt(node).into(),
        }
    }
}

/// `<node>.node.<dc>` as wire labels, in stored case (S2.12).
pub fn node_labels(node: &Node) -> Box<[u8]> {
    relative(&format!("{}.node.{}", node.name, node.datacenter))
}

/// `<hex>.addr.<dc>`: lower-case hex of the address bytes (S3.5).
pub fn addr_labels(ip: IpAddr, datacenter: &str) -> Box<[u8]> {
    let hex: String = match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    };
    relative(&format!("{hex}.addr.{datacenter}"))
}

fn relative(name: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 1);
    // Validated names (CatalogData::validate) always encode; an empty result would only make
    // the record point at the domain itself.
    let _ = wire::push_labels(name, &mut out);
    out.into()
}

fn absolute_name(host: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(host.len() + 2);
    if wire::push_name(host, &mut out).is_err() {
        out.clear();
        out.push(0);
    }
    out.into()
}

/// Node meta as TXT RDATA, one per key (S3.6): `key=value` escaped per RFC 1464, or the bare
/// value for keys starting with `rfc1035-`.
pub fn meta_txt(node: &Node) -> Vec<Box<[u8]>> {
    node.meta
        .iter()
        .map(|(key, value)| {
            let text =
                if key.to_ascii_lowercase().starts_with("rfc1035-") { value.clone() } else { rfc1464(key, value) };
            let mut rdata = Vec::with_capacity(text.len() + 2);
            wire::push_character_strings(text.as_bytes(), &mut rdata);
            rdata.into()
        })
        .collect()
}

fn rfc1464(key: &str, value: &str) -> String {
    let mut escaped = key.replace('`', "``").replace('=', "`=");
    let trimmed_start = escaped.trim_start_matches(' ');
    let leading = escaped.len() - trimmed_start.len();
    escaped = format!("{}{}", "` ".repeat(leading), trimmed_start);
    let trimmed_end = escaped.trim_end_matches(' ');
    let trailing = escaped.len() - trimmed_end.len();
    escaped = format!("{}{}", trimmed_end, "` ".repeat(trailing));
    format!("{escaped}={}", value.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{Health, Weights};

    fn node(address: &str, tagged_v4: Option<&str>) -> Node {
        Node {
            name: "Node1".into(),
            datacenter: "dc1".into(),
            address: Address::parse(address).unwrap(),
            tagged: TaggedAddresses { ipv4: tagged_v4.and_then(Address::parse), ipv6: None },
            meta: vec![("rack".into(), "r1".into())],
        }
    }

    fn instance(address: Option<&str>) -> Instance {
        Instance {
            id: "web-1".into(),
            service: "web".into(),
            datacenter: "dc1".into(),
            node: Some("Node1".into()),
            address: address.and_then(Address::parse),
            tagged: TaggedAddresses::default(),
            port: 8080,
            tags: vec!["V1".into()],
            weights: Weights { passing: 10, warning: 1 },
            health: Health::Passing,
        }
    }

    fn target_text(target: &Target) -> String {
        let labels = match target {
            Target::Relative(l) | Target::Absolute(l) => l,
        };
        let mut out = String::new();
        let mut at = 0;
        while at < labels.len() && labels[at] != 0 {
            let len = labels[at] as usize;
            out.push_str(std::str::from_utf8(&labels[at + 1..at + 1 + len]).unwrap());
            out.push('.');
            at += 1 + len;
        }
        out
    }

    #[test]
    fn s3_5_srv_target_table() {
        let cases = [
            // (service address, node address, node lan_ipv4, want target, want glue ip)
            (None, "10.0.0.1", None, "Node1.node.dc1.", Some("10.0.0.1")),
            (None, "10.0.0.1", Some("10.9.9.9"), "0a090909.addr.dc1.", Some("10.9.9.9")),
            (Some("10.0.0.1"), "10.0.0.1", None, "0a000001.addr.dc1.", Some("10.0.0.1")),
            (Some("10.0.0.7"), "10.0.0.1", None, "0a000007.addr.dc1.", Some("10.0.0.7")),
            (Some("2001:db8::1"), "10.0.0.1", None, "20010db8000000000000000000000001.addr.dc1.", Some("2001:db8::1")),
            (Some("api.example.com"), "10.0.0.1", None, "api.example.com.", None),
            (None, "host.example.com", None, "host.example.com.", None),
        ];
        for (svc_addr, node_addr, tagged, want_target, want_glue) in cases {
            let n = node(node_addr, tagged);
            let prepared = PreparedInstance::build(&instance(svc_addr), Some(&n), false).unwrap();
            assert_eq!(target_text(&prepared.srv.target), want_target, "{svc_addr:?} on {node_addr}");
            let glue_ip = prepared.srv.glue.first().map(|g| match g.rdata.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(&*g.rdata).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(&*g.rdata).unwrap()),
            });
            assert_eq!(glue_ip, want_glue.map(|s| s.parse().unwrap()), "{svc_addr:?} on {node_addr}");
        }
    }

    #[test]
    fn s4_4_weight_and_port_in_srv() {
        let mut inst = instance(None);
        let n = node("10.0.0.1", None);
        assert_eq!(PreparedInstance::build(&inst, Some(&n), false).unwrap().srv.fixed, [0, 1, 0, 10, 0x1f, 0x90]);
        inst.health = Health::Warning;
        assert_eq!(PreparedInstance::build(&inst, Some(&n), false).unwrap().srv.fixed, [0, 1, 0, 1, 0x1f, 0x90]);
    }

    #[test]
    fn s3_3_address_choice_per_family() {
        let n = node("10.0.0.1", None);
        let v6_service = PreparedInstance::build(&instance(Some("2001:db8::1")), Some(&n), false).unwrap();
        assert_eq!(v6_service.addresses.a, None, "no fallback to the node's IPv4");
        assert!(matches!(v6_service.addresses.aaaa, Some(AddrRecord::V6(_))));
        let host = PreparedInstance::build(&instance(Some("api.example.com")), Some(&n), false).unwrap();
        assert!(matches!(host.addresses.a, Some(AddrRecord::Host(_))));
        let plain = PreparedInstance::build(&instance(None), Some(&n), false).unwrap();
        assert_eq!(plain.addresses.a, Some(AddrRecord::V4([10, 0, 0, 1])));
        assert_eq!(plain.addresses.aaaa, None);
    }

    #[test]
    fn s3_5_meta_txt_glue_owner() {
        let n = node("10.0.0.1", None);
        let on_node = PreparedInstance::build(&instance(None), Some(&n), true).unwrap();
        assert_eq!(on_node.srv.glue[1].owner, GlueOwner::Target);
        let own_ip = PreparedInstance::build(&instance(Some("10.0.0.5")), Some(&n), true).unwrap();
        assert_eq!(own_ip.srv.glue[1].owner, GlueOwner::Node(node_labels(&n)));
        assert_eq!(own_ip.srv.glue[1].rtype, rtype::TXT);
    }

    #[test]
    fn s3_6_rfc1464_escaping() {
        assert_eq!(rfc1464("rack", "r1"), "rack=r1");
        assert_eq!(rfc1464("a=b", "x`y"), "a`=b=x``y");
        assert_eq!(rfc1464(" k ", "v"), "` k` =v");
        let mut n = node("10.0.0.1", None);
        n.meta = vec![("rfc1035-x".into(), "bare".into())];
        assert_eq!(&*meta_txt(&n)[0], b"\x04bare");
    }
}
