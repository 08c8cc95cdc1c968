//! The container image and the compose stack (Dockerfile, docker-compose.yml). There is no
//! Docker engine here, so the files are checked statically (docker-compose's own validation,
//! the fixed addresses, Kong's resolver) and the consul-dns command of the stack runs for real
//! on loopback: the fake Consul stands in for 172.40.0.2 and a test upstream for Docker's DNS.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::rr::{RData, RecordType};
use serde_json::Value;

use crate::support::daemon::run_binary;
use crate::support::fake_consul::{FakeConsul, Svc};
use crate::support::upstream::{KONG_DATABASE_IP, Mode, Upstream};
use crate::support::{Daemon, query_tcp, query_udp};

/// docker-compose.yml as JSON (PyYAML comes with Debian's docker-compose; it also resolves the
/// `<<: *kong-env` merge the way Compose does).
pub(crate) fn compose() -> Value {
    let out = Command::new("python3")
        .args(["-c", "import json, yaml; print(json.dumps(yaml.safe_load(open('docker-compose.yml'))))"])
        .output()
        .expect("python3 (scripts/test installs docker-compose, which brings PyYAML)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn service_ip<'a>(c: &'a Value, service: &str) -> &'a str {
    c["services"][service]["networks"]["stack"]["ipv4_address"]
        .as_str()
        .unwrap_or_else(|| panic!("{service}: no fixed address"))
}

pub(crate) fn consul_dns_command(c: &Value) -> Vec<String> {
    c["services"]["consul-dns"]["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

#[test]
fn compose_file_passes_docker_compose_config() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .output()
        .expect("docker-compose is installed (scripts/test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn stack_has_its_fixed_addresses_and_kong_resolves_through_consul_dns() {
    let c = compose();
    let ipam = &c["networks"]["stack"]["ipam"]["config"][0];
    assert_eq!(ipam["subnet"], "172.40.0.0/24");
    assert_eq!(ipam["ip_range"], "172.40.0.128/25", "dynamic addresses stay clear of the fixed ones");
    let fixed = [
        ("consul", "172.40.0.2"),
        ("kong-database", "172.40.0.3"),
        ("kong", "172.40.0.4"),
        ("konga", "172.40.0.5"),
        ("etcd", "172.40.0.6"),
        ("mysql", "172.40.0.7"),
        ("canal", "172.40.0.8"),
        ("consul-dns", "172.40.0.9"),
    ];
    for (service, ip) in fixed {
        assert_eq!(service_ip(&c, service), ip, "{service}");
    }
    let resolver = format!("{}:8600", service_ip(&c, "consul-dns"));
    for kong in ["kong", "kong-migrations"] {
        let env = &c["services"][kong]["environment"];
        assert_eq!(env["KONG_DNS_RESOLVER"], resolver.as_str(), "{kong} asks consul-dns");
        assert_eq!(env["KONG_DNS_ORDER"], "SRV,LAST,A,CNAME", "{kong}");
        assert_eq!(env["KONG_PG_HOST"], "kong-database", "{kong}: a name consul-dns must relay");
    }
    let command = consul_dns_command(&c);
    let consul = format!("--consul=http://{}:8500", service_ip(&c, "consul"));
    assert!(command.contains(&consul), "consul-dns reads the stack's Consul: {command:?}");
    assert!(command.contains(&"--listen=0.0.0.0:8600".to_owned()), "{command:?}");
}

#[test]
fn dockerfile_command_is_a_valid_configuration() {
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    let cmd = dockerfile.lines().find_map(|l| l.strip_prefix("CMD ")).expect("a CMD line");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec (JSON) form");
    assert!(dockerfile.contains(r#"ENTRYPOINT ["consul-dns"]"#));
    assert!(dockerfile.contains(r#"CMD ["consul-dns", "healthcheck", "127.0.0.1:8600"]"#), "healthcheck without dig");
    assert!(dockerfile.contains("COPY config/services.toml /etc/consul-dns/services.toml"));
    let local: Vec<String> =
        args.iter().map(|a| a.replace("/etc/consul-dns/services.toml", "config/services.toml")).collect();
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    let (code, out, err) = run_binary(&[&["--check-config"], &local[..]].concat());
    assert_eq!(code, Some(0), "{out}{err}");
}

/// SRV then A per target, as Kong's resolver asks (UDP without EDNS, TCP after TC).
fn kong_lookup(d: &Daemon, name: &str) -> BTreeSet<(IpAddr, u16)> {
    let ask = |name: &str, qtype| {
        let udp = query_udp(d.addr, name, qtype, None);
        if udp.truncated() { query_tcp(d.addr, name, qtype) } else { udp }
    };
    let mut pairs = BTreeSet::new();
    for record in &ask(name, RecordType::SRV).message.answers {
        let RData::SRV(srv) = &record.data else { continue };
        for a in &ask(&srv.target.to_string(), RecordType::A).message.answers {
            if let RData::A(ip) = &a.data {
                pairs.insert((IpAddr::V4(ip.0), srv.port));
            }
        }
    }
    pairs
}

#[test]
fn stack_consul_dns_command_serves_kong_on_loopback() {
    let c = compose();
    let fake = FakeConsul::start("dc1", &[]);
    let mut expected = BTreeSet::new();
    for i in 1..=3u8 {
        let node = format!("app{i}");
        let address = format!("127.0.0.{}", 20 + i);
        fake.register_node("dc1", &node, &address, &[]);
        fake.register("dc1", &node, Svc::new("user", &format!("user-{i}"), 8000 + u16::from(i)));
        expected.insert((address.parse().unwrap(), 8000 + u16::from(i)));
    }
    let upstream = Upstream::start(Mode::Answer); // Docker's DNS (127.0.0.11) in the stack
    let state = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = consul_dns_command(&c)
        .into_iter()
        .filter(|a| !a.starts_with("--listen=") && !a.starts_with("--http=")) // the harness binds loopback
        .map(|a| match a.split_once('=') {
            Some(("--consul", _)) => format!("--consul={}", fake.url()),
            Some(("--state-dir", _)) => format!("--state-dir={}", state.path().display()),
            _ => a,
        })
        .collect();
    args.extend(["--recursor".to_owned(), upstream.arg()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &args);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = kong_lookup(&d, "user.service.consul");
    while got != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50)); // polling for the first sync, bounded
        got = kong_lookup(&d, "user.service.consul");
    }
    assert_eq!(got, expected, "Kong balances over the instances registered in Consul; log:\n{}", d.log());
    let pg_host = c["services"]["kong"]["environment"]["KONG_PG_HOST"].as_str().unwrap();
    let a = query_udp(d.addr, pg_host, RecordType::A, None);
    let ips: Vec<IpAddr> = a
        .message
        .answers
        .iter()
        .filter_map(|r| if let RData::A(ip) = &r.data { Some(IpAddr::V4(ip.0)) } else { None })
        .collect();
    assert_eq!(ips, [IpAddr::V4(KONG_DATABASE_IP)], "Kong's database host is relayed");
}

/// deploy/compose/mysql.yml: the stack with consul-dns reading MySQL instead of Consul. The
/// merged file validates; consul-dns's command there is a configuration the daemon accepts,
/// naming the stack's MySQL with its password hidden; the schema's one-shot has an address of
/// its own and runs before consul-dns.
#[test]
fn mysql_override_runs_consul_dns_on_the_stacks_database() {
    let files = ["-f", "docker-compose.yml", "-f", "deploy/compose/mysql.yml"];
    let out = Command::new("docker-compose").args(files).args(["config", "-q"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let load = |file: &str| -> Value {
        let script = format!("import json, yaml; print(json.dumps(yaml.safe_load(open('{file}'))))");
        let out = Command::new("python3").args(["-c", &script]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (base, over) = (compose(), load("deploy/compose/mysql.yml"));
    let command = consul_dns_command(&over);
    let database = command.iter().find_map(|a| a.strip_prefix("--database-url=")).expect("a database source");
    assert!(database.contains(&format!("@{}:3306/", service_ip(&base, "mysql"))), "{database}");
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let (code, out, err) = crate::support::daemon::run_binary(&[&["--check-config"], &args[..]].concat());
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("MySQL/MariaDB source at mysql://root:***@") && !out.contains("root:root"),
        "password hidden: {out}"
    );
    let init = service_ip(&over, "consul-dns-db");
    let taken: Vec<&str> = base["services"].as_object().unwrap().keys().map(|s| service_ip_or(&base, s)).collect();
    assert!(!taken.contains(&init), "{init} is taken");
    assert!(init.starts_with("172.40.0.") && init.rsplit('.').next().unwrap().parse::<u8>().unwrap() < 128);
    let after = &over["services"]["consul-dns"]["depends_on"]["consul-dns-db"]["condition"];
    assert_eq!(after, "service_completed_successfully");
}

fn service_ip_or<'a>(c: &'a Value, service: &str) -> &'a str {
    c["services"][service]["networks"]["stack"]["ipv4_address"].as_str().unwrap_or("")
}
