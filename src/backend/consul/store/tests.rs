use super::*;
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
    let data = store.dc_data("dc1").unwrap().1;
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
    let data = store.dc_data("dc1").unwrap().1;
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
    let (_, data) = store.dc_data("dc1").unwrap();
    data.validate().expect("each (node, ID) once");
    let holders: Vec<&str> = data.instances.iter().filter(|i| i.id == "api-1").map(|i| i.service.as_str()).collect();
    assert_eq!(holders, ["renamed"]);
    assert!(!store.dc("dc1").unwrap().services.contains_key("api"), "api had only that instance");
}

#[test]
fn an_id_repeated_in_one_read_is_kept_once() {
    let mut store = live_store();
    store.apply_health("dc1", "web", vec![entry("web", "web-1", "n1", &[]), entry("web", "web-1", "n1", &[])]);
    let (_, data) = store.dc_data("dc1").unwrap();
    data.validate().expect("each (node, ID) once");
    assert_eq!(data.instances.iter().filter(|i| i.id == "web-1").count(), 1);
}
