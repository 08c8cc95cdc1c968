use super::*;
use crate::catalog::model::CatalogData;
use crate::catalog::model::Health;

fn entry(service: &str, id: &str, node: &str, checks: &[(&str, &str, &str, u64)]) -> WireEntry {
    let checks: Vec<String> = checks
        .iter()
        .map(|(check, service_id, status, index)| {
            format!(r#"{{"Node":"{node}","CheckID":"{check}","ServiceID":"{service_id}","Status":"{status}","ModifyIndex":{index}}}"#)
        })
        .collect();
    let json = format!(
        r#"{{"Node":{{"Node":"{node}","Address":"10.0.0.1"}},"Service":{{"ID":"{id}","Service":"{service}","Port":80}},"Checks":[{}]}}"#,
        checks.join(",")
    );
    serde_json::from_str(&json).unwrap()
}

fn check(node: &str, id: &str, service_id: &str, status: &str, index: u64) -> WireCheck {
    WireCheck {
        node: node.into(),
        check_id: id.into(),
        status: status.into(),
        service_id: service_id.into(),
        modify_index: index,
    }
}

fn list(services: &[(&str, &[&str])]) -> ServiceList {
    services.iter().map(|(name, tags)| (name.to_string(), Some(tags.iter().map(|t| t.to_string()).collect()))).collect()
}

/// A live dc1 with web (two instances on n1, n2) and api (one on n1).
fn live_store() -> Store {
    let mut store = Store::default();
    store.add_dc("dc1", AddressSet::Lan);
    let fetch = store.apply_services("dc1", list(&[("web", &["v1"]), ("api", &[])]));
    assert_eq!(fetch, (vec!["api".to_owned(), "web".to_owned()], vec![]));
    store.apply_nodes("dc1", vec![]);
    store.apply_checks("dc1", vec![], 10);
    store.apply_health("dc1", "web", vec![entry("web", "web-1", "n1", &[]), entry("web", "web-2", "n2", &[])]);
    store.apply_health("dc1", "api", vec![entry("api", "api-1", "n1", &[])]);
    assert!(store.try_go_live("dc1", false));
    store.dirty_service_names();
    store
}

fn dirty_services(store: &mut Store) -> Vec<String> {
    store.dirty_service_names()
}

fn health(store: &Store, service: &str, id: &str) -> Health {
    let dc = store.dc("dc1").unwrap();
    dc.services[service].iter().find(|m| m.instance.id == id).unwrap().instance.health
}

#[test]
fn goes_live_only_when_every_read_is_in() {
    let mut store = Store::default();
    store.add_dc("dc1", AddressSet::Lan);
    store.apply_services("dc1", list(&[("web", &[])]));
    assert!(!store.try_go_live("dc1", true), "a service read is outstanding");
    assert!(!store.try_go_live("dc1", false), "nodes and checks not seen yet");
    store.apply_nodes("dc1", vec![]);
    store.apply_checks("dc1", vec![], 1);
    assert!(store.try_go_live("dc1", false));
    assert!(!store.try_go_live("dc1", false), "only once");
}

#[test]
fn a_service_check_flip_rebuilds_that_service_only() {
    let mut store = live_store();
    store.apply_checks("dc1", vec![check("n1", "service:web-1", "web-1", "critical", 11)], 11);
    assert_eq!(dirty_services(&mut store), ["web"]);
    assert_eq!(health(&store, "web", "web-1"), Health::Critical);
    assert_eq!(health(&store, "web", "web-2"), Health::Passing);
    store.apply_checks("dc1", vec![], 12);
    assert_eq!(dirty_services(&mut store), ["web"], "back to passing");
    assert_eq!(health(&store, "web", "web-1"), Health::Passing);
    store.apply_checks("dc1", vec![], 13);
    assert!(dirty_services(&mut store).is_empty(), "an index move without a change rebuilds nothing");
}

#[test]
fn s4_2_node_maintenance_touches_every_service_on_the_node() {
    let mut store = live_store();
    store.apply_checks("dc1", vec![check("n1", "_node_maintenance", "", "critical", 11)], 11);
    assert_eq!(dirty_services(&mut store), ["api", "web"]);
    assert_eq!(health(&store, "api", "api-1"), Health::Critical);
    assert_eq!(health(&store, "web", "web-2"), Health::Passing, "other node");
}

#[test]
fn services_list_changes_pick_what_to_read() {
    let mut store = live_store();
    let fetch = store.apply_services("dc1", list(&[("web", &["v1", "v2"]), ("api", &[]), ("db", &[])]));
    assert_eq!(fetch.0, ["db", "web"], "new and re-tagged services first");
    assert_eq!(fetch.1, ["api"], "then the others: an unchanged entry can hide a changed instance (H3.4)");
    let fetch = store.apply_services("dc1", list(&[("web", &["v1", "v2"]), ("api", &[]), ("db", &[])]));
    assert_eq!(
        fetch,
        (vec![], vec!["api".to_owned(), "db".to_owned(), "web".to_owned()]),
        "a move with no visible change reads everything"
    );
    store.dirty_service_names();
    store.apply_services("dc1", list(&[("web", &["v1", "v2"])]));
    assert_eq!(dirty_services(&mut store), ["api"], "a deregistered service is rebuilt as gone");
}

#[test]
fn unchanged_health_entries_rebuild_nothing() {
    let mut store = live_store();
    store.apply_health("dc1", "web", vec![entry("web", "web-1", "n1", &[]), entry("web", "web-2", "n2", &[])]);
    assert!(dirty_services(&mut store).is_empty());
    store.apply_health("dc1", "web", vec![entry("web", "web-1", "n1", &[])]);
    assert_eq!(dirty_services(&mut store), ["web"]);
}

#[test]
fn newer_checks_from_health_entries_survive_an_older_checks_list() {
    let mut store = live_store();
    let critical = [("service:web-1", "web-1", "critical", 20)];
    store.apply_health("dc1", "web", vec![entry("web", "web-1", "n1", &critical), entry("web", "web-2", "n2", &[])]);
    store.refresh_health();
    assert_eq!(health(&store, "web", "web-1"), Health::Critical);
    store.apply_checks("dc1", vec![], 15);
    store.refresh_health();
    assert_eq!(health(&store, "web", "web-1"), Health::Critical, "the list at 15 predates the check at 20");
    store.apply_checks("dc1", vec![], 21);
    dirty_services(&mut store);
    assert_eq!(health(&store, "web", "web-1"), Health::Passing, "the list at 21 says it passes again");
}

#[test]
fn s2_10_proxies_feed_connect_names() {
    let mut store = live_store();
    let json = r#"[{"Node":{"Node":"n1","Address":"10.0.0.1"},
        "Service":{"ID":"web-proxy","Service":"web-sidecar-proxy","Kind":"connect-proxy","Port":21000,
                   "Proxy":{"DestinationServiceName":"web"}},"Checks":[]}]"#;
    store.apply_services("dc1", list(&[("web", &["v1"]), ("api", &[]), ("web-sidecar-proxy", &[])]));
    store.apply_health("dc1", "web-sidecar-proxy", serde_json::from_str(json).unwrap());
    assert_eq!(dirty_services(&mut store), ["web-sidecar-proxy", "web.connect"]);
    let data = store.dc_catalog("dc1").unwrap();
    assert_eq!(data.mesh.len(), 1);
    assert_eq!((data.mesh[0].service.as_str(), data.mesh[0].instance.port), ("web", 21000));
    store.apply_checks("dc1", vec![check("n1", "_node_maintenance", "", "critical", 30)], 30);
    assert_eq!(dirty_services(&mut store), ["api", "web", "web-sidecar-proxy", "web.connect"]);
}

