//! The fake Consul itself: blocking semantics, per-endpoint indexes (H3.5), headers and
//! shapes (H5), so the Consul backend's tests stand on a faithful fake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::fake_consul::{FakeConsul, Fault, Svc};

/// A raw HTTP/1.1 GET: (status, lower-case headers, body).
fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: consul\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn index(path: &str, fake: &FakeConsul) -> u64 {
    let (_, headers, _) = get(fake.addr, path);
    header(&headers, "x-consul-index").unwrap().parse().unwrap()
}

fn fake_with_web() -> FakeConsul {
    let fake = FakeConsul::start("dc1", &["dc2"]);
    fake.register_node("dc1", "n1", "10.0.0.1", &[("rack", "r1")]);
    fake.register(
        "dc1",
        "n1",
        Svc { checks: vec![("service:web-1".into(), "passing".into())], ..Svc::new("web", "web-1", 80) },
    );
    fake
}

#[test]
fn h3_2_a_blocking_query_is_held_until_its_index_moves() {
    let fake = fake_with_web();
    let at = index("/v1/catalog/services", &fake);
    let addr = fake.addr;
    let held = std::thread::spawn(move || {
        let start = Instant::now();
        let reply = get(addr, &format!("/v1/catalog/services?index={at}&wait=20s"));
        (start.elapsed(), reply)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!held.is_finished(), "held while nothing changes");
    fake.register("dc1", "n1", Svc::new("api", "api-1", 81));
    let (took, (status, headers, body)) = held.join().unwrap();
    assert!(took < Duration::from_secs(5), "answered on the change, not at the wait: {took:?}");
    assert_eq!(status, 200);
    assert!(header(&headers, "x-consul-index").unwrap().parse::<u64>().unwrap() > at);
    assert!(body.contains("\"api\""), "{body}");
}

#[test]
fn h3_2_wait_elapses_with_the_same_index_and_index_zero_answers_at_once() {
    let fake = fake_with_web();
    let at = index("/v1/catalog/services", &fake);
    let start = Instant::now();
    let (status, headers, _) = get(fake.addr, &format!("/v1/catalog/services?index={at}&wait=200ms"));
    let took = start.elapsed();
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-consul-index"), Some(at.to_string()), "same index after the wait");
    assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(200 * 17 / 16 + 500), "{took:?}");
    let start = Instant::now();
    get(fake.addr, "/v1/catalog/services?index=0&wait=10s");
    assert!(start.elapsed() < Duration::from_millis(500), "index 0 never blocks");
    assert_eq!(get(fake.addr, "/v1/catalog/services?wait=5x").0, 400, "Invalid wait time");
}

#[test]
fn h3_5_each_endpoint_moves_with_its_own_table() {
    let fake = fake_with_web();
    fake.register_node("dc1", "n2", "10.0.0.2", &[]);
    fake.register("dc1", "n2", Svc::new("api", "api-1", 81));
    let services = index("/v1/catalog/services", &fake);
    let web = index("/v1/health/service/web", &fake);
    let api = index("/v1/health/service/api", &fake);
    let checks = index("/v1/health/state/any", &fake);
    fake.set_check("dc1", "n1", "service:web-1", "web-1", "critical");
    assert_eq!(index("/v1/catalog/services", &fake), services, "checks do not move the services index");
    assert!(index("/v1/health/service/web", &fake) > web, "web's checks moved web");
    assert_eq!(index("/v1/health/service/api", &fake), api, "but not api");
    assert!(index("/v1/health/state/any", &fake) > checks);
    let nodes = index("/v1/catalog/nodes", &fake);
    fake.register("dc1", "n2", Svc::new("db", "db-1", 82));
    assert!(index("/v1/catalog/services", &fake) > services);
    assert_eq!(index("/v1/catalog/nodes", &fake), nodes, "a service registration leaves the nodes table");
}

