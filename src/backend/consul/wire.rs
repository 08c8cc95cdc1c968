//! Consul's JSON shapes (docs/consul-api.md H5), private to the backend, and their conversion into
//! [`crate::catalog::model`] values at the edge.
//!
//! Only the fields a DNS answer needs are read ("a stripped down api.Service"); unknown fields
//! are ignored and fields Consul omits when empty (`omitempty`) or sends as `null` default.
//! Do not add fields without a use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::catalog::model::{
    self, Address, AddressError, Health, Instance, Node, TaggedAddresses, Tags, Weights, is_dns_label, is_dns_name,
};

/// `GET /v1/catalog/services`: service name → tags (H5.1).
pub type ServiceList = BTreeMap<String, Option<Vec<String>>>;

/// A node as `/v1/catalog/nodes` and health entries carry it (H5.5).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireNode {
    /// `Node`: the name.
    #[serde(rename = "Node")]
    pub name: String,
    /// `Address`.
    #[serde(default)]
    pub address: String,
    /// `TaggedAddresses`: plain strings; `null` for some external nodes.
    #[serde(default)]
    pub tagged_addresses: Option<HashMap<String, String>>,
    /// `Meta`; may be `null`.
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    /// `CreateIndex`: a node deregistered and registered again gets a new one.
    #[serde(default)]
    pub create_index: u64,
}

/// A service tagged address: `{"Address","Port"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireServiceAddress {
    /// `Address`.
    #[serde(default)]
    pub address: String,
    /// `Port`.
    #[serde(default)]
    pub port: u32,
}

/// `Weights`; `null` for old catalog registrations.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireWeights {
    /// `Passing`.
    #[serde(default)]
    pub passing: i64,
    /// `Warning`.
    #[serde(default)]
    pub warning: i64,
}

/// `Proxy` of a connect proxy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireProxy {
    /// `DestinationServiceName`: the service this sidecar fronts.
    #[serde(default)]
    pub destination_service_name: String,
}

/// `Connect` of a service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireConnect {
    /// `Native`: the service speaks the mesh protocol itself.
    #[serde(default)]
    pub native: bool,
}

/// The `Service` of a health entry (H5.2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireService {
    /// `ID`.
    #[serde(rename = "ID")]
    pub id: String,
    /// `Service`: the name.
    pub service: String,
    /// `Kind`: omitted for typical services; `connect-proxy`, `ingress-gateway`, …
    #[serde(default)]
    pub kind: String,
    /// `Tags`.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// `Address`; `""` = the node's.
    #[serde(default)]
    pub address: String,
    /// `TaggedAddresses`; omitted when empty.
    #[serde(default)]
    pub tagged_addresses: Option<HashMap<String, WireServiceAddress>>,
    /// `Port`; omitted when 0.
    #[serde(default)]
    pub port: u32,
    /// `Weights`.
    #[serde(default)]
    pub weights: Option<WireWeights>,
    /// `Proxy`.
    #[serde(default)]
    pub proxy: Option<WireProxy>,
    /// `Connect`.
    #[serde(default)]
    pub connect: Option<WireConnect>,
}

/// A health check (H5.2 `Checks` items, H5.4).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireCheck {
    /// `Node`.
    pub node: String,
    /// `CheckID`.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// `Status`: `passing`, `warning`, `critical`.
    pub status: String,
    /// `ServiceID`; `""` for node checks.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// `ModifyIndex`.
    #[serde(default)]
    pub modify_index: u64,
}

/// One `/v1/health/service/<s>` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireEntry {
    /// `Node`.
    pub node: WireNode,
    /// `Service`.
    pub service: WireService,
    /// `Checks`: the node's checks and this instance's.
    #[serde(default)]
    pub checks: Option<Vec<WireCheck>>,
}

/// An `ingress-gateway` config entry (`GET /v1/config/ingress-gateway`): which services the
/// gateway `Name` exposes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireIngress {
    /// `Name`: the gateway's service name.
    pub name: String,
    /// `Listeners`.
    #[serde(default)]
    pub listeners: Option<Vec<WireListener>>,
}

/// A listener of an ingress gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireListener {
    /// `Services`: `{"Name": …}`; `*` is a wildcard (not answered).
    #[serde(default)]
    pub services: Option<Vec<WireListenerService>>,
}

/// A service exposed by a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireListenerService {
    /// `Name`.
    pub name: String,
}

impl WireIngress {
    /// The services this gateway exposes, by name (wildcards and names DNS cannot carry left out).
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.listeners
            .iter()
            .flatten()
            .flat_map(|l| l.services.iter().flatten())
            .map(|s| s.name.as_str())
            .filter(|n| is_dns_label(n))
    }
}

