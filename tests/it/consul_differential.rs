//! consul-dns's DNS answers compared, name by name, with a real Consul agent's own DNS
//! interface on the same catalog (issue 14): the catalog is registered in the agent and
//! consul-dns syncs it from the agent's HTTP API. For every name (services, tags, RFC 2782
//! forms, nodes, `.addr.` targets, unknown names, the apex, reverse names), every qtype of
//! [`QTYPES`] and three transports (UDP without EDNS, UDP with EDNS, TCP), the replies are
//! compared on rcode, AA and TC, the answer RRsets (modulo order and TTL), the authority
//! record types and the additional records. Known, deliberate differences are data
//! ([`KNOWN`], each with its reason, also listed in the README); any other difference fails
//! the test, and so does a known one that no longer occurs.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, Record, RecordType};
use serde_json::json;

use crate::support::client::{Reply, query_tcp, query_udp};
use crate::support::consul_agent::{AGENT_NODE, Agent, Options, check};
use crate::support::{Daemon, matches_pattern as matches, query_udp as probe};

/// The qtypes asked for every name (PTR only for the reverse names).
const QTYPES: [RecordType; 7] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::ANY,
    RecordType::TXT,
    RecordType::SOA,
    RecordType::NS,
];

/// Services whose answers are a random cut of a larger set (more instances than the UDP
/// answer limit): compared by record types and counts, not by owners and data.
const SAMPLED: [&str; 2] = ["many.service.consul.", "_many._tcp.service.consul."];

/// A known difference: where it occurs and what each server answers there. Every field is a
/// pattern: `*` matches anything, `*suffix` a suffix, anything else itself.
struct Known {
    name: &'static str,
    qtype: &'static str,
    transport: &'static str,
    field: &'static str,
    consul: &'static str,
    ours: &'static str,
    reason: &'static str,
}

const fn known(
    name: &'static str,
    qtype: &'static str,
    field: &'static str,
    consul: &'static str,
    ours: &'static str,
    reason: &'static str,
) -> Known {
    Known { name, qtype, transport: "*", field, consul, ours, reason }
}

/// Every difference consul-dns keeps on purpose (the README's "Where consul-dns differs from
/// Consul" lists them too). A new one fails the test until it is fixed or added here with its
/// reason; an entry that no longer matches anything fails it as well.
const KNOWN: &[Known] = &[
    known(
        "*.consul.",
        "SOA",
        "*",
        "*",
        "*",
        "SOA is answered at the apex only; Consul answers the zone's SOA for every name in it",
    ),
    known(
        "*.consul.",
        "NS",
        "*",
        "*",
        "*",
        "NS is answered at the apex only; Consul answers the zone's NS for every name in it",
    ),
    known(
        "consul.",
        "SOA",
        "answer",
        "*",
        "*",
        "the SOA MINIMUM is negative_ttl (5 s), Consul's is 0: negative answers are cacheable",
    ),
    known(
        "consul.",
        "*",
        "rcode",
        "NXDomain",
        "NoError",
        "the apex exists: other types are NODATA, Consul says NXDOMAIN",
    ),
    known(
        "consul.",
        "ANY",
        "*",
        "*",
        "*",
        "ANY at the apex answers the SOA and NS (with the servers' addresses), Consul NXDOMAIN",
    ),
    known(
        "*",
        "*",
        "authority types",
        "",
        "SOA",
        "NODATA carries the SOA (RFC 2308), so resolvers may cache it; Consul's has none",
    ),
    known("*", "TXT", "answer", "*", "", "TXT on a service name is NODATA; Consul answers the service's addresses"),
    known(
        "*.addr.dc1.consul.",
        "*",
        "additional",
        "*",
        "",
        "a NODATA reply has no additional records; Consul adds the A/AAAA record",
    ),
    known(
        "*",
        "AAAA",
        "additional",
        "*",
        "",
        "a NODATA reply has no additional records; Consul adds the node meta TXT records",
    ),
    known(
        "*.arpa.",
        "A",
        "answer",
        "*",
        "",
        "a reverse name answers PTR (and ANY) only; Consul answers the PTR for every type",
    ),
    known(
        "99.0.0.127.in-addr.arpa.",
        "*",
        "rcode",
        "ServFail",
        "NXDomain",
        "an address no node or service has is NXDOMAIN; Consul without recursors fails",
    ),
    known(
        "99.0.0.127.in-addr.arpa.",
        "*",
        "aa",
        "false",
        "true",
        "the same: our NXDOMAIN for the reverse names is authoritative",
    ),
    known(
        "nonode.node.consul.",
        "SRV",
        "rcode",
        "NoError",
        "NXDomain",
        "a node that does not exist is NXDOMAIN for every type; Consul says NOERROR for SRV",
    ),
    known(
        "zzzz.addr.dc1.consul.",
        "*",
        "rcode",
        "NoError",
        "NXDomain",
        "a .addr. label that is no address does not exist; Consul says NOERROR with nothing",
    ),
    Known {
        name: "*",
        qtype: "*",
        transport: "udp",
        field: "tc",
        consul: "false",
        ours: "true",
        reason: "TC is set whenever udp_answer_limit dropped records; Consul only with enable_truncate",
    },
];

