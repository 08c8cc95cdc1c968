//! A fake Consul agent: a real HTTP/1.1 server on 127.0.0.1 port 0 (hyper, on its own tokio
//! runtime) implementing the read endpoints of docs/consul-api.md with real blocking
//! semantics — a request with `?index=N` is held until that endpoint's index (H3.5) moves past
//! N or `wait` (plus up to wait/16 of jitter, H3.3) elapses — and the documented shapes
//! (omitempty fields, `null` vs `[]`). The test drives it through a handle: register,
//! deregister, flip checks, maintenance, fault modes, and counters of requests and of the
//! most requests in flight at once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[path = "fake_consul_agent.rs"]
mod agent;

/// A fault applied to every read until cleared.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Status code and body (500 "No cluster leader", 403 "ACL not found", 429 …).
    Status(u16, &'static str),
    /// Answer correctly, but only after this long.
    Slow(Duration),
    /// 200 with the body cut in half.
    Truncated,
    /// 200 with JSON of the wrong shape.
    WrongShape,
    /// 200 with a body that is not JSON at all (a proxy's HTML error page).
    Garbage,
    /// Every connection is closed without an answer, open ones included (a proxy or agent
    /// crashing mid-request).
    Hangup,
    /// Every read answered at once with `X-Consul-Index: 0` (some versions send it for empty
    /// results), the body correct.
    IndexZero,
}

/// A service instance to register.
#[derive(Debug, Clone, Default)]
pub struct Svc {
    /// `Service.ID` (defaults to the name).
    pub id: String,
    /// `Service.Service`.
    pub name: String,
    /// `Service.Kind` (`connect-proxy`, `ingress-gateway`, or empty).
    pub kind: String,
    /// Tags.
    pub tags: Vec<String>,
    /// `Service.Address` (empty: the node's).
    pub address: String,
    /// Tagged addresses as `(key, address, port)`.
    pub tagged: Vec<(String, String, u16)>,
    /// `Service.Port` (omitted from bodies when 0).
    pub port: u16,
    /// `Service.Weights` (`None`: Consul's 1/1).
    pub weights: Option<(u16, u16)>,
    /// `Proxy.DestinationServiceName`.
    pub proxy_for: String,
    /// `Connect.Native`.
    pub native: bool,
    /// Service checks: `(check id, status)`.
    pub checks: Vec<(String, String)>,
}

impl Svc {
    /// A plain instance.
    pub fn new(name: &str, id: &str, port: u16) -> Svc {
        Svc { id: id.into(), name: name.into(), port, ..Svc::default() }
    }
}

#[derive(Debug, Clone)]
struct NodeRec {
    address: String,
    tagged: BTreeMap<String, String>,
    meta: BTreeMap<String, String>,
    index: (u64, u64),
}

#[derive(Debug, Clone)]
struct SvcRec {
    svc: Svc,
    index: (u64, u64),
}

#[derive(Debug, Clone)]
struct CheckRec {
    status: String,
    service_id: String,
    service_name: String,
    index: (u64, u64),
}

#[derive(Debug, Default)]
struct Dc {
    nodes: BTreeMap<String, NodeRec>,
    services: BTreeMap<(String, String), SvcRec>,
    checks: BTreeMap<(String, String), CheckRec>,
    by_name: BTreeMap<String, std::collections::BTreeSet<(String, String)>>,
    ingress: BTreeMap<String, (Vec<String>, u64)>,
    config_index: u64,
    services_index: u64,
    nodes_index: u64,
    checks_index: u64,
    service_index: BTreeMap<String, u64>,
    extinction: u64,
}

#[derive(Debug, Default)]
struct State {
    raft: u64,
    offset: u64,
    /// Snapshot restores so far: each one abandons the held queries.
    restores: u64,
    local: String,
    dcs: BTreeMap<String, Dc>,
    fault: Option<Fault>,
    agent_self_forbidden: bool,
    /// The agent's own address (its node's, in `/v1/agent/self`).
    agent_address: String,
    /// Registration generation per agent check id: a check's runner stops when it moves.
    agent_checks: BTreeMap<String, u64>,
    token: Option<String>,
    tokens_seen: Vec<String>,
    requests: u64,
    in_flight: usize,
    peak: usize,
    paths: Vec<String>,
}

