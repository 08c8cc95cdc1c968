//! The catalog as plain data: nodes, service instances, health and weights.
//!
//! Every backend converts its own wire types into these at its edge and calls [`CatalogData::validate`]
//! before publishing. A leaf module: std only, no hickory, tokio or serde wire types.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use thiserror::Error;

/// A set with a fast hasher (validation hashes every name of the catalog).
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// `text` lower-cased, borrowed when it already is (the usual case): names match
/// case-insensitively everywhere (S2.12).
pub fn lower(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// Can `name` be served by DNS: dot-separated labels of letters, digits, `-` and `_`, each
/// 1–63 bytes, at most 253 bytes in all? (The names Consul's DNS interface can answer.)
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Is `name` one DNS label (a service or datacenter name)?
pub fn is_dns_label(name: &str) -> bool {
    is_dns_name(name) && !name.contains('.')
}

/// Where something can be reached: an IP, or a hostname that clients resolve themselves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS hostname (answered as a CNAME, S3.4). Boxed, not a `String`: an [`Address`] is
    /// then 24 bytes, and every instance holds three.
    Host(Box<str>),
}

/// Why a catalog's address cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    /// Nothing (or only spaces).
    #[error("the address is empty")]
    Empty,
    /// Digits and dots (or colons) that are no IP address: a typo, never a hostname.
    #[error(
        "address {0:?} looks like an IP address but is not one (IPv4 is four numbers 0-255 without \
         leading zeros; IPv6 as in RFC 4291)"
    )]
    InvalidIp(String),
}

impl Address {
    /// Parses an address as Consul stores it: an IP literal, or else a hostname. Text that
    /// can only be meant as an IP (`999.1.1.1`, `10.0.0`, `fe80::zz`) is an error, not a
    /// hostname to answer with a CNAME.
    pub fn check(text: &str) -> Result<Address, AddressError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Address::Ip(ip));
        }
        let dotted_numbers = text.trim_end_matches('.').bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if dotted_numbers || text.contains(':') {
            return Err(AddressError::InvalidIp(text.to_owned()));
        }
        Ok(Address::Host(text.trim_end_matches('.').to_ascii_lowercase().into_boxed_str()))
    }

    /// [`Address::check`], for callers that leave out what is not an address.
    pub fn parse(text: &str) -> Option<Address> {
        Address::check(text).ok()
    }

    /// The IP, if this is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Ip(ip) => Some(*ip),
            Address::Host(_) => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => ip.fmt(f),
            Address::Host(host) => f.write_str(host),
        }
    }
}

/// Consul's LAN tagged addresses (`lan_ipv4`, `lan_ipv6`), which take precedence over the plain
/// address when present (S3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaggedAddresses {
    /// `lan_ipv4`.
    pub ipv4: Option<Address>,
    /// `lan_ipv6`.
    pub ipv6: Option<Address>,
}

/// Aggregate health of one instance: its node's checks plus its own (S4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Every check passes (or there are none).
    #[default]
    Passing,
    /// At least one check warns and none is critical.
    Warning,
    /// At least one check is critical (maintenance included).
    Critical,
}

impl Health {
    /// Parses `passing`, `warning` or `critical` (case-insensitive).
    pub fn parse(text: &str) -> Option<Health> {
        match text.to_ascii_lowercase().as_str() {
            "passing" => Some(Health::Passing),
            "warning" => Some(Health::Warning),
            "critical" => Some(Health::Critical),
            _ => None,
        }
    }

    /// Combines two statuses: the worse one wins.
    pub fn worst(self, other: Health) -> Health {
        use Health::*;
        match (self, other) {
            (Critical, _) | (_, Critical) => Critical,
            (Warning, _) | (_, Warning) => Warning,
            _ => Passing,
        }
    }

    /// Is an instance with this health answered? (S4.1: `only_passing` also drops warnings.)
    pub fn is_eligible(self, only_passing: bool) -> bool {
        match self {
            Health::Passing => true,
            Health::Warning => !only_passing,
            Health::Critical => false,
        }
    }
}

/// SRV weights by health (S4.4); Consul's default is 1 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// Weight while passing, 1..=65535.
    pub passing: u16,
    /// Weight while warning, 0..=65535.
    pub warning: u16,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

impl Weights {
    /// The SRV weight for an instance of this health.
    pub fn for_health(self, health: Health) -> u16 {
        match health {
            Health::Passing => self.passing,
            Health::Warning => self.warning,
            Health::Critical => 0,
        }
    }
}

/// An instance's tags: one allocation that instances with the same tags can share (a
/// source that keeps its catalog interns them; most services tag every instance alike).
pub type Tags = Arc<[Arc<str>]>;

/// Tags from strings.
pub fn tags<T: AsRef<str>>(tags: impl IntoIterator<Item = T>) -> Tags {
    tags.into_iter().map(|tag| Arc::from(tag.as_ref())).collect()
}

