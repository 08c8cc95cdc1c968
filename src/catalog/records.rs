//! Prepared records: what the answer path needs about each node and instance, in a compact
//! form worked out once when a snapshot is built.
//!
//! A node is prepared once ([`NodeRecords`]: its name as wire labels, its registered
//! addresses, its meta as TXT, the SRV target its instances use) and shared by `Arc` with every
//! instance on it. An instance ([`PreparedInstance`], 48 bytes) keeps only its own address (if
//! any), priority/weight/port, tag bits and flags; the address a query type gets (S3.3) and the
//! SRV target (S3.5) are derived from that and the node at query time, which costs a few
//! branches and saves the memory of storing every choice. Names here are *relative*: labels
//! without the domain, which the answer path appends in the spelling the question used (S2.1).

use std::net::IpAddr;
use std::sync::Arc;

use crate::catalog::model::{Address, Instance, Node, TaggedAddresses};
use crate::wire::{self, rtype};

/// An address as DNS uses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
    /// A hostname, as an absolute wire-format name (answered as CNAME, S3.4).
    Host(Box<[u8]>),
}

impl Addr {
    fn from_address(address: &Address) -> Addr {
        match address {
            Address::Ip(IpAddr::V4(ip)) => Addr::V4(ip.octets()),
            Address::Ip(IpAddr::V6(ip)) => Addr::V6(ip.octets()),
            Address::Host(host) => Addr::Host(absolute_name(host)),
        }
    }

    /// The record type this address answers with.
    pub fn rtype(&self) -> u16 {
        match self {
            Addr::V4(_) => rtype::A,
            Addr::V6(_) => rtype::AAAA,
            Addr::Host(_) => rtype::CNAME,
        }
    }

    /// RDATA of that record.
    pub fn rdata(&self) -> &[u8] {
        match self {
            Addr::V4(ip) => ip,
            Addr::V6(ip) => ip,
            Addr::Host(name) => name,
        }
    }

    /// An IP, not a hostname?
    pub fn is_ip(&self) -> bool {
        !matches!(self, Addr::Host(_))
    }

    /// Does this address answer `family`? An IP of the asked family, or a hostname (CNAME). A
    /// v6 address never answers A: no fallback to another address (S3.3).
    pub fn fits(&self, family: Family) -> bool {
        matches!(
            (family, self),
            (_, Addr::Host(_)) | (Family::Any, _) | (Family::V4, Addr::V4(_)) | (Family::V6, Addr::V6(_))
        )
    }
}

/// Which addresses a query type wants (S3.3): A → IPv4, AAAA → IPv6, ANY and SRV → either,
/// IPv6 first among tagged addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A.
    V4 = 0,
    /// AAAA.
    V6 = 1,
    /// ANY and SRV.
    Any = 2,
}

/// Families in index order.
pub const FAMILIES: [Family; 3] = [Family::V4, Family::V6, Family::Any];

/// Registered addresses of a node or service: the plain one and the LAN tagged ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Addresses {
    /// `Address`.
    pub plain: Option<Addr>,
    /// `TaggedAddresses.lan_ipv4`.
    pub ipv4: Option<Addr>,
    /// `TaggedAddresses.lan_ipv6`.
    pub ipv6: Option<Addr>,
}

impl Addresses {
    fn new(plain: Option<&Address>, tagged: &TaggedAddresses) -> Addresses {
        Addresses {
            plain: plain.map(Addr::from_address),
            ipv4: tagged.ipv4.as_ref().map(Addr::from_address),
            ipv6: tagged.ipv6.as_ref().map(Addr::from_address),
        }
    }

    /// S3.3 for one holder: the tagged address of the family, else the plain one.
    pub fn choose(&self, family: Family) -> Option<&Addr> {
        let tagged = match family {
            Family::V4 => self.ipv4.as_ref(),
            Family::V6 => self.ipv6.as_ref(),
            Family::Any => self.ipv6.as_ref().or(self.ipv4.as_ref()),
        };
        tagged.or(self.plain.as_ref())
    }
}

/// An instance's own addresses. Almost always none or one plain address; the general case is
/// boxed to keep [`PreparedInstance`] small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Own {
    /// Uses its node's address.
    None,
    /// `Service.Address` only.
    Plain(Addr),
    /// With tagged addresses.
    Tagged(Box<Addresses>),
}

