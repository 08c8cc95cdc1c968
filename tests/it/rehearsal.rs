//! The stack rehearsed on its real addresses, without Docker: network namespaces on a bridge
//! of their own (deploy/rehearsal/netlab.sh) give each container of docker-compose.yml its
//! fixed address in 172.40.0.0/24. On them run the fake Consul (the agent at consul's address,
//! with the agent endpoints the services call), the Go example services (registering
//! themselves with it), a resolver at 127.0.0.11 inside consul-dns's namespace answering
//! container names as Docker's DNS does, and consul-dns with the compose file's own command
//! line. From Kong's address, dig runs Kong's lookup sequence and HTTP reaches the instances it
//! found; from a stranger's address outside the allow list, names outside consul. are REFUSED.
//! The lab has no route beyond its subnet and no leg in this machine's namespace, and its
//! guard tears it down when the test ends, failed or not.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploy::{compose, consul_dns_command, service_ip};
use crate::examples::http_get;
use crate::support::Daemon;
use crate::support::daemon::binary;
use crate::support::fake_consul::FakeConsul;
use crate::support::go_examples;
use crate::support::netns::{self, Lab};
use crate::support::upstream::Upstream;

/// The stranger: an address inside the stack's subnet but in the dynamic half, where no
/// fixed member lives (any container attached without an address lands there).
const STRANGER: &str = "172.40.0.200";

/// An example replica of the compose file: its compose name (the lab host), service name,
/// instance id and environment.
struct Example {
    host: String,
    service: String,
    id: String,
    env: BTreeMap<String, String>,
}

fn examples(c: &Value) -> Vec<Example> {
    let services = c["services"].as_object().expect("services");
    services
        .iter()
        .filter(|(_, s)| {
            s["build"]["context"].as_str().is_some_and(|ctx| ctx.trim_end_matches('/').ends_with("examples"))
        })
        .map(|(host, s)| {
            let env: BTreeMap<String, String> = s["environment"]
                .as_object()
                .expect("environment")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect();
            Example { host: host.clone(), service: env["SERVICE_NAME"].clone(), id: env["SERVICE_ID"].clone(), env }
        })
        .collect()
}

fn output(mut command: Command) -> Output {
    let out = command.output().expect("run a command in the lab");
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// dig from host `from` to `server` (+noedns as Kong's resolver asks: TC then TCP).
fn dig(lab: &Lab, from: &str, server: SocketAddr, args: &[&str]) -> String {
    let mut command = lab.command(from, "dig");
    command.arg(format!("@{}", server.ip())).args(["-p", &server.port().to_string(), "+noedns", "+time=2", "+tries=1"]);
    command.args(args);
    String::from_utf8_lossy(&output(command).stdout).into_owned()
}

/// Kong's sequence from host `from`: SRV of `name`, then A of each target; the ip:port pairs.
fn kong_lookup(lab: &Lab, from: &str, server: SocketAddr, name: &str) -> BTreeSet<(Ipv4Addr, u16)> {
    let mut pairs = BTreeSet::new();
    for line in dig(lab, from, server, &["+short", name, "SRV"]).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_priority, _weight, port, target] = fields[..] else { continue };
        let Ok(port) = port.parse::<u16>() else { continue };
        for a in dig(lab, from, server, &["+short", target, "A"]).lines() {
            if let Ok(ip) = a.parse() {
                pairs.insert((ip, port));
            }
        }
    }
    pairs
}

fn status(dig_output: &str) -> &str {
    dig_output.split("status: ").nth(1).and_then(|rest| rest.split(',').next()).unwrap_or("no answer")
}

fn wait_for<T: PartialEq + std::fmt::Debug>(what: &str, want: &T, mut probe: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = probe();
        if got == *want || Instant::now() >= deadline {
            return got;
        }
        eprintln!("rehearsal: waiting for {what}: {got:?}");
        std::thread::sleep(Duration::from_millis(200)); // polling the first sync, bounded
    }
}

