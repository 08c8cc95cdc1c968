//! Operations (issue 7): /metrics counts exactly what was asked, /health and /ready, the
//! catalog as JSON, a CPU profile read by the real `go tool pprof`, the query log, JSON logs,
//! a graceful SIGTERM with a TCP query in flight, and the Grafana dashboard's queries.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::support::client::{packet, query_tcp_from, query_udp_from, read_framed};
use crate::support::http::{get, samples};
use crate::support::upstream::{Mode, Upstream};
use crate::support::{Daemon, query_tcp, query_udp};

/// `web`: two instances; `big`: eight, more than a 512-byte UDP reply carries (TC).
const CATALOG: &str = "\
[[nodes]]\nname = \"n1\"\naddress = \"127.0.0.21\"\n\
[[services]]\nname = \"web\"\nid = \"web-1\"\nnode = \"n1\"\nport = 80\ntags = [\"v1\"]\n\
[[services]]\nname = \"web\"\nid = \"web-2\"\naddress = \"127.0.0.42\"\nport = 81\n\
[[services]]\nname = \"big\"\nid = \"big-1\"\naddress = \"127.0.1.1\"\nport = 1\n\
[[services]]\nname = \"big\"\nid = \"big-2\"\naddress = \"127.0.1.2\"\nport = 1\n\
[[services]]\nname = \"big\"\nid = \"big-3\"\naddress = \"127.0.1.3\"\nport = 1\n\
[[services]]\nname = \"big\"\nid = \"big-4\"\naddress = \"127.0.1.4\"\nport = 1\n\
[[services]]\nname = \"big\"\nid = \"big-5\"\naddress = \"127.0.1.5\"\nport = 1\n\
[[services]]\nname = \"big\"\nid = \"big-6\"\naddress = \"127.0.1.6\"\nport = 1\n\
[[services]]\nname = \"big\"\nid = \"big-7\"\naddress = \"127.0.1.7\"\nport = 1\n\
[[services]]\nname = \"big\"\nid = \"big-8\"\naddress = \"127.0.1.8\"\nport = 1\n";

/// Polls `done` every 20 ms until it holds or `within` passes.
fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn scrape(d: &Daemon) -> BTreeMap<String, f64> {
    let reply = get(d.http(), "/metrics");
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("text/plain; version=0.0.4"), "{}", reply.content_type);
    samples(&reply.text())
}

/// Every sample of `family` (all its label sets), for exact comparison.
fn family(all: &BTreeMap<String, f64>, name: &str) -> BTreeMap<String, f64> {
    all.iter()
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .map(|(series, value)| (series.clone(), *value))
        .collect()
}

/// `expected` holds the non-zero samples; every other sample of the family must be 0.
fn assert_family(all: &BTreeMap<String, f64>, name: &str, expected: &[(&str, f64)]) {
    let got = family(all, name);
    let nonzero: BTreeMap<String, f64> = got.into_iter().filter(|(_, v)| *v != 0.0).collect();
    let want: BTreeMap<String, f64> = expected.iter().map(|(labels, v)| (format!("{name}{labels}"), *v)).collect();
    assert_eq!(nonzero, want, "{name}");
}

