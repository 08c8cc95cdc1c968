//! The synthetic catalog the benches and `examples/query_loop` measure, shaped like
//! the one `bench/run.sh` generates: `svc0`..`svc<services-1>`, each instance on its own node
//! with a 10.x.y.z address, tag `primary`, no address of its own (so SRV targets are node
//! names with glue).

use consul_dns::catalog::model::{Address, CatalogData, Health, Instance, Node, TaggedAddresses, Weights};

/// `services` services × `instances` instances, datacenter dc1.
pub fn catalog(services: usize, instances: usize) -> CatalogData {
    let mut data = CatalogData::default();
    for s in 0..services {
        for i in 0..instances {
            let n = s * instances + i;
            let node = format!("node{n}");
            data.nodes.push(Node {
                name: node.clone(),
                datacenter: "dc1".into(),
                address: Address::parse(&format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255)).unwrap(),
                tagged: TaggedAddresses::default(),
                meta: vec![],
            });
            data.instances.push(Instance {
                id: format!("svc{s}-{i}"),
                service: format!("svc{s}"),
                datacenter: "dc1".into(),
                node: Some(node),
                address: None,
                tagged: TaggedAddresses::default(),
                port: 20000 + i as u16,
                tags: vec!["primary".into()].into(),
                weights: Weights::default(),
                health: Health::Passing,
            });
        }
    }
    data
}
