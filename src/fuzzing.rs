//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their corpora
//! (`tests/it/fuzz_corpus.rs`). Each takes arbitrary bytes, runs one untrusted-input path of
//! the daemon and panics only when an invariant breaks: a panic here is a bug found.
//!
//! The paths, one per function: a DNS request's parsing and name classification
//! ([`request`]); the whole request → response function over a fixed snapshot ([`respond`]);
//! the static catalog parser ([`static_catalog`]); Consul's HTTP bodies, decoded and applied
//! to the Consul source's store ([`consul_bodies`]); and the persisted-state decoder
//! ([`persisted_state`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::backend::consul::store::Store;
use crate::backend::consul::wire::{AddressSet, AgentSelf, ServiceList, WireCheck, WireEntry, WireIngress, WireNode};
use crate::catalog::{BuildOptions, Snapshot};
use crate::config::EMBEDDED_CATALOG;
use crate::dns::Settings;
use crate::dns::acl::Access;
use crate::dns::answer::{Action, Scratch, Transport};
use crate::dns::message::{LowerName, Request};
use crate::dns::name::{DomainName, classify};
use crate::wire::HEADER_LEN;

/// The largest DNS message (a TCP length prefix's limit).
const MAX_MESSAGE: usize = 65_535;

/// Parses `data` as a DNS request and classifies its name against two domains. Checks that
/// the parser's view of the question stays inside the packet and that classification
/// reports an offset inside the name.
pub fn request(data: &[u8]) {
    let primary = domain("consul.");
    let alt = domain("alt.example.");
    let mut name = LowerName::new();
    let Ok(req) = Request::parse(data, &mut name) else { return };
    assert!(HEADER_LEN + req.qname_len() + 4 <= data.len(), "the question ends past the packet");
    let lower = req.name();
    assert!(lower.text().iter().all(|b| !b.is_ascii_uppercase()), "the name was not lower-cased");
    for i in 0..lower.label_count() {
        assert!(lower.label_offset(i) + lower.label(i).len() <= lower.text().len(), "a label lies outside the name");
    }
    let classified = classify(lower, req.qtype, &[&primary, &alt]);
    assert!(classified.domain_offset <= lower.text().len(), "the domain starts past the name");
}

/// Answers `data` from a fixed snapshot (the built-in example catalog, synced, one alternative
/// domain, recursion configured) for UDP and TCP and each kind of client, and checks every
/// reply: it fits the transport, echoes the ID, says QR, and decodes as a DNS message.
pub fn respond(data: &[u8]) {
    let (snapshot, settings) = fixture();
    let mut scratch = Scratch::with_seed(7);
    let mut out = Vec::with_capacity(4096);
    for transport in [Transport::Udp, Transport::Tcp] {
        for client in [Access::Refused, Access::Query, Access::Recurse] {
            out.clear();
            let action =
                crate::dns::answer::respond(data, snapshot, settings, transport, client, &mut scratch, &mut out);
            if let Action::Reply(_) | Action::Forward(_) = action {
                check_reply(data, &out, transport);
            }
        }
    }
}

/// Parses `data` as a static catalog file, as TOML and as JSON; what parses must validate and
/// build a snapshot.
pub fn static_catalog(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for path in ["fuzz.toml", "fuzz.json"] {
        if let Ok(catalog) = crate::backend::file::format::parse(Path::new(path), text, "dc1") {
            catalog.validate().expect("a parsed catalog is valid");
            let snapshot = Snapshot::build(&catalog, Arc::new(BuildOptions::new("dc1", 0)));
            assert!(snapshot.counts().instances <= catalog.instances.len() + catalog.mesh.len());
        }
    }
}

/// Splits `data` at `0xFF` bytes into bodies; the first byte of each says which Consul
/// endpoint it answers (services list, nodes, checks, health entries, ingress config entries,
/// agent self), the rest is the body. Each body that decodes is applied to one store, as the
/// Consul source would; the store's datacenter must then export valid data that builds.
pub fn consul_bodies(data: &[u8]) {
    let mut store = Store::default();
    store.add_dc("dc1", AddressSet::Lan);
    for (index, chunk) in data.split(|&b| b == 0xFF).enumerate() {
        let Some((&kind, body)) = chunk.split_first() else { continue };
        let index = index as u64 + 1;
        match kind % 6 {
            0 => {
                if let Ok(Some(list)) = serde_json::from_slice::<Option<ServiceList>>(body) {
                    store.apply_services("dc1", list);
                }
            }
            1 => {
                if let Ok(Some(nodes)) = serde_json::from_slice::<Option<Vec<WireNode>>>(body) {
                    store.apply_nodes("dc1", nodes);
                }
            }
            2 => {
                if let Ok(Some(checks)) = serde_json::from_slice::<Option<Vec<WireCheck>>>(body) {
                    store.apply_checks("dc1", checks, index);
                }
            }
            3 => {
                if let Ok(Some(entries)) = serde_json::from_slice::<Option<Vec<WireEntry>>>(body) {
                    let service = entries.first().map(|e| e.service.service.clone()).unwrap_or_default();
                    store.apply_health("dc1", &service, entries);
                }
            }
            4 => {
                if let Ok(Some(entries)) = serde_json::from_slice::<Option<Vec<WireIngress>>>(body) {
                    store.apply_ingress("dc1", &entries);
                }
            }
            _ => {
                let _ = serde_json::from_slice::<AgentSelf>(body);
            }
        }
    }
    store.try_go_live("dc1", false);
    if let Some(catalog) = store.dc_catalog("dc1") {
        catalog.validate().expect("the Consul store exports valid data");
        let _ = Snapshot::build(&catalog, Arc::new(BuildOptions::new("dc1", 0)));
    }
}

/// Decodes `data` as the persisted state file; what decodes must validate and build.
pub fn persisted_state(data: &[u8]) {
    if let Ok(restored) = crate::catalog::persist::decode(Path::new("catalog.json"), data) {
        restored.0.validate().expect("a restored catalog is valid");
        let _ = Snapshot::build(&restored.0, Arc::new(BuildOptions::new(&restored.1, 0)));
    }
}

fn domain(text: &str) -> DomainName {
    DomainName::new(text).expect("a valid domain")
}

fn fixture() -> &'static (Snapshot, Settings) {
    static FIXTURE: OnceLock<(Snapshot, Settings)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let catalog = crate::backend::file::format::parse(Path::new("services.toml"), EMBEDDED_CATALOG, "dc1")
            .expect("the built-in catalog parses");
        let snapshot = Snapshot::build(&catalog, Arc::new(BuildOptions::new("dc1", 5)));
        let mut settings = Settings::new(domain("consul."));
        settings.alt_domain = Some(domain("alt.example."));
        settings.recursion.upstreams = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)];
        (snapshot, settings)
    })
}

/// The checks [`respond`] makes on each reply to `query` (panics when one fails).
pub fn check_reply(query: &[u8], reply: &[u8], transport: Transport) {
    let limit = match transport {
        Transport::Udp => usize::from(fixture().1.max_udp_size).max(512),
        Transport::Tcp => MAX_MESSAGE,
    };
    assert!(reply.len() <= limit, "a {} byte reply exceeds the transport's {limit}", reply.len());
    assert!(reply.len() >= HEADER_LEN, "a reply shorter than a header");
    assert_eq!(reply[..2], query[..2], "the reply does not echo the ID");
    assert!(reply[2] & 0x80 != 0, "the reply does not set QR");
    if let Err(e) = hickory_proto::op::Message::from_vec(reply) {
        panic!("the reply does not decode: {e}");
    }
}