#[test]
fn s2_10_ingress_config_entries_feed_ingress_names() {
    let mut store = live_store();
    let gateway = r#"[{"Node":{"Node":"n2","Address":"10.0.0.2"},
        "Service":{"ID":"edge-1","Service":"edge","Kind":"ingress-gateway","Port":8443},"Checks":[]}]"#;
    store.apply_services("dc1", list(&[("web", &["v1"]), ("api", &[]), ("edge", &[])]));
    store.apply_health("dc1", "edge", serde_json::from_str(gateway).unwrap());
    assert_eq!(dirty_services(&mut store), ["edge"], "a gateway without config exposes nothing");
    let entries: Vec<WireIngress> = serde_json::from_str(
        r#"[{"Kind":"ingress-gateway","Name":"edge","Listeners":[{"Port":8080,"Protocol":"http",
            "Services":[{"Name":"web"},{"Name":"*"}]}]}]"#,
    )
    .unwrap();
    store.apply_ingress("dc1", &entries);
    assert_eq!(dirty_services(&mut store), ["web.ingress"], "the wildcard is not answered");
    store.apply_ingress("dc1", &entries);
    assert!(dirty_services(&mut store).is_empty(), "same config, nothing to rebuild");
    store.apply_checks("dc1", vec![check("n2", "_node_maintenance", "", "critical", 40)], 40);
    assert_eq!(dirty_services(&mut store), ["edge", "web", "web.ingress"]);
    let data = store.dc_catalog("dc1").unwrap();
    assert_eq!(data.mesh.iter().filter(|m| m.kind == MeshKind::Ingress).count(), 1);
    store.apply_ingress("dc1", &[]);
    assert_eq!(dirty_services(&mut store), ["web.ingress"], "config deleted");
}

