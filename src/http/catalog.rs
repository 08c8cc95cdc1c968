//! `/v1/catalog`: the snapshot being served, as JSON, for debugging.
//!
//! Read from the live snapshot's prepared records when asked, never kept: datacenters →
//! services → the instances DNS answers with (eligible ones only: passing, and warning unless
//! `only_passing`), each with its node, the addresses A and AAAA questions get, port, SRV
//! weight and tags (lower-cased, as matched). Services and datacenters are sorted by name.

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

impl CatalogView {
    /// The view of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> CatalogView {
        let Counts { services, instances, nodes } = snapshot.counts();
        let datacenters = snapshot
            .datacenters()
            .map(|dc| {
                let services = dc
                    .services
                    .iter()
                    .map(|(name, records)| (String::from_utf8_lossy(name).into_owned(), instances_of(records)))
                    .collect();
                (dc.name.to_string(), DatacenterView { services })
            })
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
}