/// A machine in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node name as registered (DNS matching folds case).
    pub name: String,
    /// Datacenter the node belongs to.
    pub datacenter: String,
    /// `Node.Address`.
    pub address: Address,
    /// `Node.TaggedAddresses` (LAN).
    pub tagged: TaggedAddresses,
    /// `Node.Meta`, answered as TXT (S3.6); kept sorted by key.
    pub meta: Vec<(String, String)>,
}

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `Service.ID`, unique per node.
    pub id: String,
    /// `Service.Service`.
    pub service: String,
    /// Datacenter of the instance (its node's).
    pub datacenter: String,
    /// Name of the node it runs on; `None` for a static instance with its own address only.
    pub node: Option<String>,
    /// `Service.Address`; `None` means "use the node's".
    pub address: Option<Address>,
    /// `Service.TaggedAddresses` (LAN).
    pub tagged: TaggedAddresses,
    /// `Service.Port`.
    pub port: u16,
    /// `Service.Tags`.
    pub tags: Tags,
    /// `Service.Weights`.
    pub weights: Weights,
    /// Aggregate health (S4.1).
    pub health: Health,
}

/// Which mesh name a [`MeshEndpoint`] answers (S2.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeshKind {
    /// `<service>.connect`: sidecar proxies of the service, or its connect-native instances.
    Connect,
    /// `<service>.ingress`: ingress gateways exposing the service.
    Ingress,
}

/// An instance answering for another service's mesh name: `.connect` or `.ingress` (S2.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshEndpoint {
    /// `.connect` or `.ingress`.
    pub kind: MeshKind,
    /// The service asked for (`<service>.connect`).
    pub service: String,
    /// The proxy, gateway or connect-native instance that answers (also listed among the
    /// catalog's instances under its own name).
    pub instance: Instance,
}

/// Everything a backend knows, ready to be built into a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogData {
    /// Every node, all datacenters.
    pub nodes: Vec<Node>,
    /// Every instance, all datacenters.
    pub instances: Vec<Instance>,
    /// Mesh endpoints (`.connect`, `.ingress`), all datacenters; empty for backends without
    /// mesh data.
    pub mesh: Vec<MeshEndpoint>,
}

/// A catalog that cannot be served as it is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// A node name that DNS cannot carry.
    #[error("node {0:?}: name must be letters, digits, '-', '_' and '.' separated labels")]
    InvalidNodeName(String),
    /// The same node twice in one datacenter.
    #[error("node {name:?} is defined twice in datacenter {datacenter:?}")]
    DuplicateNode {
        /// The node.
        name: String,
        /// Its datacenter.
        datacenter: String,
    },
    /// A service name that DNS cannot carry.
    #[error("service {0:?}: name must be letters, digits, '-' and '_' (one DNS label)")]
    InvalidServiceName(String),
    /// An instance on a node that does not exist.
    #[error("instance {id:?} of service {service:?}: node {node:?} is not defined in datacenter {datacenter:?}")]
    UnknownNode {
        /// Instance ID.
        id: String,
        /// Service name.
        service: String,
        /// The missing node.
        node: String,
        /// The instance's datacenter.
        datacenter: String,
    },
    /// An instance with neither a node nor an address.
    #[error("instance {id:?} of service {service:?} has neither a node nor an address")]
    NoAddress {
        /// Instance ID.
        id: String,
        /// Service name.
        service: String,
    },
    /// Two instances with one ID on one node.
    #[error("instance ID {id:?} is used twice on node {node:?}")]
    DuplicateInstance {
        /// Instance ID.
        id: String,
        /// Node name (or "-" for node-less instances).
        node: String,
    },
    /// A datacenter name that DNS cannot carry.
    #[error("datacenter {0:?}: must be one DNS label of letters, digits, '-' and '_'")]
    InvalidDatacenter(String),
}

impl CatalogData {
    /// Checks what the snapshot builder relies on: DNS-safe names, instances on known nodes,
    /// unique node names and instance IDs.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut nodes = FastSet::default();
        for node in &self.nodes {
            check_datacenter(&node.datacenter)?;
            if !is_dns_name(&node.name) {
                return Err(ModelError::InvalidNodeName(node.name.clone()));
            }
            if !nodes.insert((lower(&node.datacenter), lower(&node.name))) {
                return Err(ModelError::DuplicateNode { name: node.name.clone(), datacenter: node.datacenter.clone() });
            }
        }
        let mut ids = FastSet::default();
        for inst in &self.instances {
            validate_instance(inst, &nodes)?;
            let node = inst.node.as_deref().unwrap_or("-");
            if !ids.insert((lower(&inst.datacenter), lower(node), inst.id.as_str())) {
                return Err(ModelError::DuplicateInstance { id: inst.id.clone(), node: node.to_owned() });
            }
        }
        for endpoint in &self.mesh {
            if !is_dns_label(&endpoint.service) {
                return Err(ModelError::InvalidServiceName(endpoint.service.clone()));
            }
            validate_instance(&endpoint.instance, &nodes)?;
        }
        Ok(())
    }
}