/// Finding: a deregistered node kept answering. The node list dropped it while its instance
/// was still listed; when the services watch then dropped the instance, nothing removed the node.
#[test]
fn a_node_gone_from_the_node_list_goes_with_its_last_instance() {
    let mut store = live_store();
    let mut mirror = Mirror::default();
    store.export_changes(&mut mirror);
    store.apply_services("dc1", list(&[("web", &["v1"]), ("api", &[]), ("newsvc", &[])]));
    store.apply_health("dc1", "newsvc", vec![entry("newsvc", "newsvc-1", "node-new", &[])]);
    store.export_changes(&mut mirror);
    let nodes =
        |store: &Store| store.dc("dc1").unwrap().nodes.keys().cloned().collect::<std::collections::BTreeSet<_>>();
    assert!(nodes(&store).contains("node-new"), "learned from the health entry");
    store.apply_nodes("dc1", vec![]);
    assert!(nodes(&store).contains("node-new"), "still named by its instance");
    store.apply_services("dc1", list(&[("web", &["v1"]), ("api", &[])]));
    assert!(!nodes(&store).contains("node-new"), "gone with its last instance");
    store.export_changes(&mut mirror);
    let data = mirror.data();
    assert!(data.nodes.iter().all(|n| n.name != "node-new"), "and from what is published");
    assert!(nodes(&store).contains("n1"), "nodes with instances stay even when unlisted");
}

/// Found by the `consul_bodies` fuzz target: an ID registered again under a new service name
/// on the same node was held by both services until the old one was read again, so the
/// exported catalog held the instance twice (and failed validation, e.g. on restore).
#[test]
fn an_id_registered_under_a_new_name_leaves_the_old_service() {
    let mut store = live_store();
    let mut mirror = Mirror::default();
    store.export_changes(&mut mirror);
    store.apply_services("dc1", list(&[("web", &["v1"]), ("api", &[]), ("renamed", &[])]));
    store.apply_health("dc1", "renamed", vec![entry("renamed", "api-1", "n1", &[])]);
    let dirty = dirty_services(&mut store);
    assert!(dirty.contains(&"api".to_owned()) && dirty.contains(&"renamed".to_owned()), "{dirty:?}");
    let data = store.dc_catalog("dc1").unwrap();
    data.validate().expect("each (node, ID) once");
    let holders: Vec<&str> = data.instances.iter().filter(|i| i.id == "api-1").map(|i| i.service.as_str()).collect();
    assert_eq!(holders, ["renamed"]);
    assert!(!store.dc("dc1").unwrap().services.contains_key("api"), "api had only that instance");
}