#[test]
fn h5_shapes_and_headers() {
    let fake = fake_with_web();
    fake.register("dc1", "n1", Svc::new("portless", "portless-1", 0));
    let (status, headers, body) = get(fake.addr, "/v1/health/service/web?stale");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-consul-effective-consistency").as_deref(), Some("stale"));
    assert_eq!(header(&headers, "x-consul-default-acl-policy").as_deref(), Some("allow"));
    assert_eq!(header(&headers, "x-consul-knownleader").as_deref(), Some("true"));
    let entries: Value = serde_json::from_str(&body).unwrap();
    let entry = &entries[0];
    assert_eq!(entry["Node"]["Node"], "n1");
    assert_eq!(entry["Node"]["TaggedAddresses"]["lan_ipv4"], "10.0.0.1");
    assert_eq!(entry["Service"]["Port"], 80);
    assert_eq!(entry["Service"]["Weights"]["Passing"], 1);
    assert!(entry["Service"].get("Kind").is_none() && entry["Service"].get("TaggedAddresses").is_none(), "omitempty");
    assert_eq!(entry["Checks"][0]["ServiceID"], "web-1");
    let (_, _, body) = get(fake.addr, "/v1/health/service/portless");
    let entries: Value = serde_json::from_str(&body).unwrap();
    assert!(entries[0]["Service"].get("Port").is_none(), "Port omitted when 0");
    assert_eq!(get(fake.addr, "/v1/health/service/missing").2, "[]", "a missing service is [] with 200");
    let (status, headers, body) = get(fake.addr, "/v1/catalog/datacenters");
    assert_eq!((status, body.as_str()), (200, r#"["dc1","dc2"]"#));
    assert_eq!(header(&headers, "x-consul-index"), None, "non-blocking endpoints send no index");
    assert_eq!(get(fake.addr, "/v1/catalog/services?dc=nowhere").0, 500, "No path to datacenter");
    fake.set_check("dc1", "n1", "service:web-1", "web-1", "critical");
    let (_, _, body) = get(fake.addr, "/v1/health/state/any?filter=Status%20!%3D%20%22passing%22");
    let checks: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(checks.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(checks[0]["Status"], "critical");
}

#[test]
fn faults_counters_and_refusal() {
    let fake = fake_with_web();
    fake.set_fault(Fault::Status(500, "No cluster leader"));
    assert_eq!(get(fake.addr, "/v1/catalog/services").0, 500);
    fake.set_fault(Fault::Truncated);
    let (status, _, body) = get(fake.addr, "/v1/catalog/services");
    assert!(status == 200 && serde_json::from_str::<Value>(&body).is_err(), "{body}");
    fake.set_fault(Fault::WrongShape);
    let body = get(fake.addr, "/v1/catalog/nodes").2;
    assert!(serde_json::from_str::<Value>(&body).unwrap().is_object(), "an object where an array belongs");
    fake.clear_fault();
    let before = index("/v1/catalog/services", &fake);
    fake.index_goes_backwards();
    assert!(index("/v1/catalog/services", &fake) < before);
    assert!(fake.requests() >= 5 && fake.peak_in_flight() >= 1);
    fake.stop_listening();
    std::thread::sleep(Duration::from_millis(100));
    assert!(TcpStream::connect(fake.addr).is_err(), "refused while stopped");
    fake.resume_listening();
    assert_eq!(get(fake.addr, "/v1/catalog/services").0, 200);
}

#[test]
fn an_index_above_the_current_one_is_held_for_the_wait_and_a_restore_answers_held_queries() {
    let fake = fake_with_web();
    let at = index("/v1/catalog/services", &fake);
    let start = Instant::now();
    let (status, headers, _) = get(fake.addr, &format!("/v1/catalog/services?index={}&wait=300ms", at + 100));
    assert_eq!(status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300), "held as Consul holds it: {:?}", start.elapsed());
    assert_eq!(header(&headers, "x-consul-index"), Some(at.to_string()), "then answered with the lower index");

    let addr = fake.addr;
    let held = std::thread::spawn(move || {
        let start = Instant::now();
        let (_, headers, _) = get(addr, &format!("/v1/catalog/services?index={at}&wait=20s"));
        (start.elapsed(), header(&headers, "x-consul-index").unwrap().parse::<u64>().unwrap())
    });
    std::thread::sleep(Duration::from_millis(200));
    fake.index_goes_backwards();
    let (took, after) = held.join().unwrap();
    assert!(took < Duration::from_secs(5), "a restore abandons the held query: {took:?}");
    assert!(after < at, "with the restored, lower index: {after} vs {at}");
}