/// The part of `/v1/agent/self` we read (H5.8).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentSelf {
    /// `Config`.
    pub config: AgentConfig,
}

/// `Config` of `/v1/agent/self`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentConfig {
    /// `Datacenter`: the agent's, i.e. the local one.
    pub datacenter: String,
}

/// How addresses are chosen: the LAN ones, or the WAN ones for a remote datacenter with
/// `translate_wan_addrs` (S3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSet {
    /// `lan_ipv4`, `lan_ipv6`, `Address`.
    Lan,
    /// `wan_ipv4`, `wan_ipv6`, then `wan` in place of `Address` (and its port).
    Wan,
}

impl AddressSet {
    fn tags(self) -> [&'static str; 3] {
        match self {
            AddressSet::Lan => ["lan_ipv4", "lan_ipv6", ""],
            AddressSet::Wan => ["wan_ipv4", "wan_ipv6", "wan"],
        }
    }
}

/// A service instance with what the mesh names need (S2.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The instance (health filled in later from the checks); shared with on-disk writes.
    pub instance: Arc<Instance>,
    /// `Service.Kind == "connect-proxy"`: the service it fronts.
    pub proxy_for: Option<Box<str>>,
    /// `Service.Connect.Native`.
    pub native: bool,
}

/// The tag lists of a datacenter's instances, one allocation per distinct list: most services
/// tag every instance alike.
#[derive(Debug, Default)]
pub struct TagLists(HashMap<Vec<String>, Tags>);

impl TagLists {
    /// The shared list holding `tags`.
    pub fn get(&mut self, tags: &[String]) -> Tags {
        if let Some(list) = self.0.get(tags) {
            return Arc::clone(list);
        }
        let list = model::tags(tags);
        self.0.insert(tags.to_vec(), Arc::clone(&list));
        list
    }

    /// Forgets the lists no instance holds any more.
    pub fn prune(&mut self) {
        self.0.retain(|_, list| Arc::strong_count(list) > 1);
    }
}

fn tagged(map: Option<&HashMap<String, String>>, set: AddressSet) -> TaggedAddresses {
    let [v4, v6, _] = set.tags();
    let get = |key: &str| map.and_then(|m| m.get(key)).and_then(|a| Address::parse(a));
    TaggedAddresses { ipv4: get(v4), ipv6: get(v6) }
}

impl WireNode {
    /// The model node, or why DNS cannot carry it.
    pub fn to_model(&self, datacenter: &str, set: AddressSet) -> Result<Node, String> {
        if !is_dns_name(&self.name) {
            return Err(format!("node {:?}: not a DNS name", self.name));
        }
        let wan = (set == AddressSet::Wan)
            .then(|| self.tagged_addresses.as_ref().and_then(|m| m.get("wan")))
            .flatten()
            .filter(|a| !a.is_empty());
        let address = Address::check(wan.unwrap_or(&self.address)).map_err(|e| format!("node {:?}: {e}", self.name))?;
        let meta = self.meta.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(Node {
            name: self.name.clone(),
            datacenter: datacenter.to_owned(),
            address,
            tagged: tagged(self.tagged_addresses.as_ref(), set),
            meta,
        })
    }
}

impl WireService {
    /// The model member on `node`, or why DNS cannot carry it; its tags come from `tag_lists`.
    pub fn to_member(
        &self,
        datacenter: &str,
        node: &str,
        set: AddressSet,
        tag_lists: &mut TagLists,
    ) -> Result<Member, String> {
        if !is_dns_label(&self.service) {
            return Err(format!("service {:?}: not a DNS label", self.service));
        }
        let [v4, v6, wan] = set.tags();
        let lookup =
            |key: &str| self.tagged_addresses.as_ref().and_then(|m| m.get(key)).filter(|a| !a.address.is_empty());
        let (address, port) = match lookup(wan).filter(|_| set == AddressSet::Wan) {
            Some(wan) => (wan.address.as_str(), if wan.port > 0 { wan.port } else { self.port }),
            None => (self.address.as_str(), self.port),
        };
        let weights = self.weights.as_ref().map_or_else(Weights::default, |w| Weights {
            passing: w.passing.clamp(1, 65535) as u16,
            warning: w.warning.clamp(0, 65535) as u16,
        });
        let instance = Instance {
            id: self.id.clone(),
            service: self.service.clone(),
            datacenter: datacenter.to_owned(),
            node: Some(node.to_owned()),
            address: match Address::check(address) {
                Ok(address) => Some(address),
                Err(AddressError::Empty) => None, // the node's address serves
                Err(e) => return Err(format!("service {:?} instance {:?}: {e}", self.service, self.id)),
            },
            tagged: TaggedAddresses {
                ipv4: lookup(v4).and_then(|a| Address::parse(&a.address)),
                ipv6: lookup(v6).and_then(|a| Address::parse(&a.address)),
            },
            port: u16::try_from(port).unwrap_or(0),
            tags: tag_lists.get(self.tags.as_deref().unwrap_or_default()),
            weights,
            health: Health::Passing,
        };
        let proxy_for = (self.kind == "connect-proxy")
            .then(|| self.proxy.as_ref().map(|p| p.destination_service_name.clone()))
            .flatten()
            .filter(|d| is_dns_label(d))
            .map(String::into_boxed_str);
        let native = self.connect.as_ref().is_some_and(|c| c.native);
        Ok(Member { instance: Arc::new(instance), proxy_for, native })
    }
}

