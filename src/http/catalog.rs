//! `/v1/catalog`: the snapshot being served, as JSON, for debugging.
//!
//! Read from the live snapshot's prepared records when asked, never kept: datacenters →
//! services → the instances DNS answers with (eligible ones only: passing, and warning unless
//! `only_passing`), each with its node, the addresses A and AAAA questions get, port, SRV
//! weight and tags (lower-cased, as matched). Services and datacenters are sorted by name.
//! `?service=`, `?node=` and `?dc=` narrow the listing (case-insensitively); `counts` stays the
//! whole snapshot's.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::catalog::Snapshot;
use crate::catalog::records::{Addr, Family, PreparedInstance};
use crate::catalog::snapshot::{Counts, ServiceRecords};

/// The whole document.
#[derive(Debug, Serialize)]
pub struct CatalogView {
    serial: u32,
    synced: bool,
    only_passing: bool,
    counts: CountsView,
    datacenters: BTreeMap<String, DatacenterView>,
}

#[derive(Debug, Serialize)]
struct CountsView {
    services: usize,
    instances: usize,
    nodes: usize,
}

#[derive(Debug, Serialize)]
struct DatacenterView {
    services: BTreeMap<String, Vec<InstanceView>>,
}

#[derive(Debug, Serialize, PartialEq)]
struct InstanceView {
    node: Option<String>,
    addresses: Vec<String>,
    port: u16,
    weight: u16,
    tags: Vec<String>,
}

/// What `/v1/catalog` lists: everything, or what `?service=`, `?node=` and `?dc=` select.
#[derive(Debug, Default, PartialEq)]
pub struct Filter {
    service: Option<String>,
    node: Option<String>,
    dc: Option<String>,
}

impl Filter {
    /// Parses the query string; an unknown parameter is an error sentence.
    pub fn parse(query: Option<&str>) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = Some(percent_decoded(value).to_ascii_lowercase());
            match key {
                "service" => filter.service = value,
                "node" => filter.node = value,
                "dc" => filter.dc = value,
                other => {
                    return Err(format!("unknown parameter {other:?}: /v1/catalog takes service=, node= and dc="));
                }
            }
        }
        Ok(filter)
    }

    fn keeps(wanted: &Option<String>, name: &str) -> bool {
        wanted.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(name))
    }
}

/// `%41` → `A`, `+` → space; malformed escapes stay as they are.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CatalogView {
    /// The view of `snapshot`.
    #[cfg(test)]
    pub fn of(snapshot: &Snapshot) -> CatalogView {
        CatalogView::filtered(snapshot, &Filter::default())
    }

    /// The view of what `filter` selects in `snapshot`; services left with no instance (after
    /// `?node=`) and datacenters left with no service are omitted.
    pub fn filtered(snapshot: &Snapshot, filter: &Filter) -> CatalogView {
        let Counts { services, instances, nodes } = snapshot.counts();
        let datacenters = snapshot
            .datacenters()
            .filter(|dc| Filter::keeps(&filter.dc, &dc.name))
            .map(|dc| {
                let services: BTreeMap<String, Vec<InstanceView>> = dc
                    .services
                    .iter()
                    .map(|(name, records)| (String::from_utf8_lossy(name).into_owned(), records))
                    .filter(|(name, _)| Filter::keeps(&filter.service, name))
                    .map(|(name, records)| {
                        let mut list = instances_of(records);
                        list.retain(|i| {
                            filter.node.is_none() || i.node.as_deref().is_some_and(|n| Filter::keeps(&filter.node, n))
                        });
                        (name, list)
                    })
                    .filter(|(_, list)| filter.node.is_none() || !list.is_empty())
                    .collect();
                (dc.name.to_string(), DatacenterView { services })
            })
            .filter(|(_, dc)| (filter.service.is_none() && filter.node.is_none()) || !dc.services.is_empty())
            .collect();
        CatalogView {
            serial: snapshot.serial(),
            synced: snapshot.is_synced(),
            only_passing: snapshot.options().only_passing,
            counts: CountsView { services, instances, nodes },
            datacenters,
        }
    }
}

fn instances_of(records: &ServiceRecords) -> Vec<InstanceView> {
    records.instances.iter().enumerate().map(|(i, inst)| instance(records, i, inst)).collect()
}