/// The running fake; stops on drop.
pub struct FakeConsul {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    version: watch::Sender<u64>,
    listening: watch::Sender<bool>,
    hangup: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeConsul {
    /// Starts a fake agent of datacenter `local` that also knows the datacenters `others`.
    pub fn start(local: &str, others: &[&str]) -> FakeConsul {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        FakeConsul::with(runtime, listener, local, others)
    }

    /// Starts one of datacenter `local` listening on `addr`, every thread of its runtime
    /// running `on_thread_start` first: entering a network namespace there puts its listener
    /// and the agent's HTTP checks in it, not on this machine's own network.
    pub fn start_at(addr: SocketAddr, local: &str, on_thread_start: impl Fn() + Send + Sync + 'static) -> FakeConsul {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(on_thread_start)
            .build()
            .expect("runtime");
        let bound = runtime.block_on(runtime.spawn(TcpListener::bind(addr))); // bound on a worker
        let listener = bound.expect("bind task").unwrap_or_else(|e| panic!("fake Consul cannot bind {addr}: {e}"));
        FakeConsul::with(runtime, listener, local, &[])
    }

    fn with(runtime: tokio::runtime::Runtime, listener: TcpListener, local: &str, others: &[&str]) -> FakeConsul {
        let addr = listener.local_addr().unwrap();
        let mut state =
            State { raft: 10, local: local.into(), agent_address: addr.ip().to_string(), ..State::default() };
        for dc in std::iter::once(local).chain(others.iter().copied()) {
            state.dcs.insert(dc.into(), Dc { extinction: 1, ..Dc::default() });
        }
        let state = Arc::new(Mutex::new(state));
        let (version, _) = watch::channel(0);
        let (listening, _) = watch::channel(true);
        let (hangup, _) = watch::channel(false);
        let fake = FakeConsul { addr, state, version, listening, hangup, runtime: Some(runtime) };
        fake.serve(listener);
        fake
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let (state, version, mut listening, hangup) =
            (Arc::clone(&self.state), self.version.clone(), self.listening.subscribe(), self.hangup.subscribe());
        let writer = agent::Writer { state: Arc::clone(&self.state), version: self.version.clone() };
        let runtime = self.runtime.as_ref().unwrap();
        runtime.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = listening.wait_for(|on| !on) => return, // drops the listener: refused
                };
                let Ok((stream, _)) = accepted else { continue };
                let (state, version, mut stop) = (Arc::clone(&state), version.clone(), listening.clone());
                let mut hangup = hangup.clone();
                let writer = writer.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(Arc::clone(&state), version.subscribe(), writer.clone(), req));
                    let conn =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.wait_for(|on| !on) => {} // drops the connection
                        _ = hangup.wait_for(|on| *on) => {} // closes it unanswered
                    }
                });
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Runs `change` on datacenter `dc` at the next raft index and wakes blocked queries.
    fn write(&self, dc: &str, change: impl FnOnce(&mut Dc, u64)) {
        write_to(&self.state, &self.version, dc, change);
    }

    /// Registers (or re-registers) a node with `address`.
    pub fn register_node(&self, dc: &str, node: &str, address: &str, meta: &[(&str, &str)]) {
        let tagged: BTreeMap<String, String> =
            [("lan", address), ("lan_ipv4", address), ("wan", address), ("wan_ipv4", address)]
                .iter()
                .filter(|_| address.parse::<std::net::IpAddr>().is_ok())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        self.register_node_tagged(dc, node, address, tagged, meta);
    }

    /// Registers a node with explicit tagged addresses.
    pub fn register_node_tagged(
        &self,
        dc: &str,
        node: &str,
        address: &str,
        tagged: BTreeMap<String, String>,
        meta: &[(&str, &str)],
    ) {
        let meta: BTreeMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.write(dc, |d, index| put_node(d, index, node, address, tagged, meta));
    }

    /// Registers a service instance on `node` (which must exist), with its checks.
    pub fn register(&self, dc: &str, node: &str, svc: Svc) {
        self.write(dc, |d, index| {
            assert!(d.nodes.contains_key(node), "register node {node} first");
            put_service(d, index, node, svc);
        });
    }

    /// Removes one instance and its checks.
    pub fn deregister(&self, dc: &str, node: &str, id: &str) {
        self.write(dc, |d, index| {
            remove_service(d, index, node, id);
        });
    }

    /// Removes a node with every instance and check on it, at one index, as
    /// `PUT /v1/catalog/deregister {"Node": …}` does.
    pub fn deregister_node(&self, dc: &str, node: &str) {
        self.write(dc, |d, index| {
            if d.nodes.remove(node).is_none() {
                return;
            }
            let gone: Vec<(String, String)> = d.services.keys().filter(|(n, _)| n == node).cloned().collect();
            for key in gone {
                let Some(rec) = d.services.remove(&key) else { continue };
                d.by_name.get_mut(&rec.svc.name).map(|set| set.remove(&key));
                d.service_index.insert(rec.svc.name.clone(), index);
                if !d.services.values().any(|s| s.svc.name == rec.svc.name) {
                    d.extinction = index;
                }
            }
            d.checks.retain(|(n, _), _| n != node);
            d.nodes_index = index;
            d.services_index = index;
            d.checks_index = index;
        });
    }

    /// Sets a check's status (`passing`, `warning`, `critical`); adds it if new. An empty
    /// `service_id` makes a node check.
    pub fn set_check(&self, dc: &str, node: &str, check: &str, service_id: &str, status: &str) {
        self.write(dc, |d, index| put_check(d, index, node, check, service_id, status));
    }

    /// Removes a check.
    pub fn remove_check(&self, dc: &str, node: &str, check: &str) {
        self.write(dc, |d, index| {
            if let Some(rec) = d.checks.remove(&(node.to_owned(), check.to_owned())) {
                touch_checks(d, node, &rec.service_id, index);
            }
        });
    }

    /// S4.2: node maintenance on or off (the critical `_node_maintenance` check).
    pub fn node_maintenance(&self, dc: &str, node: &str, on: bool) {
        match on {
            true => self.set_check(dc, node, "_node_maintenance", "", "critical"),
            false => self.remove_check(dc, node, "_node_maintenance"),
        }
    }

    /// S4.2: service maintenance on or off (`_service_maintenance:<id>`).
    pub fn service_maintenance(&self, dc: &str, node: &str, id: &str, on: bool) {
        let check = format!("_service_maintenance:{id}");
        match on {
            true => self.set_check(dc, node, &check, id, "critical"),
            false => self.remove_check(dc, node, &check),
        }
    }

    /// Writes the `ingress-gateway` config entry of `gateway` exposing `services` (none:
    /// deletes it).
    pub fn set_ingress(&self, dc: &str, gateway: &str, services: &[&str]) {
        self.write(dc, |d, index| {
            match services {
                [] => d.ingress.remove(gateway),
                _ => d.ingress.insert(gateway.into(), (services.iter().map(|s| s.to_string()).collect(), index)),
            };
            d.config_index = index;
        });
    }

    /// Applies a fault to every read until [`FakeConsul::clear_fault`].
    pub fn set_fault(&self, fault: Fault) {
        self.hangup.send_replace(fault == Fault::Hangup);
        self.lock().fault = Some(fault);
        self.version.send_modify(|v| *v += 1); // held queries answer with the fault
    }

    /// Ends the fault.
    pub fn clear_fault(&self) {
        self.hangup.send_replace(false);
        self.lock().fault = None;
    }

    /// Every index goes back below what clients have seen (a snapshot restore), then keeps
    /// moving forward from there.
    pub fn index_goes_backwards(&self) {
        {
            let mut state = self.lock();
            state.offset = state.raft - 2;
            state.raft += 1;
            state.restores += 1;
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// `/v1/agent/self` answers 403, as for a DNS-only token (H5.8).
    pub fn forbid_agent_self(&self, forbidden: bool) {
        self.lock().agent_self_forbidden = forbidden;
    }

    /// Reads require this `X-Consul-Token` (403 "ACL not found" otherwise).
    pub fn require_token(&self, token: &str) {
        self.lock().token = Some(token.into());
    }

    /// Tokens presented so far (distinct, in order).
    pub fn tokens_seen(&self) -> Vec<String> {
        self.lock().tokens_seen.clone()
    }

    /// Stops listening and drops open connections: clients get "connection refused".
    pub fn stop_listening(&self) {
        self.listening.send_replace(false);
    }

    /// Listens again on the same port.
    pub fn resume_listening(&self) {
        self.listening.send_replace(true);
        let runtime = self.runtime.as_ref().unwrap();
        let listener = runtime.block_on(TcpListener::bind(self.addr)).expect("rebind the same port");
        self.serve(listener);
    }

    /// Instances of `name` in the local datacenter: `(id, address, port, check statuses)`.
    pub fn instances(&self, name: &str) -> Vec<(String, String, u16, Vec<String>)> {
        let state = self.lock();
        let dc = &state.dcs[&state.local];
        dc.services
            .iter()
            .filter(|(_, s)| s.svc.name == name)
            .map(|((node, id), s)| {
                let checks = on_node(&dc.checks, node).filter(|(_, c)| c.service_id == *id);
                let statuses = checks.map(|(_, c)| c.status.clone()).collect();
                (id.clone(), s.svc.address.clone(), s.svc.port, statuses)
            })
            .collect()
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// The most requests in flight at once since start (or the last reset).
    pub fn peak_in_flight(&self) -> usize {
        self.lock().peak
    }

    /// Paths (with query) requested so far.
    pub fn paths(&self) -> Vec<String> {
        self.lock().paths.clone()
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.listening.send_replace(false);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `change` on datacenter `dc` at the next raft index and wakes blocked queries.
fn write_to(state: &Mutex<State>, version: &watch::Sender<u64>, dc: &str, change: impl FnOnce(&mut Dc, u64)) {
    {
        let mut state = state.lock().unwrap();
        state.raft += 1;
        let index = state.raft;
        change(state.dcs.get_mut(dc).expect("known datacenter"), index);
    }
    version.send_modify(|v| *v += 1);
}

fn put_node(
    d: &mut Dc,
    index: u64,
    node: &str,
    address: &str,
    tagged: BTreeMap<String, String>,
    meta: BTreeMap<String, String>,
) {
    let created = d.nodes.get(node).map_or(index, |n| n.index.0);
    d.nodes.insert(node.into(), NodeRec { address: address.into(), tagged, meta, index: (created, index) });
    d.nodes_index = index;
    let touched: Vec<String> = on_node(&d.services, node).map(|(_, s)| s.svc.name.clone()).collect();
    for name in touched {
        d.service_index.insert(name, index);
    }
}

fn put_service(d: &mut Dc, index: u64, node: &str, svc: Svc) {
    let id = if svc.id.is_empty() { svc.name.clone() } else { svc.id.clone() };
    let key = (node.to_owned(), id.clone());
    let created = d.services.get(&key).map_or(index, |s| s.index.0);
    remove_checks_of(d, node, &id);
    for (check, status) in &svc.checks {
        let rec = CheckRec {
            status: status.clone(),
            service_id: id.clone(),
            service_name: svc.name.clone(),
            index: (index, index),
        };
        d.checks.insert((node.into(), check.clone()), rec);
    }
    d.service_index.insert(svc.name.clone(), index);
    d.by_name.entry(svc.name.clone()).or_default().insert(key.clone());
    if let Some(old) = d.services.insert(key.clone(), SvcRec { svc: Svc { id, ..svc }, index: (created, index) })
        && old.svc.name != d.services[&key].svc.name
    {
        d.by_name.get_mut(&old.svc.name).map(|set| set.remove(&key));
    }
    d.services_index = index;
    d.checks_index = index;
}

/// Whether there was such an instance.
fn remove_service(d: &mut Dc, index: u64, node: &str, id: &str) -> bool {
    let key = (node.to_owned(), id.to_owned());
    let Some(rec) = d.services.remove(&key) else { return false };
    d.by_name.get_mut(&rec.svc.name).map(|set| set.remove(&key));
    remove_checks_of(d, node, id);
    d.service_index.insert(rec.svc.name.clone(), index);
    if !d.services.values().any(|s| s.svc.name == rec.svc.name) {
        d.extinction = index;
    }
    d.services_index = index;
    d.checks_index = index;
    true
}

fn put_check(d: &mut Dc, index: u64, node: &str, check: &str, service_id: &str, status: &str) {
    let service_name =
        d.services.get(&(node.to_owned(), service_id.to_owned())).map(|s| s.svc.name.clone()).unwrap_or_default();
    let key = (node.to_owned(), check.to_owned());
    let created = d.checks.get(&key).map_or(index, |c| c.index.0);
    let rec = CheckRec { status: status.into(), service_id: service_id.into(), service_name, index: (created, index) };
    d.checks.insert(key, rec);
    touch_checks(d, node, service_id, index);
}

/// The entries of a `(node, …)`-keyed map that belong to `node`.
fn on_node<'a, V>(
    map: &'a BTreeMap<(String, String), V>,
    node: &'a str,
) -> impl Iterator<Item = (&'a (String, String), &'a V)> {
    map.range((node.to_owned(), String::new())..).take_while(move |((n, _), _)| n == node)
}

fn remove_checks_of(d: &mut Dc, node: &str, service_id: &str) {
    let keys: Vec<(String, String)> =
        on_node(&d.checks, node).filter(|(_, c)| c.service_id == service_id).map(|(k, _)| k.clone()).collect();
    for key in keys {
        d.checks.remove(&key);
    }
}

fn touch_checks(d: &mut Dc, node: &str, service_id: &str, index: u64) {
    let touched: Vec<String> = on_node(&d.services, node)
        .filter(|((_, id), _)| service_id.is_empty() || id == service_id)
        .map(|(_, s)| s.svc.name.clone())
        .collect();
    for name in touched {
        d.service_index.insert(name, index);
    }
    d.checks_index = index;
}

/// A parsed request.
struct Query {
    path: String,
    params: BTreeMap<String, String>,
}

fn parse_query(req: &Request<Incoming>) -> Query {
    let mut params = BTreeMap::new();
    for pair in req.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(percent_decode(k), percent_decode(v));
    }
    Query { path: req.uri().path().to_owned(), params }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go duration (`10s`, `300000ms`, `1m30s`) → Duration (H2).
fn parse_wait(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        total += match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return None,
        };
        rest = &rest[unit_len..];
    }
    Some(total)
}

type Reply = Response<Full<Bytes>>;

struct InFlight(Arc<Mutex<State>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    mut version: watch::Receiver<u64>,
    writer: agent::Writer,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let query = parse_query(&req);
    let _guard = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        s.in_flight += 1;
        s.peak = s.peak.max(s.in_flight);
        s.paths.push(req.uri().to_string());
        if let Some(token) = req.headers().get("x-consul-token").and_then(|v| v.to_str().ok()) {
            if !s.tokens_seen.iter().any(|t| t == token) {
                s.tokens_seen.push(token.to_owned());
            }
        }
        if let Some(wanted) = &s.token
            && req.headers().get("x-consul-token").and_then(|v| v.to_str().ok()) != Some(wanted.as_str())
        {
            s.in_flight -= 1;
            return Ok(text(403, "ACL not found"));
        }
        InFlight(Arc::clone(&state))
    };
    if req.method() == hyper::Method::PUT && query.path.starts_with("/v1/agent/service/") {
        return Ok(agent::write(&writer, &query.path, req).await);
    }
    if req.method() != hyper::Method::GET {
        return Ok(text(405, "method not allowed"));
    }
    let slow = match state.lock().unwrap().fault.clone() {
        Some(Fault::Status(code, body)) => return Ok(text(code, body)),
        Some(Fault::Slow(delay)) => Some(delay),
        _ => None,
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    let wait = match query.params.get("wait") {
        Some(w) => match parse_wait(w) {
            Some(d) => d.min(Duration::from_secs(600)),
            None => return Ok(text(400, "Invalid wait time")),
        },
        None => Duration::from_secs(300),
    };
    let wanted: u64 = match query.params.get("index").map(|i| i.parse::<u64>()) {
        Some(Ok(i)) => i,
        Some(Err(_)) => return Ok(text(400, "Invalid index")),
        None => 0,
    };
    let jitter = Duration::from_millis(fastrand::u64(0..=(wait.as_millis() as u64 / 16)));
    let deadline = tokio::time::Instant::now() + wait + jitter;
    let restores = state.lock().unwrap().restores;
    loop {
        version.borrow_and_update();
        let held = wanted != 0 && tokio::time::Instant::now() < deadline;
        // Consul holds a query until the index moves past the client's, so a client asking with
        // an index from an earlier cluster (the agent started again with an empty catalog)
        // waits out `wait`; a snapshot restore abandons the held queries instead.
        let restored = state.lock().unwrap().restores != restores;
        let unchanged = held && !restored && index_of(&state.lock().unwrap(), &query).is_some_and(|i| i <= wanted);
        if unchanged && state.lock().unwrap().fault.is_none() {
            // Still nothing new: wait without rendering the body (as Consul's watch sets do).
            tokio::select! {
                _ = version.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
            continue;
        }
        let answer = answer(&state.lock().unwrap(), &query);
        let (status, body, index) = match answer {
            Answer::Blocking(body, index) => (200, body, Some(index)),
            Answer::Plain(body) => (200, body, None),
            Answer::Error(code, message) => return Ok(text(code, message)),
        };
        // A restore answers the held queries at once, with the new, lower index.
        let restored = state.lock().unwrap().restores != restores;
        let fault = state.lock().unwrap().fault.clone();
        let ready = wanted == 0 || restored || index.is_none_or(|i| i > wanted) || fault == Some(Fault::IndexZero);
        if let Some(Fault::Status(code, body)) = fault {
            return Ok(text(code, body));
        }
        if ready || tokio::time::Instant::now() >= deadline {
            return Ok(respond(status, body, index, fault, query.params.contains_key("stale")));
        }
        tokio::select! {
            _ = version.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The index a blocking endpoint would return now (as the client sees it), without its body.
fn index_of(state: &State, q: &Query) -> Option<u64> {
    let dc_name = q.params.get("datacenter").or(q.params.get("dc")).unwrap_or(&state.local);
    let dc = state.dcs.get(dc_name)?;
    let path = q.path.as_str();
    let raw = match path {
        "/v1/catalog/services" => dc.services_index,
        "/v1/catalog/nodes" => dc.nodes_index,
        "/v1/config/ingress-gateway" => dc.config_index,
        _ if path.starts_with("/v1/health/state/") => dc.checks_index,
        _ => {
            let name = path.strip_prefix("/v1/health/service/").or_else(|| path.strip_prefix("/v1/health/connect/"))?;
            dc.service_index.get(name).copied().unwrap_or(dc.extinction)
        }
    };
    Some(raw.saturating_sub(state.offset).max(1))
}

enum Answer {
    Blocking(Value, u64),
    Plain(Value),
    Error(u16, &'static str),
}

fn text(code: u16, body: &'static str) -> Reply {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("X-Consul-Default-Acl-Policy", "allow")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn respond(status: u16, body: Value, index: Option<u64>, fault: Option<Fault>, stale: bool) -> Reply {
    let index = if fault == Some(Fault::IndexZero) { index.map(|_| 0) } else { index };
    let mut bytes = serde_json::to_vec(&body).unwrap();
    match fault {
        Some(Fault::Truncated) => bytes.truncate(bytes.len() / 2),
        Some(Fault::WrongShape) => {
            bytes = if body.is_array() { br#"{"Unexpected": true}"#.to_vec() } else { b"[1, 2, 3]".to_vec() }
        }
        Some(Fault::Garbage) => bytes = b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec(),
        _ => {}
    }
    let mut builder = Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("X-Consul-Default-Acl-Policy", "allow");
    if let Some(index) = index {
        builder = builder
            .header("X-Consul-Index", index.to_string())
            .header("X-Consul-Knownleader", "true")
            .header("X-Consul-Lastcontact", "0")
            .header("X-Consul-Effective-Consistency", if stale { "stale" } else { "leader" })
            .header("X-Consul-Query-Backend", "blocking-query");
    }
    builder.body(Full::new(Bytes::from(bytes))).unwrap()
}

fn answer(state: &State, q: &Query) -> Answer {
    let shown = |index: u64| index.saturating_sub(state.offset).max(1);
    if q.path == "/v1/agent/self" {
        if state.agent_self_forbidden {
            return Answer::Error(
                403,
                "Permission denied: token with AccessorID 'x' lacks permission 'agent:read' on \"node-a\"",
            );
        }
        return Answer::Plain(json!({
            "Config": {"Datacenter": state.local, "NodeName": agent::NODE, "Server": false, "Version": "1.19.2"},
            "DebugConfig": {"Datacenter": state.local, "DNSDomain": "consul.", "DNSAltDomain": ""},
            "Member": {"Name": agent::NODE, "Addr": state.agent_address, "Port": 8301},
            "Meta": {"consul-network-segment": ""},
            "xDS": {"SupportedProxies": {"envoy": ["1.25.4"]}, "Port": 8502, "Ports": {"Plaintext": 8502, "TLS": -1}}
        }));
    }
    if q.path == "/v1/catalog/datacenters" {
        let mut dcs: Vec<&String> = state.dcs.keys().collect();
        dcs.sort_by_key(|dc| **dc != state.local);
        return Answer::Plain(json!(dcs));
    }
    if q.path == "/v1/status/leader" {
        return Answer::Plain(json!("127.0.0.1:8300"));
    }
    if q.params.contains_key("stale") && q.params.contains_key("consistent") {
        return Answer::Error(400, "Cannot specify ?stale with ?consistent, conflicting semantics.");
    }
    let dc_name = q.params.get("datacenter").or(q.params.get("dc")).unwrap_or(&state.local);
    let Some(dc) = state.dcs.get(dc_name) else { return Answer::Error(500, "No path to datacenter") };
    let path = q.path.as_str();
    if path == "/v1/catalog/services" {
        let mut list: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in dc.services.values() {
            let tags = list.entry(&s.svc.name).or_default();
            for tag in &s.svc.tags {
                if !tags.contains(&tag.as_str()) {
                    tags.push(tag);
                }
            }
        }
        for tags in list.values_mut() {
            tags.sort();
        }
        return Answer::Blocking(json!(list), shown(dc.services_index));
    }
    if path == "/v1/catalog/nodes" {
        let nodes: Vec<Value> = dc.nodes.iter().map(|(name, n)| node_json(dc_name, name, n, shown)).collect();
        return Answer::Blocking(json!(nodes), shown(dc.nodes_index));
    }
    if path == "/v1/config/ingress-gateway" {
        let entries: Vec<Value> = dc
            .ingress
            .iter()
            .map(|(name, (services, index))| {
                let services: Vec<Value> = services.iter().map(|s| json!({"Name": s, "Hosts": null})).collect();
                json!({
                    "Kind": "ingress-gateway", "Name": name, "TLS": {"Enabled": false},
                    "Listeners": [{"Port": 8080, "Protocol": "tcp", "Services": services}],
                    "CreateIndex": shown(*index), "ModifyIndex": shown(*index)
                })
            })
            .collect();
        return Answer::Blocking(json!(entries), shown(dc.config_index));
    }
    if let Some(state_name) = path.strip_prefix("/v1/health/state/") {
        let filter = match q.params.get("filter").map(|f| parse_filter(f)) {
            Some(Some(filter)) => Some(filter),
            Some(None) => return Answer::Error(400, "Failed to create boolexpr evaluator"),
            None => None,
        };
        let checks: Vec<Value> = dc
            .checks
            .iter()
            .filter(|(_, c)| state_name == "any" || c.status == state_name)
            .filter(|(_, c)| filter.as_ref().is_none_or(|(equal, value)| (c.status == *value) == *equal))
            .map(|((node, id), c)| check_json(node, id, c, dc, shown))
            .collect();
        return Answer::Blocking(json!(checks), shown(dc.checks_index));
    }
    let health = |name: &str, connect: bool| {
        let named = dc.by_name.get(name).into_iter().flatten().filter_map(|key| dc.services.get_key_value(key));
        let proxies = dc.services.iter().filter(|(_, s)| {
            (s.svc.kind == "connect-proxy" && s.svc.proxy_for == name) || (s.svc.native && s.svc.name == name)
        });
        let selected: Vec<(&(String, String), &SvcRec)> = if connect { proxies.collect() } else { named.collect() };
        let entries: Vec<Value> = selected
            .into_iter()
            .map(|((node, id), s)| {
                let checks: Vec<Value> = on_node(&dc.checks, node)
                    .filter(|(_, c)| c.service_id.is_empty() || c.service_id == *id)
                    .map(|((n, cid), c)| check_json(n, cid, c, dc, shown))
                    .collect();
                json!({"Node": node_json(dc_name, node, &dc.nodes[node], shown), "Service": service_json(s, shown), "Checks": checks})
            })
            .collect();
        let index = dc.service_index.get(name).copied().unwrap_or(dc.extinction);
        Answer::Blocking(json!(entries), shown(index))
    };
    if let Some(name) = path.strip_prefix("/v1/health/service/") {
        return health(name, false);
    }
    if let Some(name) = path.strip_prefix("/v1/health/connect/") {
        return health(name, true);
    }
    Answer::Error(404, "404 page not found")
}

/// `Status != "passing"` / `Status == "critical"` (the go-bexpr forms this fake understands).
fn parse_filter(text: &str) -> Option<(bool, String)> {
    let (field, equal, value) = if let Some((f, v)) = text.split_once("!=") {
        (f, false, v)
    } else {
        let (f, v) = text.split_once("==")?;
        (f, true, v)
    };
    (field.trim() == "Status").then(|| (equal, value.trim().trim_matches('"').to_owned()))
}

fn node_json(dc: &str, name: &str, n: &NodeRec, shown: impl Fn(u64) -> u64) -> Value {
    let tagged = if n.tagged.is_empty() { Value::Null } else { json!(n.tagged) };
    let meta = if n.meta.is_empty() { Value::Null } else { json!(n.meta) };
    json!({
        "ID": "", "Node": name, "Address": n.address, "Datacenter": dc, "TaggedAddresses": tagged, "Meta": meta,
        "CreateIndex": shown(n.index.0), "ModifyIndex": shown(n.index.1)
    })
}

fn service_json(s: &SvcRec, shown: impl Fn(u64) -> u64) -> Value {
    let svc = &s.svc;
    let mut out = json!({
        "ID": svc.id, "Service": svc.name, "Tags": svc.tags, "Address": svc.address, "Meta": null,
        "Weights": svc.weights.map_or(json!({"Passing": 1, "Warning": 1}), |(p, w)| json!({"Passing": p, "Warning": w})),
        "EnableTagOverride": false,
        "Proxy": if svc.kind == "connect-proxy" { json!({"DestinationServiceName": svc.proxy_for, "Mode": ""}) } else { json!({"Mode": "", "MeshGateway": {}, "Expose": {}}) },
        "Connect": if svc.native { json!({"Native": true}) } else { json!({}) },
        "PeerName": "", "CreateIndex": shown(s.index.0), "ModifyIndex": shown(s.index.1)
    });
    let map = out.as_object_mut().unwrap();
    if svc.port != 0 {
        map.insert("Port".into(), json!(svc.port));
    }
    if !svc.kind.is_empty() {
        map.insert("Kind".into(), json!(svc.kind));
    }
    if !svc.tagged.is_empty() {
        let tagged: BTreeMap<&str, Value> =
            svc.tagged.iter().map(|(k, a, p)| (k.as_str(), json!({"Address": a, "Port": p}))).collect();
        map.insert("TaggedAddresses".into(), json!(tagged));
    }
    out
}

fn check_json(node: &str, id: &str, c: &CheckRec, dc: &Dc, shown: impl Fn(u64) -> u64) -> Value {
    let tags = dc.services.get(&(node.to_owned(), c.service_id.clone())).map_or(vec![], |s| s.svc.tags.clone());
    json!({
        "Node": node, "CheckID": id, "Name": id, "Status": c.status, "Notes": "", "Output": "",
        "ServiceID": c.service_id, "ServiceName": c.service_name, "ServiceTags": tags, "Type": "",
        "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {},
        "CreateIndex": shown(c.index.0), "ModifyIndex": shown(c.index.1)
    })
}
