//! A real Consul agent, `consul agent -dev` on 127.0.0.1 with free ports for HTTP, DNS, serf,
//! server RPC and gRPC, update checks off, its own temp dir for config and data; killed on
//! drop. The binary comes from `CONSUL_DNS_TEST_CONSUL` (scripts/test builds it with
//! scripts/consul). The test drives it through its HTTP API: the catalog and agent endpoints
//! for registrations, checks and maintenance, the ACL endpoints for tokens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The variable that names the agent binary.
pub const BINARY_VAR: &str = "CONSUL_DNS_TEST_CONSUL";

/// The agent's node name (its own node in the catalog, address 127.0.0.1).
pub const AGENT_NODE: &str = "agent-1";

/// The ACL management token of an agent started with ACLs on.
pub const ROOT_TOKEN: &str = "b7d0f3a4-0000-4000-8000-00000000c0de";

/// The agent binary; `None` (after a loud message) when the variable is unset outside CI.
/// In CI (`CI=true`) a missing agent fails the test.
pub fn binary() -> Option<PathBuf> {
    match std::env::var_os(BINARY_VAR) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "{BINARY_VAR}={} is not a file; run scripts/consul", path.display());
            Some(path)
        }
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{BINARY_VAR} is not set: in CI the real Consul agent is required (scripts/test builds it)")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED: {BINARY_VAR} is not set, so this test did not run against a real Consul \
                 agent. Run scripts/test, or export {BINARY_VAR}=$(scripts/consul). ***\n"
            );
            None
        }
    }
}

/// How the agent is configured.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// ACLs on, default policy deny, with [`ROOT_TOKEN`] as the management token.
    pub acl: bool,
    /// Its datacenter (`None`: dc1).
    pub datacenter: Option<&'static str>,
    /// Node name (`None`: [`AGENT_NODE`]).
    pub node: Option<&'static str>,
    /// The WAN serf port of another agent to federate with (`retry_join_wan`).
    pub join_wan: Option<u16>,
}

/// The agent's ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// HTTP API.
    pub http: u16,
    /// DNS (UDP and TCP).
    pub dns: u16,
    serf_lan: u16,
    /// WAN serf (what a second datacenter joins).
    pub serf_wan: u16,
    server: u16,
    grpc: u16,
}

/// A running agent.
pub struct Agent {
    binary: PathBuf,
    child: Option<Child>,
    /// Its ports (kept across [`Agent::restart`]).
    pub ports: Ports,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
    token: Option<String>,
    options: Options,
}

/// A port free on 127.0.0.1 for both TCP and UDP, held until the returned sockets drop.
/// It is drawn below the kernel's ephemeral range (32768 and up on Linux): a port from there
/// may be taken, between our release and the agent's bind, as the source port of any
/// connection on the machine, or by another test binding port 0.
fn free_port() -> (u16, TcpListener, UdpSocket) {
    loop {
        let port = fastrand::u16(20000..32768);
        let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) else { continue };
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            return (port, tcp, udp);
        }
    }
}