#[test]
fn metrics_count_a_known_set_of_queries_exactly() {
    let silent = Upstream::start(Mode::Silent);
    let good = Upstream::start(Mode::Answer);
    let (silent_arg, good_arg) = (silent.arg(), good.arg());
    let args = [
        "--recursor",
        &silent_arg,
        "--recursor",
        &good_arg,
        "--recursor-timeout",
        "300ms",
        "--allow-recursion",
        "127.0.0.1",
    ];
    let d = Daemon::start(CATALOG, &args);
    for _ in 0..3 {
        assert_eq!(query_udp(d.addr, "web.service.consul", RecordType::A, Some(1232)).rcode(), 0);
    }
    assert_eq!(query_udp(d.addr, "web.service.consul", RecordType::SRV, Some(1232)).answers().len(), 2);
    for _ in 0..2 {
        assert_eq!(query_udp(d.addr, "nope.service.consul", RecordType::A, None).rcode(), 3);
    }
    assert!(query_udp(d.addr, "big.service.consul", RecordType::A, None).truncated());
    assert_eq!(query_udp(d.addr, "web.service.consul", RecordType::NAPTR, None).rcode(), 0, "NODATA, qtype other");
    for _ in 0..2 {
        // The first waits out the silent recursor, the second comes from the cache.
        assert_eq!(query_udp(d.addr, "kong-database", RecordType::A, None).answers().len(), 1);
    }
    assert_eq!(query_udp_from("127.0.0.2", d.addr, "example.org", RecordType::A, None).rcode(), 5);
    assert_eq!(query_tcp(d.addr, "web.service.consul", RecordType::A).answers().len(), 2);
    assert_eq!(query_tcp_from("127.0.0.1", d.addr, "kong-database", RecordType::A).answers().len(), 1);
    assert_eq!(good.queries(), 1, "one upstream answer, then the cache");

    // A reply can reach us a moment before its latency is recorded (last, after the send):
    // wait for the histograms to hold all 13 replies, then every count must be exact.
    let counted = |m: &BTreeMap<String, f64>, proto: &str| {
        m.get(&format!("consul_dns_dns_request_duration_seconds_count{{proto=\"{proto}\"}}")).copied()
    };
    let mut m = scrape(&d);
    assert!(
        eventually(Duration::from_secs(5), || {
            m = scrape(&d);
            counted(&m, "udp") == Some(11.0) && counted(&m, "tcp") == Some(2.0)
        }),
        "{m:#?}"
    );
    assert_family(
        &m,
        "consul_dns_dns_requests_total",
        &[
            ("{proto=\"udp\",qtype=\"A\"}", 9.0),
            ("{proto=\"udp\",qtype=\"SRV\"}", 1.0),
            ("{proto=\"udp\",qtype=\"other\"}", 1.0),
            ("{proto=\"tcp\",qtype=\"A\"}", 2.0),
        ],
    );
    assert_family(
        &m,
        "consul_dns_dns_responses_total",
        &[
            ("{proto=\"udp\",rcode=\"NOERROR\"}", 8.0),
            ("{proto=\"udp\",rcode=\"NXDOMAIN\"}", 2.0),
            ("{proto=\"udp\",rcode=\"REFUSED\"}", 1.0),
            ("{proto=\"tcp\",rcode=\"NOERROR\"}", 2.0),
        ],
    );
    assert_family(&m, "consul_dns_dns_truncated_responses_total", &[("{proto=\"udp\"}", 1.0)]);
    assert_family(&m, "consul_dns_forward_requests_total", &[("{proto=\"udp\"}", 2.0), ("{proto=\"tcp\"}", 1.0)]);
    assert_family(&m, "consul_dns_forward_cache_hits_total", &[("", 2.0)]);
    assert_family(&m, "consul_dns_forward_upstream_errors_total", &[("{reason=\"timeout\"}", 1.0)]);
    let slow = m["consul_dns_dns_request_duration_seconds_bucket{proto=\"udp\",le=\"0.25\"}"];
    assert_eq!(slow, 10.0, "all but the relayed answer that waited 300 ms for the silent recursor");
    assert_family(&m, "consul_dns_catalog_services", &[("", 2.0)]);
    assert_family(&m, "consul_dns_catalog_instances", &[("", 10.0)]);
    assert_family(&m, "consul_dns_catalog_nodes", &[("", 1.0)]);
    assert_family(&m, "consul_dns_sync_publishes_total", &[("{backend=\"file\"}", 1.0)]);
    assert_family(&m, "consul_dns_sync_failures_total", &[]);
    assert_family(&m, "consul_dns_config_reloads_total", &[]);
    assert!(m["consul_dns_catalog_snapshot_age_seconds"] < 60.0, "the file is re-checked every 250 ms");
    assert_eq!(Some(m["consul_dns_catalog_serial"]), get(d.http(), "/ready").json()["serial"].as_f64());
}

