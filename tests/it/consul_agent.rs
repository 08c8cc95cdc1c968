//! The Consul backend against a real Consul agent (`consul agent -dev` on loopback, issue 14):
//! the scenarios of the fake's tests (consul.rs) where a real agent can play them —
//! registrations through the catalog and agent APIs, node removal, check flips, node and
//! service maintenance through the agent's own endpoints, tags, tagged addresses, weights,
//! connect and ingress names, two datacenters federated over the WAN, ACL tokens rejected and
//! accepted, the agent killed and started again with an empty catalog, and consul-dns
//! restarted from its state dir while the agent is down — and the fake's JSON against the
//! agent's. Each test skips loudly when no agent binary is configured (never in CI).

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::support::consul_agent::{AGENT_NODE, Agent, Options, check, service};
use crate::support::http::get;
use crate::support::{Daemon, query_udp, rcode, rdata, start_consul};

const NOERROR: u16 = 0;
const SERVFAIL: u16 = 2;
const NXDOMAIN: u16 = 3;
const SEC: Duration = Duration::from_secs(1);

fn start(agent: &Agent, extra: &[&str]) -> Daemon {
    start_consul(&agent.url(), extra)
}

/// Polls until `check` holds; panics with both logs after `within`.
fn eventually(d: &Daemon, agent: &Agent, within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not within {within:?}; consul-dns log:\n{}\n\nagent log (tail):\n{}", d.log(), tail(&agent.log()));
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// n1 (127.0.0.21, meta rack=r1) with web-1 (tag v1, a passing check) and db-1 (weights 7/1).
fn web_catalog(agent: &Agent) {
    let web = json!({"ID": "web-1", "Service": "web", "Port": 8080, "Tags": ["v1"]});
    agent.register("n1", "127.0.0.21", &[("rack", "r1")], Some(web), &[check("service:web-1", "web-1", "passing")]);
    let db = json!({"ID": "db-1", "Service": "db", "Port": 5432, "Weights": {"Passing": 7, "Warning": 1}});
    agent.register("n1", "127.0.0.21", &[("rack", "r1")], Some(db), &[]);
}

#[test]
fn agent_initial_sync_answers_services_nodes_weights_meta_and_the_agent_itself() {
    let Some(agent) = Agent::start(Options::default()) else { return };
    web_catalog(&agent);
    let d = start(&agent, &[]);
    eventually(&d, &agent, 10 * SEC, "web answered", || {
        rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.21"]
    });
    assert_eq!(rdata(&d, "web.service.consul", RecordType::SRV), ["1 1 8080 n1.node.dc1.consul."]);
    assert_eq!(rdata(&d, "db.service.dc1.consul", RecordType::SRV), ["1 7 5432 n1.node.dc1.consul."], "weights");
    assert_eq!(rdata(&d, "v1.web.service.consul", RecordType::A), ["127.0.0.21"], "tag");
    assert_eq!(rdata(&d, "n1.node.consul", RecordType::A), ["127.0.0.21"]);
    assert_eq!(rdata(&d, "n1.node.consul", RecordType::TXT), ["rack=r1"], "node meta");
    assert_eq!(rcode(&d, "nope.service.consul"), NXDOMAIN);
    assert_eq!(rcode(&d, "v9.web.service.consul"), NXDOMAIN, "no instance has the tag");
    // The agent's own node and the `consul` service a dev server registers for itself.
    assert_eq!(rdata(&d, &format!("{AGENT_NODE}.node.consul"), RecordType::A), ["127.0.0.1"]);
    assert_eq!(rdata(&d, "consul.service.consul", RecordType::A), ["127.0.0.1"]);
    assert_eq!(rdata(&d, "consul.", RecordType::NS), [format!("{AGENT_NODE}.node.dc1.consul.")], "NS: the servers");
    assert!(d.wait_for_log("Catalog published.", 5 * SEC), "{}", d.log());
    let theirs = query_udp(agent.dns(), "web.service.consul", RecordType::A, None);
    assert_eq!(theirs.answers().len(), 1, "the agent's own DNS answers the same name: {theirs:?}");
}

#[test]
fn agent_registrations_node_removal_check_flips_and_maintenance_show_within_a_second() {
    let Some(agent) = Agent::start(Options::default()) else { return };
    web_catalog(&agent);
    let d = start(&agent, &[]);
    let web = |d: &Daemon| rdata(d, "web.service.consul", RecordType::A);
    eventually(&d, &agent, 10 * SEC, "synced", || web(&d).len() == 1);

    let web2 = json!({"ID": "web-2", "Service": "web", "Port": 8080, "Tags": ["v2"]});
    agent.register("n2", "127.0.0.22", &[], Some(web2), &[check("service:web-2", "web-2", "passing")]);
    eventually(&d, &agent, SEC, "register → answered", || web(&d) == ["127.0.0.21", "127.0.0.22"]);
    assert_eq!(rdata(&d, "v2.web.service.consul", RecordType::A), ["127.0.0.22"], "tag filter");

    agent.set_check("n1", "127.0.0.21", "service:web-1", "web-1", "critical");
    eventually(&d, &agent, SEC, "critical → gone", || web(&d) == ["127.0.0.22"]);
    agent.set_check("n1", "127.0.0.21", "service:web-1", "web-1", "warning");
    eventually(&d, &agent, SEC, "warning → back", || web(&d) == ["127.0.0.21", "127.0.0.22"]);
    agent.set_check("n2", "127.0.0.22", "node-health", "", "critical");
    eventually(&d, &agent, SEC, "a critical node check hides the node's instances", || web(&d) == ["127.0.0.21"]);
    agent.call("PUT", "/v1/catalog/deregister", Some(json!({"Node": "n2", "CheckID": "node-health"})));
    eventually(&d, &agent, SEC, "node check removed", || web(&d).len() == 2);

    // An instance on the agent's own node, with a TTL check the agent flips, and the agent's
    // own maintenance endpoints (which write the _node_maintenance and _service_maintenance
    // checks).
    let local = json!({"ID": "web-a", "Name": "web", "Port": 8081, "Check": {"CheckID": "web-a-ttl", "TTL": "10m", "Status": "passing"}});
    agent.call("PUT", "/v1/agent/service/register", Some(local));
    let all = ["127.0.0.1", "127.0.0.21", "127.0.0.22"];
    eventually(&d, &agent, SEC, "agent service registered", || web(&d) == all);
    agent.call("PUT", "/v1/agent/check/fail/web-a-ttl", None);
    eventually(&d, &agent, SEC, "TTL check failed", || web(&d).len() == 2);
    agent.call("PUT", "/v1/agent/check/pass/web-a-ttl", None);
    eventually(&d, &agent, SEC, "TTL check passes", || web(&d) == all);
    agent.call("PUT", "/v1/agent/maintenance?enable=true&reason=it", None);
    eventually(&d, &agent, SEC, "node maintenance", || web(&d) == ["127.0.0.21", "127.0.0.22"]);
    agent.call("PUT", "/v1/agent/maintenance?enable=false", None);
    eventually(&d, &agent, SEC, "node maintenance off", || web(&d) == all);
    agent.call("PUT", "/v1/agent/service/maintenance/web-a?enable=true&reason=it", None);
    eventually(&d, &agent, SEC, "service maintenance", || web(&d).len() == 2);
    agent.call("PUT", "/v1/agent/service/maintenance/web-a?enable=false", None);
    eventually(&d, &agent, SEC, "service maintenance off", || web(&d) == all);
    agent.call("PUT", "/v1/agent/service/deregister/web-a", None);
    eventually(&d, &agent, SEC, "agent service deregistered", || web(&d).len() == 2);

    agent.deregister("n2", None);
    eventually(&d, &agent, SEC, "node removed", || web(&d) == ["127.0.0.21"]);
    assert_eq!(rcode(&d, "v2.web.service.consul"), NXDOMAIN);
    agent.deregister("n1", Some("web-1"));
    eventually(&d, &agent, SEC, "deregister → NXDOMAIN", || rcode(&d, "web.service.consul") == NXDOMAIN);
    assert_eq!(rdata(&d, "db.service.consul", RecordType::A), ["127.0.0.21"], "the node's other service stays");
}

#[test]
fn agent_only_passing_drops_warnings() {
    let Some(agent) = Agent::start(Options::default()) else { return };
    web_catalog(&agent);
    agent.set_check("n1", "127.0.0.21", "service:web-1", "web-1", "warning");
    let d = start(&agent, &["--only-passing"]);
    eventually(&d, &agent, 10 * SEC, "synced", || rcode(&d, "db.service.consul") == NOERROR);
    assert_eq!(rcode(&d, "web.service.consul"), NXDOMAIN);
}

#[test]
fn agent_service_addresses_tagged_addresses_connect_and_ingress() {
    let Some(agent) = Agent::start(Options::default()) else { return };
    web_catalog(&agent);
    let own = json!({"ID": "api-1", "Service": "api", "Port": 9000, "Address": "127.0.0.55"});
    agent.register("n1", "127.0.0.21", &[], Some(own), &[]);
    let tagged = json!({
        "ID": "tagged-1", "Service": "tagged", "Port": 9001, "Address": "10.9.9.9",
        "TaggedAddresses": {"lan_ipv4": {"Address": "127.0.0.66", "Port": 9001}}
    });
    agent.register("n1", "127.0.0.21", &[], Some(tagged), &[]);
    let proxy = json!({
        "ID": "web-1-sidecar-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000,
        "Proxy": {"DestinationServiceName": "web"}
    });
    agent.register("n1", "127.0.0.21", &[], Some(proxy), &[]);
    let d = start(&agent, &[]);
    eventually(&d, &agent, 10 * SEC, "synced", || !rdata(&d, "api.service.consul", RecordType::A).is_empty());
    assert_eq!(rdata(&d, "api.service.consul", RecordType::SRV), ["1 1 9000 7f000037.addr.dc1.consul."]);
    assert_eq!(rdata(&d, "7f000037.addr.dc1.consul", RecordType::A), ["127.0.0.55"]);
    assert_eq!(rdata(&d, "tagged.service.consul", RecordType::A), ["127.0.0.66"], "lan_ipv4 wins");
    assert_eq!(rdata(&d, "web.connect.consul", RecordType::SRV), ["1 1 21000 n1.node.dc1.consul."]);
    // A real agent answers the ingress config entries with `[]` while there are none.
    assert_eq!(rcode(&d, "web.ingress.consul"), NXDOMAIN, "no gateway exposes web yet");
    assert_eq!(agent.call("GET", "/v1/config/ingress-gateway", None), json!([]));

    agent.register(
        "gw",
        "127.0.0.30",
        &[],
        Some(json!({"ID": "edge-1", "Service": "edge", "Kind": "ingress-gateway", "Port": 8443})),
        &[],
    );
    let entry = json!({
        "Kind": "ingress-gateway", "Name": "edge",
        "Listeners": [{"Port": 8080, "Protocol": "tcp", "Services": [{"Name": "web"}]}]
    });
    agent.call("PUT", "/v1/config", Some(entry));
    eventually(&d, &agent, 2 * SEC, "web.ingress", || {
        rdata(&d, "web.ingress.consul", RecordType::SRV) == ["1 1 8443 gw.node.dc1.consul."]
    });
    agent.call("DELETE", "/v1/config/ingress-gateway/edge", None);
    eventually(&d, &agent, 2 * SEC, "config entry deleted", || rcode(&d, "web.ingress.consul") == NXDOMAIN);
    agent.deregister("n1", Some("web-1-sidecar-proxy"));
    eventually(&d, &agent, SEC, "proxy gone", || rcode(&d, "web.connect.consul") == NXDOMAIN);
}

#[test]
fn agent_acl_token_rejected_then_accepted_and_never_logged() {
    let Some(agent) = Agent::start(Options { acl: true, ..Options::default() }) else { return };
    web_catalog(&agent);
    let rules = r#"service_prefix "" { policy = "read" } node_prefix "" { policy = "read" }"#;
    agent.call("PUT", "/v1/acl/policy", Some(json!({"Name": "dns-read", "Rules": rules})));
    let token = agent.call("PUT", "/v1/acl/token", Some(json!({"Policies": [{"Name": "dns-read"}]})));
    let secret = token["SecretID"].as_str().expect("a SecretID").to_owned();

    // What the fake plays (consul.rs): an unknown token is "ACL not found", and a DNS-only
    // token may not read /v1/agent/self.
    let (status, text) = agent.call_as(Some("00000000-dead-4bad-8bad-000000000000"), "GET", "/v1/catalog/services");
    assert_eq!((status, text.trim()), (403, "ACL not found"));
    let (status, text) = agent.call_as(Some(&secret), "GET", "/v1/agent/self");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("lacks permission 'agent:read'"), "{text}");

    let bogus = start(&agent, &["--consul-token", "00000000-dead-4bad-8bad-000000000000"]);
    let rejected = Instant::now();
    let unknown = "HTTP 403: Consul does not know this ACL token (ACL not found)";
    while !bogus.log().contains(unknown) && rejected.elapsed() < 10 * SEC {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(bogus.log().contains(unknown), "a token Consul does not know is named as such:\n{}", bogus.log());
    assert_eq!(rcode(&bogus, "web.service.consul"), SERVFAIL, "never synced: nothing is known");
    assert_eq!(get(bogus.http(), "/ready").status, 503);
    assert!(!bogus.log().contains("dead-4bad"), "the token is never logged:\n{}", bogus.log());

    // No token at all is the anonymous token: Consul does not refuse it, it filters every
    // answer to nothing, so consul-dns syncs an empty catalog and every name is NXDOMAIN.
    let anonymous = start(&agent, &[]);
    eventually(&anonymous, &agent, 10 * SEC, "synced, empty", || rcode(&anonymous, "web.service.consul") == NXDOMAIN);
    assert!(anonymous.wait_for_log("services=0", 5 * SEC), "{}", anonymous.log());

    let good = start(&agent, &["--consul-token", &secret]);
    eventually(&good, &agent, 10 * SEC, "synced with the read token", || {
        rdata(&good, "web.service.consul", RecordType::A) == ["127.0.0.21"]
    });
    assert_eq!(rdata(&good, "db.service.consul", RecordType::SRV), ["1 7 5432 n1.node.dc1.consul."]);
    assert!(!good.log().contains(&secret), "the token is never logged:\n{}", good.log());
    assert_eq!(get(good.http(), "/ready").status, 200);
}

/// Kills the agent under consul-dns, then starts a new one (empty catalog, raft indexes
/// afresh) and moves its indexes past the old agent's, as a busy cluster would.
fn kill_and_replace(agent: &mut Agent, d: &Daemon, churn: usize) {
    eventually(d, agent, 10 * SEC, "synced", || rdata(d, "web.service.consul", RecordType::A).len() == 1);
    agent.stop();
    let down = Instant::now();
    while down.elapsed() < 2 * SEC {
        assert_eq!(rdata(d, "web.service.consul", RecordType::A), ["127.0.0.21"], "last good answers stay");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.log().contains("Consul read failed"), "{}", d.log());
    agent.restart();
    for i in 0..churn {
        agent.register("churn", "127.0.0.99", &[], Some(service("churn", &format!("churn-{i}"), 1)), &[]);
        agent.deregister("churn", None);
    }
    let web = json!({"ID": "web-9", "Service": "web", "Port": 8080});
    agent.register("n9", "127.0.0.29", &[], Some(web), &[]);
}

#[test]
fn agent_killed_keeps_the_last_good_answers_and_a_new_agent_is_followed() {
    let Some(mut agent) = Agent::start(Options::default()) else { return };
    web_catalog(&agent);
    let d = start(&agent, &[]);
    kill_and_replace(&mut agent, &d, 30);
    eventually(&d, &agent, 10 * SEC, "the new agent's catalog replaces the old", || {
        rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.29"]
    });
    assert_eq!(rcode(&d, "db.service.consul"), NXDOMAIN, "db is not in the new catalog");
}

/// Without the churn the new agent's indexes stay at or below the ones consul-dns holds its
/// queries with: Consul holds such a query for the whole `wait` (up to five minutes by
/// default), and an index that comes back equal to the old one reads as "nothing changed",
/// so the old catalog is served on. Re-reading without an index after a failed read would
/// fix it.
#[test]
fn agent_killed_and_replaced_by_a_fresh_agent_is_followed_within_seconds() {
    let Some(mut agent) = Agent::start(Options::default()) else { return };
    web_catalog(&agent);
    let d = start(&agent, &[]);
    kill_and_replace(&mut agent, &d, 0);
    eventually(&d, &agent, 5 * SEC, "the new agent's catalog replaces the old", || {
        rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.29"]
    });
}

#[test]
fn agent_down_at_restart_answers_from_the_state_dir() {
    let Some(mut agent) = Agent::start(Options::default()) else { return };
    web_catalog(&agent);
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    let file = state.path().join("catalog.json");
    {
        let d = start(&agent, &["--state-dir", &dir]);
        eventually(&d, &agent, 10 * SEC, "synced", || rdata(&d, "web.service.consul", RecordType::A).len() == 1);
        agent.register("n2", "127.0.0.22", &[], Some(service("web", "web-2", 8080)), &[]);
        eventually(&d, &agent, 10 * SEC, "the change persisted", || {
            std::fs::read_to_string(&file).is_ok_and(|text| text.contains("web-2"))
        });
    }
    agent.stop();
    let d = start(&agent, &["--state-dir", &dir]);
    assert_eq!(rdata(&d, "web.service.consul", RecordType::A), ["127.0.0.21", "127.0.0.22"]);
    assert_eq!(rdata(&d, "n1.node.consul", RecordType::TXT), ["rack=r1"]);
    assert!(d.wait_for_log("Catalog restored from disk", 5 * SEC), "{}", d.log());
    agent.restart();
    agent.register("n3", "127.0.0.23", &[], Some(service("web", "web-3", 8080)), &[]);
    eventually(&d, &agent, 20 * SEC, "live data replaces the restored", || {
        rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.23"]
    });
}

/// Where `fake`'s JSON has a key the agent's lacks, or another type (`null` vs `[]`, …):
/// the fake may leave fields out, but what it sends must look like what Consul sends.
fn shape_errors(fake: &Value, real: &Value, path: &str, out: &mut Vec<String>) {
    match (fake, real) {
        (Value::Object(f), Value::Object(r)) => {
            for (key, value) in f {
                match r.get(key) {
                    Some(theirs) => shape_errors(value, theirs, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}: the fake sends it, Consul does not")),
                }
            }
        }
        (Value::Array(f), Value::Array(r)) => {
            for (i, item) in f.iter().enumerate() {
                let best = r
                    .iter()
                    .map(|theirs| {
                        let mut errors = Vec::new();
                        shape_errors(item, theirs, &format!("{path}[{i}]"), &mut errors);
                        errors
                    })
                    .min_by_key(Vec::len);
                match best {
                    Some(errors) => out.extend(errors),
                    None => out.push(format!("{path}: the fake lists items, Consul none")),
                }
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        (Value::Null, Value::Null) => {}
        _ => out.push(format!("{path}: the fake sends {fake}, Consul {real}")),
    }
}

#[test]
fn the_fake_consul_answers_in_the_agents_shapes() {
    use crate::support::fake_consul::{FakeConsul, Svc};
    let Some(agent) = Agent::start(Options::default()) else { return };
    let fake = FakeConsul::start("dc1", &[]);

    fake.register_node("dc1", "n1", "127.0.0.21", &[("rack", "r1")]);
    let web = Svc {
        tags: vec!["v1".into()],
        checks: vec![("service:web-1".into(), "passing".into())],
        ..Svc::new("web", "web-1", 8080)
    };
    fake.register("dc1", "n1", web);
    let tagged = Svc {
        address: "127.0.0.40".into(),
        tagged: vec![("lan_ipv4".into(), "127.0.0.41".into(), 9001)],
        ..Svc::new("tagged", "tagged-1", 9001)
    };
    fake.register("dc1", "n1", tagged);
    let proxy = Svc {
        kind: "connect-proxy".into(),
        proxy_for: "web".into(),
        ..Svc::new("web-sidecar-proxy", "web-1-sidecar-proxy", 21000)
    };
    fake.register("dc1", "n1", proxy);
    fake.set_check("dc1", "n1", "node-health", "", "warning");

    let tagged_addresses =
        json!({"lan": "127.0.0.21", "lan_ipv4": "127.0.0.21", "wan": "127.0.0.21", "wan_ipv4": "127.0.0.21"});
    let node =
        json!({"Node": "n1", "Address": "127.0.0.21", "TaggedAddresses": tagged_addresses, "NodeMeta": {"rack": "r1"}});
    let mut body = node.clone();
    body["Service"] = json!({"ID": "web-1", "Service": "web", "Port": 8080, "Tags": ["v1"]});
    body["Checks"] = json!([check("service:web-1", "web-1", "passing"), check("node-health", "", "warning")]);
    agent.call("PUT", "/v1/catalog/register", Some(body));
    let mut body = node.clone();
    body["Service"] = json!({"ID": "tagged-1", "Service": "tagged", "Port": 9001, "Address": "127.0.0.40",
        "TaggedAddresses": {"lan_ipv4": {"Address": "127.0.0.41", "Port": 9001}}});
    agent.call("PUT", "/v1/catalog/register", Some(body));
    let mut body = node;
    body["Service"] = json!({"ID": "web-1-sidecar-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy",
        "Port": 21000, "Proxy": {"DestinationServiceName": "web"}});
    agent.call("PUT", "/v1/catalog/register", Some(body));

    let mut errors = Vec::new();
    for path in [
        "/v1/agent/self",
        "/v1/catalog/datacenters",
        "/v1/catalog/services?stale",
        "/v1/catalog/nodes?stale",
        "/v1/health/service/web?stale",
        "/v1/health/service/tagged?stale",
        "/v1/health/service/missing?stale",
        "/v1/health/connect/web?stale",
        "/v1/health/state/any?stale&filter=Status%20!%3D%20%22passing%22",
        "/v1/config/ingress-gateway?stale",
    ] {
        let theirs = agent.call("GET", path, None);
        let reply = get(fake.addr, path);
        assert_eq!(reply.status, 200, "the fake on {path}: {}", reply.text());
        shape_errors(&reply.json(), &theirs, path, &mut errors);
    }
    assert!(errors.is_empty(), "the fake differs from Consul {}:\n{}", agent.version(), errors.join("\n"));

    // Both hold a query whose index is above their own for the whole wait (an agent started
    // afresh, asked with the old agent's index).
    let held = |path: &str, ask: &dyn Fn(&str)| {
        let start = Instant::now();
        ask(path);
        start.elapsed()
    };
    let path = "/v1/catalog/services?stale&index=100000&wait=300ms";
    let theirs = held(path, &|p| drop(agent.call("GET", p, None)));
    let ours = held(path, &|p| assert_eq!(get(fake.addr, p).status, 200));
    assert!(theirs >= Duration::from_millis(300), "Consul held it {theirs:?}");
    assert!(ours >= Duration::from_millis(300), "the fake held it {ours:?}");
}

/// A node deregistered together with its instances must stop answering. The Consul store
/// keeps a node that leaves the node list while instances still name it, and nothing drops
/// it once those instances go: `n2.node.consul` answers its old address until the next
/// change of the node list.
#[test]
fn agent_removed_node_stops_answering() {
    let Some(agent) = Agent::start(Options::default()) else { return };
    web_catalog(&agent);
    agent.register("n2", "127.0.0.22", &[], Some(service("web", "web-2", 8080)), &[]);
    let d = start(&agent, &[]);
    eventually(&d, &agent, 10 * SEC, "synced", || rdata(&d, "n2.node.consul", RecordType::A) == ["127.0.0.22"]);
    agent.deregister("n2", None);
    eventually(&d, &agent, SEC, "instance gone", || rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.21"]);
    eventually(&d, &agent, 2 * SEC, "the removed node's name", || rcode(&d, "n2.node.consul") == NXDOMAIN);
}

#[test]
fn agent_two_datacenters_over_wan_federation_and_wan_translation() {
    let Some(dc1) = Agent::start(Options::default()) else { return };
    web_catalog(&dc1);
    let options = Options {
        datacenter: Some("dc2"),
        node: Some("agent-2"),
        join_wan: Some(dc1.ports.serf_wan),
        ..Options::default()
    };
    let Some(dc2) = Agent::start(options) else { return };
    let mut east = json!({
        "Node": "m1", "Address": "127.0.2.1", "TaggedAddresses": {"lan": "127.0.2.1", "wan": "127.0.200.1"},
        "Service": {"ID": "web-east", "Service": "web", "Port": 8080}
    });
    dc2.call("PUT", "/v1/catalog/register", Some(east.take()));
    let federated = Instant::now();
    while !dc1.call("GET", "/v1/catalog/datacenters", None).to_string().contains("dc2") {
        assert!(federated.elapsed() < 30 * SEC, "dc2 never joined dc1 over the WAN; log:\n{}", tail(&dc2.log()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = start(&dc1, &[]);
    eventually(&d, &dc1, 10 * SEC, "dc2 synced", || {
        rdata(&d, "web.service.dc2.consul", RecordType::A) == ["127.0.2.1"]
    });
    assert_eq!(rdata(&d, "web.service.consul", RecordType::A), ["127.0.0.21"], "the local DC by default");
    assert_eq!(rdata(&d, "web.service.dc1.consul", RecordType::A), ["127.0.0.21"]);
    assert_eq!(rcode(&d, "web.service.dc3.consul"), NXDOMAIN);
    let wan = start(&dc1, &["--translate-wan-addrs"]);
    eventually(&wan, &dc1, 10 * SEC, "the WAN address for dc2", || {
        rdata(&wan, "web.service.dc2.consul", RecordType::A) == ["127.0.200.1"]
    });
    assert_eq!(rdata(&wan, "web.service.dc1.consul", RecordType::A), ["127.0.0.21"], "LAN for the local DC");
    let narrowed = start(&dc1, &["--datacenters", "dc1"]);
    eventually(&narrowed, &dc1, 10 * SEC, "dc1", || !rdata(&narrowed, "web.service.consul", RecordType::A).is_empty());
    assert_eq!(rcode(&narrowed, "web.service.dc2.consul"), NXDOMAIN, "--datacenters narrows");
}

#[test]
fn agent_down_before_the_first_sync_is_servfail_then_the_agent_is_followed() {
    let Some(mut agent) = Agent::start(Options::default()) else { return };
    agent.stop();
    let d = start(&agent, &[]);
    assert_eq!(rcode(&d, "web.service.consul"), SERVFAIL);
    assert_eq!(rcode(&d, "missing.service.consul"), SERVFAIL, "not NXDOMAIN: nothing is known yet");
    assert_eq!(get(d.http(), "/ready").status, 503);
    agent.restart();
    web_catalog(&agent);
    eventually(&d, &agent, 15 * SEC, "first sync", || rdata(&d, "web.service.consul", RecordType::A) == ["127.0.0.21"]);
    assert_eq!(rcode(&d, "missing.service.consul"), NXDOMAIN);
    assert_eq!(get(d.http(), "/ready").status, 200);
}

#[test]
fn agent_propagation_p50_p99_over_40_changes() {
    let Some(agent) = Agent::start(Options::default()) else { return };
    web_catalog(&agent);
    let d = start(&agent, &[]);
    let web = |d: &Daemon| rdata(d, "web.service.consul", RecordType::A).len();
    eventually(&d, &agent, 10 * SEC, "synced", || web(&d) == 1);
    let mut took = Vec::new();
    for round in 0..40 {
        let start = Instant::now();
        let want = match round % 4 {
            0 => {
                let checks = [check("service:web-2", "web-2", "passing")];
                agent.register("n2", "127.0.0.22", &[], Some(service("web", "web-2", 8080)), &checks);
                2
            }
            1 => {
                agent.set_check("n2", "127.0.0.22", "service:web-2", "web-2", "critical");
                1
            }
            2 => {
                agent.set_check("n2", "127.0.0.22", "service:web-2", "web-2", "passing");
                2
            }
            _ => {
                agent.deregister("n2", Some("web-2"));
                1
            }
        };
        eventually(&d, &agent, 5 * SEC, "change answered", || web(&d) == want);
        took.push(start.elapsed());
    }
    took.sort();
    let (p50, p99) = (took[took.len() / 2], took[took.len() * 99 / 100]);
    println!(
        "real Consul propagation over {} changes: p50 {p50:?}, p99 {p99:?}, max {:?}",
        took.len(),
        took[took.len() - 1]
    );
    assert!(p99 < SEC, "p99 {p99:?}");
}