#[test]
fn an_id_repeated_in_one_read_is_kept_once() {
    let mut store = live_store();
    store.apply_health("dc1", "web", vec![entry("web", "web-1", "n1", &[]), entry("web", "web-1", "n1", &[])]);
    let data = store.dc_catalog("dc1").unwrap();
    data.validate().expect("each (node, ID) once");
    assert_eq!(data.instances.iter().filter(|i| i.id == "web-1").count(), 1);
}

/// The catalog sorted, so two exports compare regardless of map order.
fn sorted(mut data: CatalogData) -> CatalogData {
    data.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    data.instances.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
    data.mesh
        .sort_by(|a, b| (a.kind as u8, &a.service, &a.instance.id).cmp(&(b.kind as u8, &b.service, &b.instance.id)));
    data
}

/// A random health read of `service`: instances on a few nodes, some checks failing.
fn random_entries(rng: &mut fastrand::Rng, service: &str) -> Vec<WireEntry> {
    (0..rng.usize(0..4))
        .map(|_| {
            let node = format!("n{}", rng.usize(0..5));
            let id = format!("{service}-{}", rng.usize(0..3));
            let status = ["passing", "passing", "warning", "critical"][rng.usize(0..4)];
            let check = format!("service:{id}");
            entry(service, &id, &node, &[(check.as_str(), id.as_str(), status, rng.u64(1..100))])
        })
        .collect()
}

/// The randomized oracle of the store's export: after any sequence of reads, the mirror fed
/// incrementally by [`Store::export_changes`] holds exactly the store's catalog, and shares
/// every node and instance with the store instead of holding copies.
#[test]
fn incremental_exports_hold_the_store_catalog_and_share_it() {
    const SERVICES: [&str; 4] = ["web", "api", "db", "cache"];
    for seed in 0..30 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut store = live_store();
        let mut mirror = Mirror::default();
        let (name, part) = store.dc_data("dc1").unwrap();
        mirror.replace_datacenter(name, part);
        for step in 0..40 {
            match rng.usize(0..4) {
                0 => {
                    let service = SERVICES[rng.usize(0..SERVICES.len())];
                    let entries = random_entries(&mut rng, service);
                    store.apply_health("dc1", service, entries);
                }
                1 => {
                    let listed: Vec<(usize, u8)> =
                        (0..5).map(|n| (n, rng.u8(0..3))).filter(|(_, ip)| *ip > 0).collect();
                    let nodes: Vec<WireNode> = listed
                        .into_iter()
                        .map(|(n, ip)| serde_json::from_str(&format!(r#"{{"Node":"n{n}","Address":"10.0.0.{ip}"}}"#)))
                        .collect::<Result<_, _>>()
                        .unwrap();
                    store.apply_nodes("dc1", nodes);
                }
                2 => {
                    let checks = (0..rng.usize(0..3))
                        .map(|_| {
                            let node = format!("n{}", rng.usize(0..5));
                            let service = SERVICES[rng.usize(0..SERVICES.len())];
                            let id = if rng.bool() { String::new() } else { format!("{service}-{}", rng.usize(0..3)) };
                            let status = ["warning", "critical"][rng.usize(0..2)];
                            check(&node, &format!("c-{id}"), &id, status, rng.u64(1..200))
                        })
                        .collect();
                    store.apply_checks("dc1", checks, rng.u64(1..200));
                }
                _ => {
                    let listed: Vec<(&str, &[&str])> =
                        SERVICES.iter().filter(|_| rng.u8(0..4) > 0).map(|s| (*s, &[][..])).collect();
                    store.apply_services("dc1", list(&listed));
                }
            }
            store.export_changes(&mut mirror);
            let expected = sorted(store.dc_catalog("dc1").unwrap());
            assert_eq!(sorted(mirror.data()), expected, "seed {seed}, step {step}");
            let (_, part) = store.dc_data("dc1").unwrap();
            for inst in &part.instances {
                let holders = "the store's member and by_node index, the mirror, this export";
                assert_eq!(Arc::strong_count(inst), 4, "seed {seed}, step {step}: {holders}");
            }
            for node in &part.nodes {
                assert_eq!(Arc::strong_count(node), 3, "seed {seed}, step {step}: node {}", node.name);
            }
        }
    }
}