fn check_datacenter(dc: &str) -> Result<(), ModelError> {
    if is_dns_label(dc) { Ok(()) } else { Err(ModelError::InvalidDatacenter(dc.to_owned())) }
}

fn validate_instance(inst: &Instance, nodes: &FastSet<(Cow<'_, str>, Cow<'_, str>)>) -> Result<(), ModelError> {
    check_datacenter(&inst.datacenter)?;
    if !is_dns_label(&inst.service) {
        return Err(ModelError::InvalidServiceName(inst.service.clone()));
    }
    match &inst.node {
        Some(node) if !nodes.contains(&(lower(&inst.datacenter), lower(node))) => Err(ModelError::UnknownNode {
            id: inst.id.clone(),
            service: inst.service.clone(),
            node: node.clone(),
            datacenter: inst.datacenter.clone(),
        }),
        None if inst.address.is_none() && inst.tagged == TaggedAddresses::default() => {
            Err(ModelError::NoAddress { id: inst.id.clone(), service: inst.service.clone() })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            datacenter: "dc1".into(),
            address: Address::parse("10.0.0.1").unwrap(),
            tagged: TaggedAddresses::default(),
            meta: vec![],
        }
    }

    fn instance(id: &str, node: Option<&str>) -> Instance {
        Instance {
            id: id.into(),
            service: "web".into(),
            datacenter: "dc1".into(),
            node: node.map(Into::into),
            address: None,
            tagged: TaggedAddresses::default(),
            port: 80,
            tags: Tags::default(),
            weights: Weights::default(),
            health: Health::Passing,
        }
    }

    #[test]
    fn address_parse_tells_ip_from_host() {
        assert_eq!(Address::parse("10.1.2.3"), Some(Address::Ip("10.1.2.3".parse().unwrap())));
        assert_eq!(Address::parse("::1"), Some(Address::Ip("::1".parse().unwrap())));
        assert_eq!(Address::parse("Db.Example.COM."), Some(Address::Host("db.example.com".into())));
        assert_eq!(Address::parse("  "), None);
        for typo in ["999.1.1.1", "10.0.0", "10.0.0.01", "1.2.3.4.5", "256.0.0.1.", "fe80::zz", "::1::2"] {
            let err = Address::check(typo).unwrap_err();
            assert_eq!(err, AddressError::InvalidIp(typo.into()));
            assert!(err.to_string().contains("looks like an IP address but is not one"), "{err}");
        }
        assert_eq!(Address::check(" "), Err(AddressError::Empty));
        assert_eq!(Address::check("10.example"), Ok(Address::Host("10.example".into())), "a name with a digit label");
    }

    #[test]
    fn s4_1_eligibility_and_s4_4_weights() {
        assert!(Health::Warning.is_eligible(false));
        assert!(!Health::Warning.is_eligible(true));
        assert!(!Health::Critical.is_eligible(false));
        let w = Weights { passing: 10, warning: 0 };
        assert_eq!(w.for_health(Health::Passing), 10);
        assert_eq!(w.for_health(Health::Warning), 0);
        assert_eq!(Health::Passing.worst(Health::Warning), Health::Warning);
        assert_eq!(Health::Critical.worst(Health::Warning), Health::Critical);
    }

    #[test]
    fn validate_catches_broken_references() {
        let ok = CatalogData { nodes: vec![node("n1")], instances: vec![instance("a", Some("N1"))], mesh: vec![] };
        assert_eq!(ok.validate(), Ok(()));

        let unknown = CatalogData { nodes: vec![], instances: vec![instance("a", Some("n9"))], mesh: vec![] };
        assert!(matches!(unknown.validate(), Err(ModelError::UnknownNode { .. })));

        let no_addr = CatalogData { nodes: vec![], instances: vec![instance("a", None)], mesh: vec![] };
        assert!(matches!(no_addr.validate(), Err(ModelError::NoAddress { .. })));

        let dup = CatalogData { nodes: vec![node("n1"), node("N1")], ..CatalogData::default() };
        assert!(matches!(dup.validate(), Err(ModelError::DuplicateNode { .. })));

        let twice = CatalogData {
            nodes: vec![node("n1")],
            instances: vec![instance("a", Some("n1")), instance("a", Some("n1"))],
            mesh: vec![],
        };
        assert!(matches!(twice.validate(), Err(ModelError::DuplicateInstance { .. })));

        let mut bad = instance("a", Some("n1"));
        bad.service = "my service".into();
        let bad = CatalogData { nodes: vec![node("n1")], instances: vec![bad], mesh: vec![] };
        assert!(matches!(bad.validate(), Err(ModelError::InvalidServiceName(_))));
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("node-1.rack_2") && is_dns_label("user"));
        assert!(!is_dns_label("a.b") && !is_dns_name("a..b") && !is_dns_name("") && !is_dns_name("a b"));
        assert!(!is_dns_name(&"x".repeat(64)) && is_dns_name(&"x".repeat(63)));
        assert_eq!(lower("Web"), "web");
        assert!(matches!(lower("web"), Cow::Borrowed(_)));
    }
}
