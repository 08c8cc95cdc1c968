use super::*;
use crate::catalog::model::{Address, Health, MeshEndpoint, TaggedAddresses, Weights};

fn options() -> Arc<BuildOptions> {
    Arc::new(BuildOptions::new("dc1", 5))
}

fn node(name: &str, address: &str) -> Node {
    Node {
        name: name.into(),
        datacenter: "dc1".into(),
        address: Address::parse(address).unwrap(),
        tagged: TaggedAddresses::default(),
        meta: vec![],
    }
}

fn instance(service: &str, id: &str, node: &str, address: Option<&str>) -> Instance {
    Instance {
        id: id.into(),
        service: service.into(),
        datacenter: "dc1".into(),
        node: Some(node.into()),
        address: address.and_then(Address::parse),
        tagged: TaggedAddresses::default(),
        port: 80,
        tags: Default::default(),
        weights: Weights::default(),
        health: Health::Passing,
    }
}

fn data() -> CatalogData {
    CatalogData {
        nodes: vec![node("n1", "10.0.0.1"), node("n2", "10.0.0.2")],
        instances: vec![
            instance("web", "web-1", "n1", None),
            instance("api", "api-1", "n2", Some("10.0.9.1")),
            instance("consul", "consul", "n1", None),
        ],
        mesh: vec![],
    }
}

/// What the DNS layer can see of a snapshot: counts, names with sizes, reverse map, NS count.
type View = (Counts, Vec<String>, Vec<(IpAddr, Vec<u8>)>, usize);