impl Own {
    fn new(inst: &Instance) -> Own {
        let addresses = Addresses::new(inst.address.as_ref(), &inst.tagged);
        match addresses {
            Addresses { plain: None, ipv4: None, ipv6: None } => Own::None,
            Addresses { plain: Some(plain), ipv4: None, ipv6: None } => Own::Plain(plain),
            tagged => Own::Tagged(Box::new(tagged)),
        }
    }

    fn choose(&self, family: Family) -> Option<&Addr> {
        match self {
            Own::None => None,
            Own::Plain(addr) => Some(addr),
            Own::Tagged(addresses) => addresses.choose(family),
        }
    }
}

/// The SRV target of instances that use their node's address (S3.5 rows 1 and 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeTarget {
    /// `<node>.node.<dc>`, glue = this IP (the node's address is an IP and is the one chosen).
    Node(Addr),
    /// `<hex>.addr.<dc>`: a tagged address differs from `Node.Address`.
    Addr(Addr),
    /// The node's address is a hostname (absolute wire name).
    Host(Box<[u8]>),
}

/// A node's prepared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecords {
    /// `<node>.node.<dc>` as wire labels, stored case (S2.12).
    pub labels: Box<[u8]>,
    /// Registered addresses (node lookups apply S3.3 to these).
    pub addresses: Addresses,
    /// The SRV target of instances without their own address.
    pub target: NodeTarget,
    /// One TXT RDATA per meta key (S3.6).
    pub txt: Box<[Box<[u8]>]>,
}

impl NodeRecords {
    /// Prepares a node.
    pub fn build(node: &Node) -> NodeRecords {
        let addresses = Addresses::new(Some(&node.address), &node.tagged);
        let plain = Addr::from_address(&node.address);
        let chosen = addresses.choose(Family::Any).cloned().unwrap_or_else(|| plain.clone());
        let target = match chosen {
            Addr::Host(name) => NodeTarget::Host(name),
            ip if ip == plain => NodeTarget::Node(ip),
            ip => NodeTarget::Addr(ip),
        };
        NodeRecords {
            labels: relative(&format!("{}.node.{}", node.name, node.datacenter)),
            addresses,
            target,
            txt: meta_txt(&node.meta),
        }
    }
}

