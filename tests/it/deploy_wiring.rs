//! The compose file's wiring, checked as data: addresses, published ports, health, the order
//! of start-up, who talks to whom; and Kong's configuration script run against a recording
//! stand-in for Kong's admin API.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::deploy::{compose, consul_dns_command, service_ip};

/// Services that run once and exit (everything else runs for good).
const ONE_SHOT: [&str; 2] = ["kong-migrations", "kong-config"];

/// `a.b.c.d/len` → (network, length).
fn cidr(text: &str) -> (Ipv4Addr, u32) {
    let (ip, len) = text.split_once('/').unwrap_or((text, "32"));
    (ip.parse().unwrap_or_else(|_| panic!("{text}: not an IPv4 network")), len.parse().unwrap())
}

fn contains(net: &str, ip: Ipv4Addr) -> bool {
    let (base, len) = cidr(net);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(base) & mask == u32::from(ip) & mask
}

fn services(c: &Value) -> &serde_json::Map<String, Value> {
    c["services"].as_object().expect("services")
}

/// `depends_on` as (target, condition); the list form means `service_started`.
fn depends_on(s: &Value) -> Vec<(String, String)> {
    match &s["depends_on"] {
        Value::Array(list) => list.iter().map(|t| (t.as_str().unwrap().to_owned(), "service_started".into())).collect(),
        Value::Object(map) => map
            .iter()
            .map(|(t, v)| (t.clone(), v["condition"].as_str().unwrap_or("service_started").to_owned()))
            .collect(),
        _ => vec![],
    }
}

fn published(s: &Value) -> BTreeSet<String> {
    s["ports"].as_array().into_iter().flatten().map(|p| p.as_str().unwrap().to_owned()).collect()
}

#[test]
fn compose_addresses_are_unique_fixed_and_in_the_subnet() {
    let c = compose();
    let ipam = &c["networks"]["stack"]["ipam"]["config"][0];
    let (subnet, dynamic) = (ipam["subnet"].as_str().unwrap(), ipam["ip_range"].as_str().unwrap());
    let mut seen = BTreeMap::new();
    for (name, s) in services(&c) {
        let Some(ip) = s["networks"]["stack"]["ipv4_address"].as_str() else {
            assert!(s["networks"].as_array().is_some_and(|n| n.iter().any(|n| n == "stack")), "{name} is on the stack");
            continue;
        };
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert!(contains(subnet, ip), "{name}: {ip} outside {subnet}");
        assert!(!contains(dynamic, ip), "{name}: {ip} is in the dynamic range {dynamic}");
        assert!(ip.octets()[3] > 1, "{name}: {ip} is the gateway's");
        if let Some(other) = seen.insert(ip, name.clone()) {
            panic!("{ip} is both {other}'s and {name}'s");
        }
    }
    // The seed's addresses are kept (the rest is the other test's job in deploy.rs).
    assert_eq!(service_ip(&c, "consul"), "172.40.0.2");
    assert_eq!(service_ip(&c, "kong"), "172.40.0.4");
}

#[test]
fn compose_health_dependencies_and_ports() {
    let c = compose();
    let all = services(&c);
    for (name, s) in all {
        if ONE_SHOT.contains(&name.as_str()) {
            assert_eq!(s["restart"], "on-failure", "{name} runs until it succeeds once");
            assert!(published(s).is_empty(), "{name} publishes nothing");
        } else {
            let test = &s["healthcheck"]["test"];
            assert!(test.as_array().is_some_and(|t| t.len() > 1), "{name} has a healthcheck: {test}");
        }
        for (target, condition) in depends_on(s) {
            let t = all.get(&target).unwrap_or_else(|| panic!("{name} depends on {target}, which does not exist"));
            match condition.as_str() {
                "service_healthy" => assert!(t["healthcheck"].is_object(), "{name} waits on {target}'s health"),
                "service_completed_successfully" => assert!(ONE_SHOT.contains(&target.as_str()), "{target}"),
                other => panic!("{name} → {target}: `{other}`; wait on health where there is a healthcheck"),
            }
            // A service of the default `up` must not need one that only a profile starts.
            if s["profiles"].is_null() {
                assert!(t["profiles"].is_null(), "{name} depends on {target}, which is behind a profile");
            }
        }
    }
    let ports = |name: &str| published(&all[name]);
    assert!(ports("consul").contains("8500:8500"));
    assert!(ports("kong").contains("8000:8000"));
    assert!(ports("konga").contains("1337:1337"));
    assert!(ports("mysql").contains("3306:3306"));
    assert!(ports("consul-dns").is_superset(&["8600:8600/udp".to_owned(), "8600:8600/tcp".to_owned()].into()));
    for name in ["kafka", "canal"] {
        assert_eq!(all[name]["profiles"], serde_json::json!(["canal"]), "{name} only with --profile canal");
    }
    assert_eq!(all["canal"]["environment"]["canal.serverMode"], "kafka");
    let kafka = format!("{}:9092", service_ip(&c, "kafka"));
    assert_eq!(all["canal"]["environment"]["kafka.bootstrap.servers"], kafka.as_str());
}