impl Member {
    /// The member an entry describes.
    pub fn from_entry(
        entry: &WireEntry,
        datacenter: &str,
        set: AddressSet,
        tag_lists: &mut TagLists,
    ) -> Result<Member, String> {
        entry.service.to_member(datacenter, &entry.node.name, set, tag_lists)
    }
}

/// S4.1/S4.3: the worst known status among `checks`; unknown statuses do not count.
pub fn aggregate<'c>(checks: impl Iterator<Item = &'c str>) -> Health {
    checks.filter_map(Health::parse).fold(Health::Passing, Health::worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = r#"{
      "Node": {"ID": "x", "Node": "node-a", "Address": "10.20.0.11", "Datacenter": "dc1",
               "TaggedAddresses": {"lan": "10.20.0.11", "lan_ipv4": "10.20.0.11", "wan": "198.51.100.11", "wan_ipv4": "198.51.100.11"},
               "Meta": {"rack": "r1", "consul-version": "1.19.2"}, "CreateIndex": 12, "ModifyIndex": 15},
      "Service": {"ID": "user-1", "Service": "user", "Tags": ["v1", "primary"], "Address": "10.20.0.31",
                  "TaggedAddresses": {"lan_ipv4": {"Address": "10.20.0.31", "Port": 8001},
                                      "wan": {"Address": "203.0.113.31", "Port": 18001}},
                  "Meta": {"version": "1.4.2"}, "Port": 8001, "Weights": {"Passing": 10, "Warning": 1},
                  "EnableTagOverride": false, "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                  "Connect": {}, "PeerName": "", "CreateIndex": 140, "ModifyIndex": 140},
      "Checks": [{"Node": "node-a", "CheckID": "serfHealth", "Status": "passing", "ServiceID": "", "ModifyIndex": 12},
                 {"Node": "node-a", "CheckID": "service:user-1", "Status": "warning", "ServiceID": "user-1", "ModifyIndex": 4170}]
    }"#;

    #[test]
    fn h5_2_entry_converts_with_lan_addresses() {
        let entry: WireEntry = serde_json::from_str(ENTRY).unwrap();
        let member = Member::from_entry(&entry, "dc1", AddressSet::Lan, &mut TagLists::default()).unwrap();
        let inst = &member.instance;
        assert_eq!((inst.id.as_str(), inst.service.as_str(), inst.port), ("user-1", "user", 8001));
        assert_eq!(inst.address, Address::parse("10.20.0.31"));
        assert_eq!(inst.tagged.ipv4, Address::parse("10.20.0.31"));
        assert_eq!(inst.weights, Weights { passing: 10, warning: 1 });
        assert_eq!(inst.node.as_deref(), Some("node-a"));
        assert_eq!(member.proxy_for, None);
        let node = entry.node.to_model("dc1", AddressSet::Lan).unwrap();
        assert_eq!(node.address, Address::parse("10.20.0.11").unwrap());
        assert_eq!(node.meta[0], ("consul-version".into(), "1.19.2".into()), "meta sorted by key");
        let checks = entry.checks.unwrap();
        assert_eq!(aggregate(checks.iter().map(|c| c.status.as_str())), Health::Warning);
    }

    #[test]
    fn s3_3_wan_translation_for_remote_datacenters() {
        let entry: WireEntry = serde_json::from_str(ENTRY).unwrap();
        let member = Member::from_entry(&entry, "dc2", AddressSet::Wan, &mut TagLists::default()).unwrap();
        assert_eq!(member.instance.address, Address::parse("203.0.113.31"));
        assert_eq!(member.instance.port, 18001);
        assert_eq!(member.instance.tagged, TaggedAddresses::default(), "no wan_ipv4 on the service");
        let node = entry.node.to_model("dc2", AddressSet::Wan).unwrap();
        assert_eq!(node.address, Address::parse("198.51.100.11").unwrap());
        assert_eq!(node.tagged.ipv4, Address::parse("198.51.100.11"));
    }

    #[test]
    fn omitted_and_null_fields_default() {
        let minimal = r#"{"Node": {"Node": "ext", "Address": "payments.example.net", "TaggedAddresses": null, "Meta": null},
                          "Service": {"ID": "pay", "Service": "payments", "Tags": [], "Address": "", "Weights": null},
                          "Checks": []}"#;
        let entry: WireEntry = serde_json::from_str(minimal).unwrap();
        let member = Member::from_entry(&entry, "dc1", AddressSet::Lan, &mut TagLists::default()).unwrap();
        assert_eq!((member.instance.port, member.instance.address.clone()), (0, None), "port omitted when 0");
        assert_eq!(member.instance.weights, Weights::default());
        let node = entry.node.to_model("dc1", AddressSet::Lan).unwrap();
        assert_eq!(node.address, Address::Host("payments.example.net".into()));
    }

    #[test]
    fn s2_10_proxies_and_native_services() {
        let proxy = r#"{"ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy",
                        "Port": 21000, "Proxy": {"DestinationServiceName": "web"}}"#;
        let proxy: WireService = serde_json::from_str(proxy).unwrap();
        assert_eq!(
            proxy.to_member("dc1", "n1", AddressSet::Lan, &mut TagLists::default()).unwrap().proxy_for.as_deref(),
            Some("web")
        );
        let native: WireService =
            serde_json::from_str(r#"{"ID": "db", "Service": "db", "Connect": {"Native": true}}"#).unwrap();
        assert!(native.to_member("dc1", "n1", AddressSet::Lan, &mut TagLists::default()).unwrap().native);
    }

    #[test]
    fn names_dns_cannot_carry_are_refused() {
        let bad: WireService = serde_json::from_str(r#"{"ID": "x", "Service": "my service"}"#).unwrap();
        assert!(bad.to_member("dc1", "n1", AddressSet::Lan, &mut TagLists::default()).is_err());
        let node: WireNode = serde_json::from_str(r#"{"Node": "bad node", "Address": "10.0.0.1"}"#).unwrap();
        assert!(node.to_model("dc1", AddressSet::Lan).is_err());
    }

    #[test]
    fn an_address_that_looks_like_an_ip_but_is_not_one_is_skipped_with_a_sentence() {
        let node: WireNode = serde_json::from_str(r#"{"Node": "n1", "Address": "999.1.1.1"}"#).unwrap();
        let reason = node.to_model("dc1", AddressSet::Lan).unwrap_err();
        assert!(reason.starts_with("node \"n1\": address \"999.1.1.1\" looks like an IP address"), "{reason}");
        let service: WireService =
            serde_json::from_str(r#"{"ID": "web-1", "Service": "web", "Address": "10.0.0.300"}"#).unwrap();
        let reason = service.to_member("dc1", "n1", AddressSet::Lan, &mut TagLists::default()).unwrap_err();
        assert!(reason.contains("instance \"web-1\": address \"10.0.0.300\" looks like"), "{reason}");
        let empty: WireService = serde_json::from_str(r#"{"ID": "web-2", "Service": "web", "Address": ""}"#).unwrap();
        assert_eq!(
            empty.to_member("dc1", "n1", AddressSet::Lan, &mut TagLists::default()).unwrap().instance.address,
            None,
            "node's address"
        );
    }

    #[test]
    fn instances_with_the_same_tags_share_one_list() {
        let mut lists = TagLists::default();
        let service = |id: &str, tags: &str| -> WireService {
            serde_json::from_str(&format!(r#"{{"ID": "{id}", "Service": "web", "Tags": {tags}}}"#)).unwrap()
        };
        let a = service("a", r#"["v1", "blue"]"#).to_member("dc1", "n1", AddressSet::Lan, &mut lists).unwrap();
        let b = service("b", r#"["v1", "blue"]"#).to_member("dc1", "n2", AddressSet::Lan, &mut lists).unwrap();
        let c = service("c", r#"["v2"]"#).to_member("dc1", "n2", AddressSet::Lan, &mut lists).unwrap();
        assert!(Arc::ptr_eq(&a.instance.tags, &b.instance.tags));
        assert_eq!(&*c.instance.tags, &[Arc::from("v2")]);
        drop(c);
        lists.prune();
        assert_eq!(lists.0.len(), 1, "the list no instance holds is forgotten");
    }

    #[test]
    fn s4_3_unknown_statuses_do_not_exclude() {
        assert_eq!(aggregate(["passing", "maintenance-ish"].into_iter()), Health::Passing);
        assert_eq!(aggregate(["passing", "critical", "warning"].into_iter()), Health::Critical);
        assert_eq!(aggregate(std::iter::empty()), Health::Passing);
    }
}