/// Where an SRV record points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The node's name; glue is the address.
    Node(&'a NodeRecords, &'a Addr),
    /// `<hex>.addr.<dc>`; glue is the address.
    Addr(&'a Addr),
    /// An external hostname (absolute wire name); no glue.
    Host(&'a [u8]),
}

/// What makes two SRV records the same: target and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrvKey<'a> {
    /// A node target.
    Node(*const NodeRecords, [u8; 2]),
    /// An `.addr.` target.
    Addr(&'a Addr, [u8; 2]),
    /// A hostname target.
    Host(&'a [u8], [u8; 2]),
}

/// Per-instance flags (see [`PreparedInstance::flags`]).
pub mod flags {
    /// The instance answers family `f` with an IP: bit `f`.
    pub const IP: u16 = 1;
    /// The instance answers family `f` with a hostname (CNAME): bit `3 + f`.
    pub const HOST: u16 = 1 << 3;
    /// Its SRV record equals an earlier instance's (S3.5 de-duplication).
    pub const SRV_DUP: u16 = 1 << 6;
    /// Its record for family `f` equals an earlier instance's (S3.4): bit `7 + f`.
    pub const ADDR_DUP: u16 = 1 << 7;
}

/// Everything the answer path needs about one eligible instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedInstance {
    /// Its node (shared), if it has one.
    pub node: Option<Arc<NodeRecords>>,
    /// Its own addresses.
    pub own: Own,
    /// SRV priority (1), weight (S4.4) and port, big-endian.
    pub fixed: [u8; 6],
    /// Which records it has and which duplicate an earlier instance's ([`flags`]).
    pub flags: u16,
    /// Bit `i` set: carries the service's tag `i` (the first 64 distinct tags).
    pub tag_bits: u64,
}

impl PreparedInstance {
    /// Prepares an instance on its node (`None` only for node-less static instances). Flags
    /// for duplicates and tag bits are filled in by the service builder.
    pub fn build(inst: &Instance, node: Option<Arc<NodeRecords>>) -> PreparedInstance {
        let weight = inst.weights.for_health(inst.health);
        let [w0, w1] = weight.to_be_bytes();
        let [p0, p1] = inst.port.to_be_bytes();
        let mut prepared =
            PreparedInstance { node, own: Own::new(inst), fixed: [0, 1, w0, w1, p0, p1], flags: 0, tag_bits: 0 };
        for family in FAMILIES {
            match prepared.address(family) {
                Some(addr) if addr.is_ip() => prepared.flags |= flags::IP << family as u16,
                Some(_) => prepared.flags |= flags::HOST << family as u16,
                None => {}
            }
        }
        prepared
    }

    /// S3.3: the service's own tagged or plain address, only if it has none the node's; `None`
    /// if that address does not suit the family.
    pub fn address(&self, family: Family) -> Option<&Addr> {
        let chosen = match self.own.choose(family) {
            Some(own) => Some(own),
            None => self.node.as_deref().and_then(|n| n.addresses.choose(family)),
        };
        chosen.filter(|addr| addr.fits(family))
    }

    /// S3.5: where the SRV record points. `None` only for an instance with no address at all.
    pub fn target(&self) -> Option<Target<'_>> {
        if let Some(own) = self.own.choose(Family::Any) {
            return Some(match own {
                Addr::Host(name) => Target::Host(name),
                ip => Target::Addr(ip),
            });
        }
        let node = self.node.as_deref()?;
        Some(match &node.target {
            NodeTarget::Node(ip) => Target::Node(node, ip),
            NodeTarget::Addr(ip) => Target::Addr(ip),
            NodeTarget::Host(name) => Target::Host(name),
        })
    }

    /// Identity of its SRV record for de-duplication (S3.5): target and port.
    pub fn srv_key(&self) -> Option<SrvKey<'_>> {
        let port = [self.fixed[4], self.fixed[5]];
        Some(match self.target()? {
            Target::Node(node, _) => SrvKey::Node(node, port),
            Target::Addr(ip) => SrvKey::Addr(ip, port),
            Target::Host(name) => SrvKey::Host(name, port),
        })
    }

    /// Has an IP record for the family?
    pub fn has_ip(&self, family: Family) -> bool {
        self.flags & (flags::IP << family as u16) != 0
    }

    /// Has a CNAME record for the family?
    pub fn has_host(&self, family: Family) -> bool {
        self.flags & (flags::HOST << family as u16) != 0
    }
}

/// Longest `<hex>.addr` label pair: 32 hex digits for IPv6.
pub const ADDR_LABELS_MAX: usize = 1 + 32 + 5;

/// `<hex>.addr` labels of an IP (S3.5: lower-case hex of the address bytes) in a stack
/// buffer; returns the buffer and the used length.
pub fn addr_labels(ip: &Addr) -> ([u8; ADDR_LABELS_MAX], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = ip.rdata();
    let mut out = [0u8; ADDR_LABELS_MAX];
    out[0] = (bytes.len() * 2) as u8;
    for (i, b) in bytes.iter().enumerate() {
        out[1 + 2 * i] = HEX[(b >> 4) as usize];
        out[2 + 2 * i] = HEX[(b & 15) as usize];
    }
    let end = 1 + bytes.len() * 2;
    out[end..end + 5].copy_from_slice(b"\x04addr");
    (out, end + 5)
}