fn view(s: &Snapshot) -> View {
    let mut names: Vec<String> = s
        .datacenters()
        .flat_map(|dc| {
            let services =
                dc.services.iter().map(|(k, r)| format!("svc {} {}", String::from_utf8_lossy(k), r.instances.len()));
            let connect =
                dc.connect.iter().map(|(k, r)| format!("connect {} {}", String::from_utf8_lossy(k), r.instances.len()));
            let nodes = dc.nodes.keys().map(|k| format!("node {}", String::from_utf8_lossy(k)));
            services.chain(connect).chain(nodes).collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    let mut reverse: Vec<(IpAddr, Vec<u8>)> = s.reverse.iter().map(|(ip, p)| (*ip, p.labels().to_vec())).collect();
    reverse.sort();
    (s.counts(), names, reverse, s.name_servers().len())
}

#[test]
fn update_equals_a_full_build_and_shares_what_did_not_change() {
    let before = Snapshot::build(&data(), options());
    let mut after = data();
    after.nodes.push(node("n3", "10.0.0.3"));
    after.instances.push(instance("web", "web-3", "n3", None));
    after.instances.retain(|i| i.service != "api");
    after.nodes[0].address = Address::parse("10.0.0.11").unwrap();
    let mut proxy = instance("web-sidecar-proxy", "web-proxy", "n3", None);
    proxy.port = 21000;
    after.instances.push(proxy.clone());
    after.mesh.push(MeshEndpoint { kind: MeshKind::Connect, service: "web".into(), instance: proxy });
    let web: Vec<&Instance> = after.instances.iter().filter(|i| i.service == "web").collect();
    let consul: Vec<&Instance> = after.instances.iter().filter(|i| i.service == "consul").collect();
    let proxies: Vec<&Instance> = after.instances.iter().filter(|i| i.service == "web-sidecar-proxy").collect();
    let update = Update {
        nodes: vec![&after.nodes[0], &after.nodes[2]],
        removed_nodes: vec![],
        services: vec![
            ServiceUpdate { datacenter: "dc1", name: "web", mesh: None, instances: web },
            ServiceUpdate { datacenter: "dc1", name: "consul", mesh: None, instances: consul },
            ServiceUpdate { datacenter: "dc1", name: "api", mesh: None, instances: vec![] },
            ServiceUpdate { datacenter: "dc1", name: "web-sidecar-proxy", mesh: None, instances: proxies.clone() },
            ServiceUpdate { datacenter: "dc1", name: "web", mesh: Some(MeshKind::Connect), instances: proxies },
        ],
    };
    let updated = before.update(&update, options());
    assert_eq!(view(&updated), view(&Snapshot::build(&after, options())));
    let local = updated.datacenter(None).expect("names without a datacenter mean the local one");
    assert_eq!(local.lookup(None, b"web").map(|r| r.instances.len()), Some(2), "the local DC's updated web");
    assert!(std::ptr::eq(local, updated.datacenter(Some(b"dc1")).unwrap()));
    assert!(updated.is_synced());
    let ip: IpAddr = "10.0.0.11".parse().unwrap();
    assert!(matches!(updated.reverse(&ip), Some(Pointer::Node(_))), "the moved node's new address");
    assert!(updated.reverse(&"10.0.0.1".parse().unwrap()).is_none(), "and not its old one");
    assert!(updated.reverse(&"10.0.9.1".parse().unwrap()).is_none(), "the removed service's address");

    let only_api = Update {
        services: vec![ServiceUpdate { datacenter: "dc1", name: "api", mesh: None, instances: vec![] }],
        ..Update::default()
    };
    let next = before.update(&only_api, options());
    let (old, new) = (before.datacenter(None).unwrap(), next.datacenter(None).unwrap());
    assert!(Arc::ptr_eq(&old.services[&b"web"[..]], &new.services[&b"web"[..]]), "untouched services are shared");
    assert!(Arc::ptr_eq(&old.nodes[&b"n1"[..]], &new.nodes[&b"n1"[..]]), "and nodes");
    assert_eq!(next.counts().services, 2);
}

#[test]
fn s4_update_drops_a_service_whose_instances_all_fail() {
    let before = Snapshot::build(&data(), options());
    let mut critical = instance("web", "web-1", "n1", None);
    critical.health = Health::Critical;
    let update = Update {
        services: vec![ServiceUpdate { datacenter: "dc1", name: "web", mesh: None, instances: vec![&critical] }],
        ..Update::default()
    };
    let next = before.update(&update, options());
    assert!(next.datacenter(None).unwrap().lookup(None, b"web").is_none());
    assert_eq!(next.counts().instances, before.counts().instances - 1);
}

/// Finding: with two nodes on one address, an update that removed the first left no PTR, and
/// one that changed only the second moved the PTR to it; a full build decides otherwise.
#[test]
fn s3_8_reverse_map_after_updates_equals_a_full_build_with_shared_addresses() {
    let shared = || CatalogData {
        nodes: vec![node("n1", "10.0.0.1"), node("n2", "10.0.0.1")],
        instances: vec![instance("web", "web-1", "n1", Some("10.0.0.1"))],
        mesh: vec![],
    };
    let before = Snapshot::build(&shared(), options());
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    let ptr = |s: &Snapshot| s.reverse(&ip).map(|p| String::from_utf8_lossy(p.labels()).into_owned());
    assert_eq!(ptr(&before).as_deref(), Some("\u{2}n1\u{4}node\u{3}dc1"), "the lowest node name wins");

    let mut n2 = node("n2", "10.0.0.1");
    n2.meta = vec![("rack".into(), "a".into())];
    let meta_only = Update { nodes: vec![&n2], ..Update::default() };
    let mut expected = shared();
    expected.nodes[1] = n2.clone();
    assert_eq!(view(&before.update(&meta_only, options())), view(&Snapshot::build(&expected, options())));

    let remove_n1 = Update {
        removed_nodes: vec![("dc1", "n1")],
        services: vec![ServiceUpdate { datacenter: "dc1", name: "web", mesh: None, instances: vec![] }],
        ..Update::default()
    };
    let after = before.update(&remove_n1, options());
    let expected = CatalogData { nodes: vec![node("n2", "10.0.0.1")], ..CatalogData::default() };
    assert_eq!(view(&after), view(&Snapshot::build(&expected, options())));
    assert_eq!(ptr(&after).as_deref(), Some("\u{2}n2\u{4}node\u{3}dc1"), "the other node takes over");
}

#[test]
fn a_catalog_large_enough_to_build_on_two_threads_keeps_each_node_and_service_its_own() {
    let count = PARALLEL_NODES + 7;
    let ip = |n: usize| format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255);
    let data = CatalogData {
        nodes: (0..count).map(|n| node(&format!("n{n}"), &ip(n))).collect(),
        instances: (0..count)
            .map(|n| instance(&format!("s{}", n / 2), &format!("i{n}"), &format!("n{n}"), None))
            .collect(),
        mesh: vec![],
    };
    let snapshot = Snapshot::build(&data, options());
    let dc = snapshot.datacenter(Some(b"dc1")).expect("dc1");
    let reverse: HashMap<IpAddr, Vec<u8>> = view(&snapshot).2.into_iter().collect();
    assert_eq!(reverse.len(), count, "every node address maps back");
    for n in 0..count {
        let name = format!("n{n}");
        let labels = &dc.nodes[name.as_bytes()].labels;
        assert_eq!(&labels[1..=name.len()], name.as_bytes(), "node {name} keeps its own records");
        let address: IpAddr = ip(n).parse().unwrap();
        assert_eq!(reverse[&address], labels.to_vec(), "{address} maps back to node {name}");
    }
    assert_eq!(snapshot.counts().services, count.div_ceil(2));
    assert_eq!(snapshot.counts().instances, count);
}