impl Agent {
    /// Starts an agent and waits until it leads and its own node is in the catalog; `None`
    /// when the binary is not configured (see [`binary`]). The free ports are released just
    /// before the agent binds them, so another test may take one in between: then the agent
    /// exits at once, and it is started again on new ports (three tries).
    pub fn start(options: Options) -> Option<Agent> {
        let binary = binary()?;
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Agent::try_start(&binary, &options) {
                Ok(agent) => return Some(agent),
                Err(log) => failures.push(log),
            }
        }
        panic!("the Consul agent did not start in three tries; its logs:\n{}", failures.join("\n\n"));
    }

    fn try_start(binary: &std::path::Path, options: &Options) -> Result<Agent, String> {
        let held: Vec<_> = (0..6).map(|_| free_port()).collect();
        let port = |i: usize| held[i].0;
        let ports =
            Ports { http: port(0), dns: port(1), serf_lan: port(2), serf_wan: port(3), server: port(4), grpc: port(5) };
        let token = options.acl.then(|| ROOT_TOKEN.to_owned());
        let dir = tempfile::tempdir().unwrap();
        let (binary, options) = (binary.to_owned(), options.clone());
        let mut agent = Agent { binary, child: None, ports, dir, log: Arc::default(), token, options };
        agent.configure();
        drop(held);
        agent.spawn()?;
        Ok(agent)
    }

    /// Writes the agent's config file for its options and ports.
    fn configure(&self) {
        let (options, ports) = (&self.options, self.ports);
        let mut config = json!({
            "datacenter": options.datacenter.unwrap_or("dc1"),
            "node_name": self.node(),
            "bind_addr": "127.0.0.1",
            "client_addr": "127.0.0.1",
            "advertise_addr": "127.0.0.1",
            "advertise_addr_wan": "127.0.0.1",
            "disable_update_check": true,
            "disable_host_node_id": true,
            "data_dir": self.dir.path().join("data"),
            "log_level": "info",
            "ports": {
                "http": ports.http, "dns": ports.dns, "serf_lan": ports.serf_lan, "serf_wan": ports.serf_wan,
                "server": ports.server, "grpc": ports.grpc, "grpc_tls": -1, "https": -1
            }
        });
        if let Some(port) = options.join_wan {
            config["retry_join_wan"] = json!([format!("127.0.0.1:{port}")]);
        }
        if options.acl {
            config["acl"] = json!({
                "enabled": true, "default_policy": "deny", "enable_token_persistence": false,
                "tokens": {"initial_management": ROOT_TOKEN, "agent": ROOT_TOKEN}
            });
        }
        std::fs::write(self.dir.path().join("agent.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    fn node(&self) -> &'static str {
        self.options.node.unwrap_or(AGENT_NODE)
    }

    /// Starts the process and waits until it is ready; its log if it exited first.
    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.binary);
        command
            .args(["agent", "-dev", "-config-file"])
            .arg(self.dir.path().join("agent.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in ["CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT"] {
            command.env_remove(var);
        }
        let mut child = command.spawn().expect("start the Consul agent");
        for stream in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let sink = Arc::clone(&self.log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits (60 s at most) until the agent has a leader and has synced its own node; the
    /// log if the agent exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                std::thread::sleep(Duration::from_millis(100)); // the log threads drain the pipes
                return Err(format!("the Consul agent exited ({status}); log:\n{}", self.log()));
            }
            let token = self.token.as_deref();
            let leader = self.request("GET", "/v1/status/leader", token, None);
            let node = self.request("GET", &format!("/v1/catalog/node/{}", self.node()), token, None);
            let led = leader.as_ref().is_some_and(|(code, body)| *code == 200 && body.len() > 2);
            let synced = node.as_ref().is_some_and(|(code, body)| *code == 200 && body.contains(self.node()));
            if led && synced {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the Consul agent was not ready within 60 s; log:\n{}", self.log());
    }

    /// Kills the agent (its catalog is in memory: it is gone).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same HTTP port, with an empty catalog. Should one of its other
    /// ports have been taken while it was down, those are chosen afresh (ten tries).
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..10 {
            self.log.lock().unwrap().push("--- started again ---".into());
            match self.spawn() {
                Ok(()) => return,
                Err(log) if log.contains("address already in use") => {
                    let held: Vec<_> = (0..5).map(|_| free_port()).collect();
                    let http = self.ports.http;
                    let port = |i: usize| held[i].0;
                    self.ports = Ports {
                        http,
                        dns: port(0),
                        serf_lan: port(1),
                        serf_wan: port(2),
                        server: port(3),
                        grpc: port(4),
                    };
                    self.configure();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("the Consul agent did not start again in ten tries; log:\n{}", self.log());
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http)
    }

    /// The agent's DNS address (UDP and TCP).
    pub fn dns(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.dns))
    }

    /// `Consul v1.15.4` (the first line of `consul version`).
    pub fn version(&self) -> String {
        let out = Command::new(&self.binary).arg("version").output().expect("run consul version");
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned()
    }

    /// Everything the agent logged.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// One HTTP/1.0 request (so the body ends with the connection, never chunked); `None`
    /// when the agent does not answer.
    fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.ports.http)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        let mut head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n", body.len());
        if let Some(token) = token {
            head.push_str(&format!("X-Consul-Token: {token}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).ok()?;
        stream.write_all(&body).ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status = String::from_utf8_lossy(&raw[..split]).split_whitespace().nth(1)?.parse().ok()?;
        Some((status, String::from_utf8_lossy(&raw[split + 4..]).into_owned()))
    }

    /// A request with the management token (if any) that must succeed; its JSON body
    /// (`null` when empty).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, text) = self
            .request(method, path, self.token.as_deref(), body.as_ref())
            .unwrap_or_else(|| panic!("{method} {path}: the agent did not answer; log:\n{}", self.log()));
        assert!((200..300).contains(&status), "{method} {path} → HTTP {status}: {text}");
        if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }

    /// A request with `token` (or none): status and body text.
    pub fn call_as(&self, token: Option<&str>, method: &str, path: &str) -> (u16, String) {
        self.request(method, path, token, None).expect("the agent answers")
    }

    /// `PUT /v1/catalog/register` for a node of its own (not the agent's): address, node
    /// meta, and (unless `None`) one service with its checks as `(check id, status)`.
    pub fn register(&self, node: &str, address: &str, meta: &[(&str, &str)], service: Option<Value>, checks: &[Value]) {
        let meta: serde_json::Map<String, Value> = meta.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let mut body = json!({"Node": node, "Address": address, "NodeMeta": meta});
        if let Some(service) = service {
            body["Service"] = service;
        }
        if !checks.is_empty() {
            body["Checks"] = json!(checks);
        }
        self.call("PUT", "/v1/catalog/register", Some(body));
    }

    /// Sets a catalog check of an external node (`service_id` empty: a node check).
    pub fn set_check(&self, node: &str, address: &str, check: &str, service_id: &str, status: &str) {
        let body = json!({
            "Node": node, "Address": address, "SkipNodeUpdate": true,
            "Check": {"CheckID": check, "Name": check, "ServiceID": service_id, "Status": status}
        });
        self.call("PUT", "/v1/catalog/register", Some(body));
    }

    /// `PUT /v1/catalog/deregister`: the whole node, or one service of it.
    pub fn deregister(&self, node: &str, service_id: Option<&str>) {
        let mut body = json!({"Node": node});
        if let Some(id) = service_id {
            body["ServiceID"] = json!(id);
        }
        self.call("PUT", "/v1/catalog/deregister", Some(body));
    }
}

/// A catalog service body (`Service` of a registration).
pub fn service(name: &str, id: &str, port: u16) -> Value {
    json!({"ID": id, "Service": name, "Port": port})
}

/// A passing/warning/critical check of the service `service_id` (empty: of the node).
pub fn check(id: &str, service_id: &str, status: &str) -> Value {
    json!({"CheckID": id, "Name": id, "ServiceID": service_id, "Status": status})
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}