#[test]
fn compose_wiring_between_services() {
    let c = compose();
    let all = services(&c);
    let consul = format!("http://{}:8500", service_ip(&c, "consul"));
    let command = consul_dns_command(&c);
    assert!(command.contains(&format!("--consul={consul}")), "{command:?}");

    // The example services register with the agent consul-dns reads.
    let examples: Vec<&String> = all.keys().filter(|n| n.starts_with("user-") || n.starts_with("order-")).collect();
    assert_eq!(examples.len(), 4, "{examples:?}");
    for name in examples {
        let env = &all[name]["environment"];
        assert_eq!(env["CONSUL_HTTP_ADDR"], consul.as_str(), "{name}");
        assert!(name.starts_with(env["SERVICE_NAME"].as_str().unwrap()), "{name}");
        assert_eq!(env["SERVICE_ID"], name.as_str(), "{name}: the instance id Kong's balancing shows");
    }

    // Who may recurse: every fixed member that uses consul-dns as its resolver (Kong and its
    // migrations), never the dynamic range where strangers land.
    let allowed: Vec<&str> = command.iter().filter_map(|a| a.strip_prefix("--allow-recursion=")).collect();
    assert!(!allowed.is_empty(), "an explicit allow list: {command:?}");
    let dynamic = c["networks"]["stack"]["ipam"]["config"][0]["ip_range"].as_str().unwrap();
    let (dynamic_base, _) = cidr(dynamic);
    let resolver = format!("{}:8600", service_ip(&c, "consul-dns"));
    for (name, s) in all {
        if s["environment"]["KONG_DNS_RESOLVER"].as_str() == Some(resolver.as_str()) {
            let ip: Ipv4Addr = service_ip(&c, name).parse().unwrap();
            assert!(allowed.iter().any(|net| contains(net, ip)), "{name} ({ip}) may recurse: {allowed:?}");
        }
    }
    assert!(!allowed.iter().any(|net| contains(net, dynamic_base)), "{dynamic} may not recurse: {allowed:?}");

    // Kong's configuration and Konga's connection point at Kong's admin API.
    let admin = format!("http://{}:8001", service_ip(&c, "kong"));
    assert_eq!(all["kong-config"]["environment"]["KONG_ADMIN"], admin.as_str());
    let node = std::fs::read_to_string("deploy/konga/kong_node.data").unwrap();
    assert!(node.contains(&format!("\"kong_admin_url\": \"{admin}\"")), "{node}");
}

/// One request the stand-in admin API received: method, path, form body.
type Seen = (String, String, String);

/// A stand-in for Kong's admin API on loopback: records each request and answers 200 (or
/// `status` for paths containing `fail_on`).
fn admin_api(fail_on: Option<&'static str>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let parts: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (method, path) = (parts[0].clone(), parts[1].clone());
            let code = if fail_on.is_some_and(|f| path.contains(f)) { "400 Bad Request" } else { "200 OK" };
            log.lock().unwrap().push((method, path, String::from_utf8_lossy(&body).into_owned()));
            let reply = r#"{"message":"schema violation"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (url, seen)
}

fn configure(admin: &str) -> std::process::Output {
    Command::new("sh").arg("deploy/kong/configure.sh").env("KONG_ADMIN", admin).output().expect("sh")
}

#[test]
fn kong_config_creates_the_seed_services_and_routes_and_stops_on_errors() {
    let (url, seen) = admin_api(None);
    let out = configure(&url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = seen.lock().unwrap().clone();
    let decoded: Vec<(String, String, BTreeSet<String>)> = seen
        .iter()
        .map(|(m, p, body)| (m.clone(), p.clone(), body.split('&').map(|f| f.replace("%5B%5D", "[]")).collect()))
        .collect();
    let fields = |list: &[&str]| list.iter().map(|f| f.to_string()).collect::<BTreeSet<String>>();
    let want = vec![
        ("PUT".into(), "/services/user".into(), fields(&["protocol=http", "host=user.service.consul", "port=8002"])),
        ("PUT".into(), "/services/user/routes/user".into(), fields(&["paths[]=/user", "strip_path=false"])),
        ("PUT".into(), "/services/order".into(), fields(&["protocol=http", "host=order.service.consul", "port=8003"])),
        ("PUT".into(), "/services/order/routes/order".into(), fields(&["paths[]=/order", "strip_path=false"])),
    ];
    assert_eq!(decoded, want);

    // Kong says no: the script fails with Kong's answer, and goes no further.
    let (url, seen) = admin_api(Some("/routes/user"));
    let out = configure(&url);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("answered 400") && err.contains("schema violation"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 2, "stopped at the first refusal");
}