/// Registers the compared catalog in the agent.
fn register_catalog(agent: &Agent) {
    let web1 = json!({"ID": "web-1", "Service": "web", "Port": 8001, "Tags": ["v1", "primary"]});
    agent.register("n1", "127.0.0.21", &[("rack", "r1"), ("env", "prod")], Some(web1), &[]);
    let db = json!({"ID": "db-1", "Service": "db", "Port": 5432, "Weights": {"Passing": 7, "Warning": 1}});
    agent.register("n1", "127.0.0.21", &[("rack", "r1"), ("env", "prod")], Some(db), &[]);
    let web2 = json!({"ID": "web-2", "Service": "web", "Port": 8002, "Tags": ["v2"], "Address": "127.0.0.32"});
    agent.register("n2", "127.0.0.22", &[], Some(web2), &[]);
    let web3 = json!({"ID": "web-3", "Service": "web", "Port": 8003, "Tags": ["v1"]});
    agent.register("n3", "127.0.0.23", &[], Some(web3), &[check("service:web-3", "web-3", "warning")]);
    let web4 = json!({"ID": "web-4", "Service": "web", "Port": 8004});
    agent.register("n3", "127.0.0.23", &[], Some(web4), &[check("service:web-4", "web-4", "critical")]);
    let api = json!({"ID": "api-1", "Service": "api", "Port": 9000});
    agent.register("n6", "2001:db8::6", &[], Some(api), &[]);
    let tagged = json!({
        "ID": "tagged-1", "Service": "tagged", "Port": 9001, "Address": "127.0.0.40",
        "TaggedAddresses": {"lan_ipv4": {"Address": "127.0.0.41", "Port": 9001}}
    });
    agent.register("n2", "127.0.0.22", &[], Some(tagged), &[]);
    let proxy = json!({
        "ID": "web-1-sidecar-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000,
        "Proxy": {"DestinationServiceName": "web"}
    });
    agent.register("n1", "127.0.0.21", &[("rack", "r1"), ("env", "prod")], Some(proxy), &[]);
    let gateway = json!({"ID": "edge-1", "Service": "edge", "Kind": "ingress-gateway", "Port": 8443});
    agent.register("gw", "127.0.0.30", &[], Some(gateway), &[]);
    let entry = json!({
        "Kind": "ingress-gateway", "Name": "edge",
        "Listeners": [{"Port": 8080, "Protocol": "tcp", "Services": [{"Name": "db"}]}]
    });
    agent.call("PUT", "/v1/config", Some(entry));
    for i in 1..=6 {
        let many = json!({"ID": format!("many-{i}"), "Service": "many", "Port": 7000 + i});
        agent.register(&format!("m{i}"), &format!("127.0.1.{i}"), &[], Some(many), &[]);
    }
}

/// The compared names.
fn names() -> Vec<(String, Vec<RecordType>)> {
    let forward = [
        "web.service.consul.",
        "web.service.dc1.consul.",
        "v1.web.service.consul.",
        "v2.web.service.dc1.consul.",
        "v9.web.service.consul.",
        "primary.web.service.consul.",
        "_web._primary.service.consul.",
        "_db._tcp.service.consul.",
        "_web._tcp.service.consul.",
        "_web._v1.service.consul.",
        "_web._tcp.service.dc1.consul.",
        "db.service.consul.",
        "api.service.consul.",
        "tagged.service.consul.",
        "many.service.consul.",
        "_many._tcp.service.consul.",
        "web.connect.consul.",
        "db.connect.consul.",
        "db.ingress.consul.",
        "web.ingress.consul.",
        "consul.service.consul.",
        "nope.service.consul.",
        "web.service.dc9.consul.",
        "n1.node.consul.",
        "n1.node.dc1.consul.",
        "n6.node.consul.",
        "n2.node.consul.",
        "n3.node.dc1.consul.",
        "m1.node.consul.",
        "nonode.node.consul.",
        "7f000020.addr.dc1.consul.",
        "20010db8000000000000000000000006.addr.dc1.consul.",
        "zzzz.addr.dc1.consul.",
        "foo.consul.",
        "x.y.z.consul.",
        "consul.",
    ];
    let mut out: Vec<(String, Vec<RecordType>)> = forward.iter().map(|n| (n.to_string(), QTYPES.to_vec())).collect();
    out.push((format!("{AGENT_NODE}.node.consul."), QTYPES.to_vec()));
    let reverse = [
        "21.0.0.127.in-addr.arpa.",
        "32.0.0.127.in-addr.arpa.",
        "99.0.0.127.in-addr.arpa.",
        "6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
    ];
    for name in reverse {
        out.push((name.to_string(), vec![RecordType::PTR, RecordType::A, RecordType::ANY]));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    UdpEdns,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::UdpEdns => "udp+edns",
            Transport::Tcp => "tcp",
        })
    }
}