fn instance(records: &ServiceRecords, i: usize, inst: &PreparedInstance) -> InstanceView {
    let mut tags: Vec<String> = (0..records.tags.len().min(64))
        .filter(|bit| inst.tag_bits & (1 << bit) != 0)
        .map(|bit| records.tags[bit].to_string())
        .collect();
    let extra = records.extra_tags.as_deref().unwrap_or_default();
    tags.extend(extra.iter().filter(|(at, _)| *at as usize == i).map(|(_, tag)| tag.to_string()));
    let mut addresses = Vec::new();
    for family in [Family::V4, Family::V6] {
        if let Some(text) = inst.address(family).map(addr_text)
            && !addresses.contains(&text)
        {
            addresses.push(text);
        }
    }
    InstanceView {
        node: inst.node.as_ref().map(|n| first_label(&n.labels)),
        addresses,
        port: u16::from_be_bytes([inst.fixed[4], inst.fixed[5]]),
        weight: u16::from_be_bytes([inst.fixed[2], inst.fixed[3]]),
        tags,
    }
}

fn addr_text(addr: &Addr) -> String {
    match addr {
        Addr::V4(ip) => Ipv4Addr::from(*ip).to_string(),
        Addr::V6(ip) => Ipv6Addr::from(*ip).to_string(),
        Addr::Host(wire) => dotted(wire),
    }
}

/// Wire-format labels as dotted text (`\x04node\x01x…` → `node.x…`).
fn dotted(wire: &[u8]) -> String {
    let mut labels = Vec::new();
    let mut at = 0;
    while let Some(&len) = wire.get(at).filter(|&&len| len != 0) {
        let end = (at + 1 + len as usize).min(wire.len());
        labels.push(String::from_utf8_lossy(&wire[at + 1..end]).into_owned());
        at = end;
    }
    labels.join(".")
}

fn first_label(wire: &[u8]) -> String {
    let len = wire.first().map_or(0, |&l| l as usize);
    String::from_utf8_lossy(wire.get(1..1 + len).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::file::format as catalog_file;
    use crate::catalog::BuildOptions;

    #[test]
    fn view_lists_answerable_instances_with_node_address_port_weight_and_tags() {
        let text = r#"
[[nodes]]
name = "Node1"
address = "10.0.0.1"
[[services]]
name = "web"
node = "Node1"
port = 80
tags = ["V1", "blue"]
weights = { passing = 7, warning = 1 }
[[services]]
name = "web"
id = "web-2"
address = "api.example.com"
port = 81
[[services]]
name = "web"
id = "web-3"
node = "Node1"
port = 82
health = "critical"
"#;
        let data = catalog_file::parse(std::path::Path::new("t.toml"), text, "dc1").unwrap();
        let options = BuildOptions::new("dc1", 5);
        let view = CatalogView::of(&Snapshot::build(&data, Arc::new(options)));
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["counts"], serde_json::json!({"services": 1, "instances": 2, "nodes": 1}));
        assert_eq!(
            json["datacenters"]["dc1"]["services"]["web"],
            serde_json::json!([
                {"node": "Node1", "addresses": ["10.0.0.1"], "port": 80, "weight": 7, "tags": ["v1", "blue"]},
                {"node": null, "addresses": ["api.example.com"], "port": 81, "weight": 1, "tags": []},
            ])
        );
        assert_eq!((json["synced"].as_bool(), json["only_passing"].as_bool()), (Some(true), Some(false)));
    }

    #[test]
    fn filters_select_services_nodes_and_datacenters_and_reject_unknown_parameters() {
        let text = r#"
[[nodes]]
name = "n1"
address = "10.0.0.1"
[[nodes]]
name = "N2"
address = "10.0.0.2"
[[services]]
name = "web"
node = "n1"
port = 80
[[services]]
name = "web"
id = "web-2"
node = "N2"
port = 81
[[services]]
name = "db"
node = "N2"
port = 5432
"#;
        let data = catalog_file::parse(std::path::Path::new("t.toml"), text, "dc1").unwrap();
        let snapshot = Snapshot::build(&data, Arc::new(BuildOptions::new("dc1", 5)));
        let view = |query: &str| {
            let filter = Filter::parse(Some(query)).unwrap();
            serde_json::to_value(CatalogView::filtered(&snapshot, &filter)).unwrap()["datacenters"].clone()
        };
        let services =
            |v: &serde_json::Value| v["dc1"]["services"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>());
        assert_eq!(services(&view("")), Some(vec!["db".into(), "web".into()]));
        assert_eq!(services(&view("service=WEB")), Some(vec!["web".into()]));
        let on_n2 = view("node=n2");
        assert_eq!(services(&on_n2), Some(vec!["db".into(), "web".into()]));
        assert_eq!(on_n2["dc1"]["services"]["web"].as_array().map(Vec::len), Some(1));
        assert_eq!(services(&view("service=db&node=n1")), None, "nothing left: no datacenter listed");
        assert_eq!(services(&view("service=we%62")), Some(vec!["web".into()]), "percent-decoded");
        assert_eq!(view("dc=dc2"), serde_json::json!({}));
        let err = Filter::parse(Some("tag=v1")).unwrap_err();
        assert!(err.contains("unknown parameter \"tag\""), "{err}");
    }
}