#[test]
fn stack_on_its_real_addresses_serves_kong_and_refuses_strangers() {
    if let Err(why) = netns::available() {
        panic!("the rehearsal needs root and network namespaces (ip netns): {why}");
    }
    let c = compose();
    let subnet = c["networks"]["stack"]["ipam"]["config"][0]["subnet"].as_str().unwrap().to_owned();
    let len = subnet.split_once('/').unwrap().1.to_owned();
    let ip = |service: &str| service_ip(&c, service).to_owned();
    let examples = examples(&c);
    assert_eq!(examples.len(), 4, "two replicas each of user and order");

    let mut hosts: Vec<(String, String)> = ["consul", "consul-dns", "kong", "kong-migrations"]
        .iter()
        .map(|s| (s.to_string(), format!("{}/{len}", ip(s))))
        .collect();
    hosts.extend(examples.iter().map(|e| (e.host.clone(), format!("{}/{len}", ip(&e.host)))));
    hosts.push(("stranger".into(), format!("{STRANGER}/{len}")));
    let specs: Vec<(&str, &str)> = hosts.iter().map(|(h, a)| (h.as_str(), a.as_str())).collect();
    let mut lab = Lab::up(&specs);

    // Nothing of the lab is on this machine's own network, and no host routes beyond the subnet.
    let here = String::from_utf8_lossy(&output(ip_cmd(&["-4", "addr"])).stdout).into_owned();
    assert!(!here.contains("172.40.0."), "the lab must not touch this namespace:\n{here}");
    for (host, _) in &hosts {
        let mut route = lab.command(host, "ip");
        route.args(["-4", "route"]);
        let routes = String::from_utf8_lossy(&output(route).stdout).into_owned();
        assert_eq!(routes.lines().count(), 1, "{host}: only the subnet's route:\n{routes}");
        assert!(routes.starts_with(&subnet), "{host}: {routes}");
    }

    // Consul at its address, on the port consul-dns is told to use.
    let command = consul_dns_command(&c);
    let consul_url = command.iter().find_map(|a| a.strip_prefix("--consul=")).expect("--consul").to_owned();
    let consul_addr: SocketAddr = consul_url.trim_start_matches("http://").parse().expect("--consul=http://IP:PORT");
    assert_eq!(consul_addr.ip().to_string(), ip("consul"));
    let consul_ns = lab.ns("consul");
    let fake = FakeConsul::start_at(consul_addr, "dc1", move || netns::enter(&consul_ns));
    assert_eq!(fake.url(), consul_url);

    // Docker's DNS inside consul-dns's container: 127.0.0.11 in its resolv.conf, knowing the
    // container names.
    lab.resolver("consul-dns", "127.0.0.11");
    let kong_database: Ipv4Addr = ip("kong-database").parse().unwrap();
    let docker_dns = Upstream::start_in_netns(&lab.ns("consul-dns"), "127.0.0.11:53".parse().unwrap(), kong_database);

    // The example services, each on its host, with the compose file's environment.
    let mut replicas = BTreeMap::new();
    for e in &examples {
        let mut command = lab.command(&e.host, &go_examples::binary(&e.service).display().to_string());
        command.envs(&e.env).env_remove("SERVICE_ADDRESS").env_remove("CONSUL_HTTP_TOKEN");
        replicas.insert(e.id.clone(), lab.spawn(command));
    }

    // consul-dns with the compose command line; only the state directory is this test's own.
    let state = tempfile::tempdir().unwrap();
    let mut daemon_cmd = lab.command("consul-dns", binary());
    for arg in &command {
        match arg.split_once('=') {
            Some(("--state-dir", _)) => daemon_cmd.arg(format!("--state-dir={}", state.path().display())),
            _ => daemon_cmd.arg(arg),
        };
    }
    for var in ["CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT", "RUST_LOG"] {
        daemon_cmd.env_remove(var);
    }
    let daemon = Daemon::spawn(daemon_cmd, tempfile::tempdir().unwrap(), false);
    let listen = command.iter().find_map(|a| a.strip_prefix("--listen=")).expect("--listen");
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let server = SocketAddr::new(ip("consul-dns").parse().unwrap(), port);
    let resolver = c["services"]["kong"]["environment"]["KONG_DNS_RESOLVER"].as_str().unwrap();
    assert_eq!(server.to_string(), resolver, "Kong's resolver is where consul-dns answers");

    // Kong's sequence from Kong's address: every replica, at its own address and port.
    let mut seen = BTreeMap::new();
    for service in ["user", "order"] {
        let want: BTreeSet<(Ipv4Addr, u16)> = examples
            .iter()
            .filter(|e| e.service == service)
            .map(|e| (ip(&e.host).parse().unwrap(), e.env["LISTEN"].trim_start_matches(':').parse().unwrap()))
            .collect();
        let name = format!("{service}.service.consul");
        let got = wait_for(&name, &want, || kong_lookup(&lab, "kong", server, &name));
        assert_eq!(got, want, "{name} from {}; consul-dns log:\n{}", ip("kong"), daemon.log());
        // What Kong's balancer would then do: call each one on the route's path.
        let mut ids = BTreeSet::new();
        for (addr, port) in &got {
            let target = format!("{addr}:{port}");
            let path = format!("/{service}/hello");
            let (code, body) = netns::within(&lab.ns("kong"), move || http_get(&target, &path)).unwrap();
            assert_eq!(code, 200);
            ids.insert(body.trim().to_owned());
        }
        let want_ids: BTreeSet<String> =
            examples.iter().filter(|e| e.service == service).map(|e| e.id.clone()).collect();
        assert_eq!(ids, want_ids, "each instance answers with its id");
        println!("rehearsal: {name} SRV+A from {} -> {:?}, ids {:?}", ip("kong"), got, ids);
        seen.insert(service, got);
    }

    // The containers' own healthchecks, run where they would run, now that the catalog has
    // arrived (before its first sync consul-dns answers SERVFAIL, and its healthcheck fails:
    // that is what keeps Kong waiting): consul-dns's, and each example's (the image's binary
    // is the one built here).
    let check = healthcheck(&c, "consul-dns");
    assert_eq!(check[0], "consul-dns", "{check:?}");
    let out = lab.command("consul-dns", binary()).args(&check[1..]).output().unwrap();
    assert!(out.status.success(), "consul-dns healthcheck {check:?}: {}", String::from_utf8_lossy(&out.stderr));
    for e in &examples {
        let check = healthcheck(&c, &e.host);
        let mut command = lab.command(&e.host, &go_examples::binary(&e.service).display().to_string());
        command.args(&check[1..]).envs(&e.env);
        let out = command.output().unwrap();
        assert!(out.status.success(), "{} healthcheck {check:?}: {}", e.host, String::from_utf8_lossy(&out.stderr));
    }

    let srv = dig(&lab, "kong", server, &["+short", "user.service.consul", "SRV"]);
    println!("rehearsal: dig @{server} user.service.consul SRV +short from {}:\n{}", ip("kong"), srv.trim_end());

    // Kong's database host, relayed to Docker's DNS: SRV first (KONG_DNS_ORDER=SRV,…), which
    // has no records there, then A.
    let pg_host = c["services"]["kong"]["environment"]["KONG_PG_HOST"].as_str().unwrap();
    let pg_srv = dig(&lab, "kong", server, &[pg_host, "SRV"]);
    assert_eq!(status(&pg_srv), "NOERROR", "{pg_srv}");
    assert!(pg_srv.contains("ANSWER: 0,"), "no SRV for {pg_host}: {pg_srv}");
    let answer = dig(&lab, "kong", server, &["+short", pg_host, "A"]);
    assert_eq!(answer.trim(), kong_database.to_string(), "{pg_host} from {}", ip("kong"));
    let migrations = dig(&lab, "kong-migrations", server, &["+short", pg_host, "A"]);
    assert_eq!(migrations.trim(), kong_database.to_string(), "{pg_host} from kong-migrations");
    assert!(docker_dns.queries() > 0, "consul-dns asked the resolver at 127.0.0.11");
    println!("rehearsal: {pg_host} A from {} -> {}", ip("kong"), answer.trim());

    // The stranger: consul. names answered, everything else REFUSED.
    let asked = docker_dns.queries();
    for outside in [pg_host, "example.com"] {
        let reply = dig(&lab, "stranger", server, &[outside, "A"]);
        assert_eq!(status(&reply), "REFUSED", "{outside} from {STRANGER}:\n{reply}");
        println!("rehearsal: {outside} A from {STRANGER} -> {}", status(&reply));
    }
    assert_eq!(docker_dns.queries(), asked, "nothing relayed for the stranger");
    let inside = dig(&lab, "stranger", server, &["user.service.consul", "SRV"]);
    assert_eq!(status(&inside), "NOERROR", "{inside}");

    // SIGTERM to one user replica: it deregisters, and Kong's next lookup no longer has it.
    let leaving = examples.iter().find(|e| e.service == "user").unwrap();
    let pid = lab.child(replicas[&leaving.id]).id();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let exit =
        wait_for("the replica to exit", &true, || lab.child(replicas[&leaving.id]).try_wait().unwrap().is_some());
    assert!(exit, "{} exits after SIGTERM", leaving.id);
    let gone: (Ipv4Addr, u16) =
        (ip(&leaving.host).parse().unwrap(), leaving.env["LISTEN"].trim_start_matches(':').parse().unwrap());
    let mut want = seen["user"].clone();
    want.remove(&gone);
    let got = wait_for("the deregistration", &want, || kong_lookup(&lab, "kong", server, "user.service.consul"));
    assert_eq!(got, want, "{} left Consul and consul-dns", leaving.id);
    println!("rehearsal: after SIGTERM to {}: user.service.consul -> {:?}", leaving.id, got);
    drop(daemon);
}

/// The `CMD` form of a service's healthcheck: program and arguments.
fn healthcheck(c: &Value, service: &str) -> Vec<String> {
    let test = c["services"][service]["healthcheck"]["test"].as_array().expect("a healthcheck");
    assert_eq!(test[0], "CMD", "{service}: exec form");
    test[1..].iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

fn ip_cmd(args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command.args(args);
    command
}