/// Wire labels of a dotted name (validated names always encode).
pub fn relative(name: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 1);
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
pub fn meta_txt(meta: &[(String, String)]) -> Box<[Box<[u8]>]> {
    meta.iter()
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
    let escaped = key.replace('`', "``").replace('=', "`=");
    let body = escaped.trim_start_matches(' ');
    let leading = escaped.len() - body.len();
    let core = body.trim_end_matches(' ');
    let trailing = body.len() - core.len();
    format!("{}{core}{}={}", "` ".repeat(leading), "` ".repeat(trailing), value.replace('`', "``"))
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
            tags: crate::catalog::model::tags(["V1"]),
            weights: Weights { passing: 10, warning: 1 },
            health: Health::Passing,
        }
    }

    fn prepare(svc_addr: Option<&str>, node_addr: &str, tagged: Option<&str>) -> PreparedInstance {
        PreparedInstance::build(&instance(svc_addr), Some(Arc::new(NodeRecords::build(&node(node_addr, tagged)))))
    }

    fn target_text(target: Target<'_>) -> String {
        let mut labels = Vec::new();
        match target {
            Target::Node(node, _) => labels.extend_from_slice(&node.labels),
            Target::Addr(ip) => {
                let (buf, len) = addr_labels(ip);
                labels.extend_from_slice(&buf[..len]);
            }
            Target::Host(name) => labels.extend_from_slice(name),
        }
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

    fn glue(target: Target<'_>) -> Option<IpAddr> {
        match target {
            Target::Node(_, Addr::V4(ip)) | Target::Addr(Addr::V4(ip)) => Some(IpAddr::from(*ip)),
            Target::Node(_, Addr::V6(ip)) | Target::Addr(Addr::V6(ip)) => Some(IpAddr::from(*ip)),
            _ => None,
        }
    }

    #[test]
    fn s3_5_srv_target_table() {
        let cases = [
            // (service address, node address, node lan_ipv4, want target, want glue ip)
            (None, "10.0.0.1", None, "Node1.node.dc1.", Some("10.0.0.1")),
            (None, "10.0.0.1", Some("10.9.9.9"), "0a090909.addr.", Some("10.9.9.9")),
            (Some("10.0.0.1"), "10.0.0.1", None, "0a000001.addr.", Some("10.0.0.1")),
            (Some("10.0.0.7"), "10.0.0.1", None, "0a000007.addr.", Some("10.0.0.7")),
            (Some("2001:db8::1"), "10.0.0.1", None, "20010db8000000000000000000000001.addr.", Some("2001:db8::1")),
            (Some("api.example.com"), "10.0.0.1", None, "api.example.com.", None),
            (None, "host.example.com", None, "host.example.com.", None),
        ];
        for (svc_addr, node_addr, tagged, want_target, want_glue) in cases {
            let prepared = prepare(svc_addr, node_addr, tagged);
            let target = prepared.target().unwrap();
            assert_eq!(target_text(target), want_target, "{svc_addr:?} on {node_addr}");
            assert_eq!(glue(target), want_glue.map(|s| s.parse().unwrap()), "{svc_addr:?} on {node_addr}");
        }
    }

    #[test]
    fn s4_4_weight_and_port_in_srv() {
        let n = Arc::new(NodeRecords::build(&node("10.0.0.1", None)));
        let mut inst = instance(None);
        assert_eq!(PreparedInstance::build(&inst, Some(n.clone())).fixed, [0, 1, 0, 10, 0x1f, 0x90]);
        inst.health = Health::Warning;
        assert_eq!(PreparedInstance::build(&inst, Some(n)).fixed, [0, 1, 0, 1, 0x1f, 0x90]);
    }

    #[test]
    fn s3_3_address_choice_per_family() {
        let v6_service = prepare(Some("2001:db8::1"), "10.0.0.1", None);
        assert_eq!(v6_service.address(Family::V4), None, "no fallback to the node's IPv4");
        assert!(matches!(v6_service.address(Family::V6), Some(Addr::V6(_))));
        assert!(!v6_service.has_ip(Family::V4) && v6_service.has_ip(Family::V6) && v6_service.has_ip(Family::Any));
        let host = prepare(Some("api.example.com"), "10.0.0.1", None);
        assert!(matches!(host.address(Family::V4), Some(Addr::Host(_))));
        assert!(host.has_host(Family::V4) && !host.has_ip(Family::V4));
        let plain = prepare(None, "10.0.0.1", None);
        assert_eq!(plain.address(Family::V4), Some(&Addr::V4([10, 0, 0, 1])));
        assert_eq!(plain.address(Family::V6), None);
        let tagged = prepare(None, "10.0.0.1", Some("10.9.9.9"));
        assert_eq!(tagged.address(Family::V4), Some(&Addr::V4([10, 9, 9, 9])), "tagged lan_ipv4 wins");
    }

    #[test]
    fn prepared_instance_stays_small() {
        assert!(std::mem::size_of::<PreparedInstance>() <= 48, "{}", std::mem::size_of::<PreparedInstance>());
    }

    #[test]
    fn s3_6_rfc1464_escaping() {
        assert_eq!(rfc1464("rack", "r1"), "rack=r1");
        assert_eq!(rfc1464("a=b", "x`y"), "a`=b=x``y");
        assert_eq!(rfc1464(" k ", "v"), "` k` =v");
        assert_eq!(&*meta_txt(&[("rfc1035-x".into(), "bare".into())])[0], b"\x04bare");
    }
}