fn ask(server: std::net::SocketAddr, name: &str, qtype: RecordType, transport: Transport) -> Reply {
    match transport {
        Transport::Udp => query_udp(server, name, qtype, None),
        Transport::UdpEdns => query_udp(server, name, qtype, Some(4096)),
        Transport::Tcp => query_tcp(server, name, qtype),
    }
}

/// One record without its TTL, owner lowercased; an SOA's serial (each server's own clock)
/// is left out.
fn record(r: &Record, sampled: bool) -> String {
    let owner = r.name.to_ascii().to_ascii_lowercase();
    let rtype = r.data.record_type();
    if sampled {
        return rtype.to_string(); // which instances (and so which glue owners) is chance
    }
    let data = match &r.data {
        RData::SOA(soa) => {
            format!("{} {} (serial) {} {} {} {}", soa.mname, soa.rname, soa.refresh, soa.retry, soa.expire, soa.minimum)
        }
        other => other.to_string(),
    };
    format!("{owner} {rtype} {data}")
}

/// The compared fields of a reply, as text.
fn fields(message: &Message, sampled: bool) -> Vec<(&'static str, String)> {
    let sorted = |records: &[Record]| {
        let mut v: Vec<String> =
            records.iter().filter(|r| r.data.record_type() != RecordType::OPT).map(|r| record(r, sampled)).collect();
        v.sort();
        v.join(" | ")
    };
    let types: BTreeSet<String> = message.authorities.iter().map(|r| r.data.record_type().to_string()).collect();
    vec![
        ("rcode", format!("{:?}", message.metadata.response_code)),
        ("aa", message.metadata.authoritative.to_string()),
        ("tc", message.metadata.truncation.to_string()),
        ("answer", sorted(&message.answers)),
        ("authority types", types.into_iter().collect::<Vec<_>>().join(",")),
        ("additional", sorted(&message.additionals)),
    ]
}

struct Difference {
    name: String,
    qtype: RecordType,
    transport: Transport,
    field: &'static str,
    consul: String,
    ours: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} over {}: {}\n    consul:     {}\n    consul-dns: {}",
            self.name, self.qtype, self.transport, self.field, self.consul, self.ours
        )
    }
}

impl Known {
    fn covers(&self, d: &Difference) -> bool {
        matches(self.name, &d.name)
            && matches(self.qtype, &d.qtype.to_string())
            && matches(self.transport, &d.transport.to_string())
            && matches(self.field, d.field)
            && matches(self.consul, &d.consul)
            && matches(self.ours, &d.ours)
    }
}

#[test]
fn dns_answers_match_the_real_agent_name_by_name_except_the_known_differences() {
    let Some(agent) = Agent::start(Options::default()) else { return };
    register_catalog(&agent);
    let url = agent.url();
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &["--consul", &url, "--consul-wait", "20s"]);
    let start = Instant::now();
    let synced = || {
        probe(d.addr, "many.service.consul", RecordType::SRV, Some(4096)).message.answers.len() == 6
            && !probe(d.addr, "db.ingress.consul", RecordType::SRV, Some(4096)).message.answers.is_empty()
    };
    while !synced() {
        assert!(start.elapsed() < Duration::from_secs(10), "consul-dns did not sync; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut found = Vec::new();
    let mut compared = 0;
    for (name, qtypes) in names() {
        let sampled = SAMPLED.contains(&name.as_str());
        for qtype in qtypes {
            for transport in [Transport::Udp, Transport::UdpEdns, Transport::Tcp] {
                let consul = ask(agent.dns(), &name, qtype, transport);
                let ours = ask(d.addr, &name, qtype, transport);
                compared += 1;
                let theirs = fields(&consul.message, sampled);
                for ((field, c), (_, o)) in theirs.into_iter().zip(fields(&ours.message, sampled)) {
                    if c != o {
                        found.push(Difference { name: name.clone(), qtype, transport, field, consul: c, ours: o });
                    }
                }
            }
        }
    }
    let unknown: Vec<String> =
        found.iter().filter(|d| !KNOWN.iter().any(|k| k.covers(d))).map(|d| d.to_string()).collect();
    let stale: Vec<String> = KNOWN
        .iter()
        .filter(|k| !found.iter().any(|d| k.covers(d)))
        .map(|k| format!("{} {} {} {} ({})", k.name, k.qtype, k.transport, k.field, k.reason))
        .collect();
    println!("compared {compared} queries; {} differences, {} of them known", found.len(), found.len() - unknown.len());
    assert!(
        unknown.is_empty() && stale.is_empty(),
        "{} differences from {} are not in KNOWN:\n{}\n\nKNOWN entries that no longer occur:\n{}",
        unknown.len(),
        agent.version(),
        unknown.join("\n"),
        stale.join("\n")
    );
}