#[test]
fn sync_failures_are_exported_at_zero_before_the_first_failure() {
    let d = Daemon::start(CATALOG, &[]);
    let m = samples(&get(d.http(), "/metrics").text());
    for reason in ["read", "parse", "invalid"] {
        let series = format!("consul_dns_sync_failures_total{{backend=\"file\",reason=\"{reason}\"}}");
        assert_eq!(m.get(&series), Some(&0.0), "{series}");
    }
    assert!(!m.keys().any(|k| k.contains("backend=\"consul\"")), "only the backend that runs");
}

#[test]
fn catalog_json_is_filtered_by_service_and_node() {
    let d = Daemon::start(CATALOG, &[]);
    let services = |path: &str| {
        let reply = get(d.http(), path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let json = reply.json();
        json["datacenters"]["dc1"]["services"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(services("/v1/catalog").map(|s| s.len()), Some(2));
    assert_eq!(services("/v1/catalog?service=web"), Some(vec!["web".to_string()]));
    assert_eq!(services("/v1/catalog?node=N1"), Some(vec!["web".to_string()]), "case-insensitive node");
    assert_eq!(services("/v1/catalog?node=ghost"), None);
    let bad = get(d.http(), "/v1/catalog?tag=v1");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().is_some_and(|e| e.contains("service=")), "{}", bad.text());
}

#[test]
fn health_ready_and_catalog_answer_json() {
    let d = Daemon::start(CATALOG, &[]);
    let health = get(d.http(), "/health");
    assert_eq!((health.status, health.content_type.as_str()), (200, "application/json"));
    assert_eq!(health.json()["alive"], true);
    let ready = get(d.http(), "/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!((ready.json()["ready"].as_bool(), ready.json()["synced"].as_bool()), (Some(true), Some(true)));
    let catalog = get(d.http(), "/v1/catalog").json();
    assert_eq!(catalog["counts"], serde_json::json!({"services": 2, "instances": 10, "nodes": 1}));
    assert_eq!(catalog["serial"], ready.json()["serial"]);
    let web = &catalog["datacenters"]["dc1"]["services"]["web"];
    assert_eq!(
        web[0],
        serde_json::json!({"node": "n1", "addresses": ["127.0.0.21"], "port": 80, "weight": 1, "tags": ["v1"]})
    );
    assert_eq!(web[1]["addresses"], serde_json::json!(["127.0.0.42"]));
    assert_eq!(get(d.http(), "/nope").status, 404);
    assert_eq!(get(d.http(), "/debug/pprof/profile?seconds=0").status, 400);
}

/// With the `heap-profile` feature, `go tool pprof` reads the heap; without it the endpoint
/// says how to get one (scripts/test runs this test both ways).
#[test]
fn heap_profile_is_read_by_go_tool_pprof_or_says_how_to_get_one() {
    let d = Daemon::start(&crate::support::big_catalog("big", 3000), &[]);
    let url = format!("http://{}/debug/pprof/heap", d.http());
    if !cfg!(feature = "heap-profile") {
        let reply = get(d.http(), "/debug/pprof/heap");
        assert_eq!(reply.status, 501, "{}", reply.text());
        assert!(reply.text().contains("--features heap-profile"), "{}", reply.text());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-top", "-sample_index=inuse_space", &url])
        .env("PPROF_TMPDIR", tmp.path())
        .env("HOME", tmp.path())
        // Recent Go toolchains build `go tool pprof` on first use and keep it in the build
        // cache: a cache that outlives the test builds it once, not at every run.
        .env("GOCACHE", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/gocache"))
        .output()
        .expect("go is installed (apt-get install golang-go; scripts/test does this)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "go tool pprof failed:\n{stderr}\n{stdout}");
    assert!(stdout.contains("inuse_space"), "{stdout}\n{stderr}");
    assert!(stdout.contains("consul_dns::"), "the catalog's allocations, symbolized: {stdout}");
}

#[test]
fn pprof_index_lists_what_can_be_fetched() {
    let d = Daemon::start(CATALOG, &[]);
    for path in ["/debug/pprof/", "/debug/pprof"] {
        let index = get(d.http(), path);
        assert_eq!((index.status, index.content_type.as_str()), (200, "text/html; charset=utf-8"), "{path}");
        assert!(index.text().contains("href=\"/debug/pprof/profile?seconds=30\""), "{}", index.text());
    }
}

#[test]
fn cpu_profile_is_read_by_go_tool_pprof() {
    let d = Daemon::start(CATALOG, &[]);
    let url = format!("http://{}/debug/pprof/profile?seconds=2", d.http());
    let tmp = tempfile::tempdir().unwrap();
    let mut pprof = Command::new("go")
        // pprof's own fetch timeout is the profile's seconds plus a little; a loaded CI machine
        // has been seen to need more than that for the in-process symbolization.
        .args(["tool", "pprof", "-timeout", "120", "-top", &url])
        .env("PPROF_TMPDIR", tmp.path())
        .env("HOME", tmp.path())
        // Recent Go toolchains build `go tool pprof` on first use and keep it in the build
        // cache: a cache that outlives the test builds it once, not at every run.
        .env("GOCACHE", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/gocache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("go is installed (apt-get install golang-go; scripts/test does this)");
    // Keep the workers busy until pprof has its profile (however long go takes to start), so
    // the profile has samples of our code.
    let deadline = Instant::now() + Duration::from_secs(300);
    while pprof.try_wait().unwrap().is_none() && Instant::now() < deadline {
        let _ = query_udp(d.addr, "web.service.consul", RecordType::SRV, Some(1232));
    }
    let out = pprof.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "go tool pprof failed:\n{stderr}\n{stdout}");
    assert!(stdout.contains("Type: cpu"), "{stdout}\n{stderr}");
    assert!(stdout.contains("flat%"), "a -top table: {stdout}");
    assert!(stdout.contains("consul_dns::"), "samples in our own code: {stdout}");
}

#[test]
fn query_log_samples_and_json_log_format() {
    let d = Daemon::start(CATALOG, &["--query-log-sample", "1", "--log-format", "json"]);
    assert_eq!(query_udp(d.addr, "web.service.consul", RecordType::SRV, None).answers().len(), 2);
    assert_eq!(query_tcp(d.addr, "nope.service.consul", RecordType::A).rcode(), 3);
    // Each line is written after its reply went out, by the worker that sent it: wait for both.
    assert!(d.wait_for_log("nope.service.consul", Duration::from_secs(5)), "{}", d.log());
    assert!(d.wait_for_log("web.service.consul", Duration::from_secs(5)), "{}", d.log());
    let lines: Vec<serde_json::Value> = d.log().lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    let queries: Vec<&serde_json::Value> = lines.iter().filter(|l| l["message"] == "Query.").collect();
    let mut summary: Vec<(String, String, String, String)> = queries
        .iter()
        .map(|q| {
            let text = |k: &str| q[k].as_str().unwrap_or_default().to_owned();
            (text("proto"), text("name"), text("qtype"), text("rcode"))
        })
        .collect();
    summary.sort(); // each is written after its reply went out, in no fixed order
    assert_eq!(
        summary,
        [
            ("tcp".into(), "nope.service.consul".into(), "A".into(), "NXDOMAIN".into()),
            ("udp".into(), "web.service.consul".into(), "SRV".into(), "NOERROR".into()),
        ]
    );
    assert!(queries.iter().all(|q| q["target"] == "consul_dns::query"));
    let quiet = Daemon::start(CATALOG, &[]);
    query_udp(quiet.addr, "web.service.consul", RecordType::A, None);
    query_tcp(quiet.addr, "web.service.consul", RecordType::A);
    assert!(!quiet.log().contains("Query."), "off by default: {}", quiet.log());
}

#[test]
fn sigterm_finishes_the_tcp_query_in_flight_and_exits_0() {
    let mut d = Daemon::start(CATALOG, &[]);
    let idle = TcpStream::connect(d.addr).unwrap();
    let mut busy = TcpStream::connect(d.addr).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let query = packet("web.service.consul", RecordType::A, None);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    let (first, rest) = framed.split_at(framed.len() / 2);
    busy.write_all(first).unwrap(); // mid-query: the length and half the question
    assert!(eventually(Duration::from_secs(5), || get(d.http(), "/ready").status == 200));
    d.signal("TERM");
    assert!(d.wait_for_log("Shutting down.", Duration::from_secs(5)), "{}", d.log());
    let ready = get(d.http(), "/ready");
    assert_eq!((ready.status, ready.json()["reason"].as_str()), (503, Some("stopping")), "draining is not ready");
    busy.write_all(rest).unwrap();
    let reply = read_framed(&mut busy).expect("the query in flight is answered");
    assert_eq!(&reply[..2], &query[..2]);
    assert_eq!(d.wait_exit(Duration::from_secs(5)), Some(0), "{}", d.log());
    let log = d.log();
    assert!(log.contains("TCP connections drained."), "{log}");
    assert!(log.contains("Stopped."), "{log}");
    drop(idle);
}

#[test]
fn grafana_dashboard_queries_only_metrics_a_real_scrape_has() {
    let d = Daemon::start(CATALOG, &["--recursor", "127.0.0.1:9", "--recursor-timeout", "200ms"]);
    query_udp(d.addr, "web.service.consul", RecordType::A, None);
    query_tcp(d.addr, "web.service.consul", RecordType::A);
    query_udp(d.addr, "kong-database", RecordType::A, None);
    d.write_catalog("[[nodes]]\nname = \"n1\"\naddres = \"x\"\n");
    assert!(d.wait_for_log("Catalog source failed", Duration::from_secs(5)), "{}", d.log());
    let scraped = get(d.http(), "/metrics").text();
    let names: std::collections::BTreeSet<&str> =
        scraped.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let dashboard = std::fs::read_to_string("deploy/grafana/consul-dns.json").unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    let mut queried = std::collections::BTreeSet::new();
    for expr in &exprs {
        for (at, _) in expr.match_indices("consul_dns_") {
            let name: String = expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            queried.insert(name);
        }
    }
    for name in &queried {
        assert!(names.contains(name.as_str()), "the dashboard queries {name}, which /metrics does not have");
    }
    let families: std::collections::BTreeSet<&str> =
        consul_dns::telemetry::metrics::FAMILIES.iter().map(|f| f.name).collect();
    for family in &families {
        let used = queried
            .iter()
            .any(|q| q.strip_prefix(family).is_some_and(|s| ["", "_bucket", "_sum", "_count"].contains(&s)));
        assert!(used, "the dashboard shows {family}");
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn scraped_metric_names_follow_the_naming_rules() {
    let d = Daemon::start(CATALOG, &[]);
    let scraped = get(d.http(), "/metrics").text();
    let declared: Vec<(&str, &str)> =
        scraped.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_once(' ')).collect();
    assert!(declared.len() >= 15, "{scraped}");
    for (name, kind) in &declared {
        assert!(name.starts_with("consul_dns_"), "{name}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
        assert_eq!(*kind == "counter", name.ends_with("_total"), "{name} {kind}: _total iff counter");
        if *kind == "histogram" {
            assert!(name.ends_with("_seconds"), "{name}: histograms here are durations");
        }
    }
    for line in scraped.lines().filter(|l| !l.starts_with('#')) {
        let series = line.split(' ').next().unwrap();
        let family = series.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| family.strip_suffix(s)).unwrap_or(family);
        assert!(declared.iter().any(|(n, _)| *n == family || *n == base), "{series} has a # TYPE");
        if let Some(labels) = series.split_once('{').map(|(_, l)| l.trim_end_matches('}')) {
            for pair in labels.split(',') {
                let (key, value) = pair.split_once('=').unwrap();
                assert!(!["service", "name", "node", "client"].contains(&key), "{series}: no high-cardinality label");
                assert!(value.starts_with('"') && value.ends_with('"'), "{series}");
            }
        }
    }
}
