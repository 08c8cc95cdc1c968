//! The fake agent's write side: `PUT /v1/agent/service/register` and
//! `PUT /v1/agent/service/deregister/<id>`, as the example services call them. Instances land
//! on the agent's own node in the local datacenter. An HTTP check in the definition is run by
//! the fake itself, as an agent does: first at once, then every `Interval`; 2xx is passing,
//! 429 warning, anything else (or no answer within `Timeout`) critical. A new check starts
//! critical unless the definition gives a `Status`, as in Consul.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{Reply, State, Svc, parse_wait, put_check, put_node, put_service, remove_service, text, write_to};

/// The agent's node name.
pub(super) const NODE: &str = "fake-agent";

/// What the agent endpoints need to change the catalog.
#[derive(Clone)]
pub(super) struct Writer {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) version: watch::Sender<u64>,
}

/// Answers one agent write.
pub(super) async fn write(w: &Writer, path: &str, req: Request<Incoming>) -> Reply {
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        let local = w.state.lock().unwrap().local.clone();
        let mut found = false;
        write_to(&w.state, &w.version, &local, |d, index| found = remove_service(d, index, NODE, id));
        return if found {
            text(200, "")
        } else {
            text(404, "Unknown service ID. Ensure that the service is registered.")
        };
    }
    if path != "/v1/agent/service/register" {
        return text(404, "404 page not found");
    }
    let Ok(body) = req.into_body().collect().await else { return text(400, "Request body could not be read") };
    let Ok(def) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return text(400, "Request decode failed: the body is not a JSON service definition");
    };
    let name = def["Name"].as_str().unwrap_or_default().to_owned();
    if name.is_empty() {
        return text(400, "Invalid Service Meta: Missing service name");
    }
    let id = def["ID"].as_str().filter(|id| !id.is_empty()).unwrap_or(&name).to_owned();
    let check = &def["Check"];
    let check_id = check["CheckID"].as_str().map_or_else(|| format!("service:{id}"), str::to_owned);
    let http = check["HTTP"].as_str().map(str::to_owned);
    let initial = check["Status"].as_str().unwrap_or("critical").to_owned();
    let svc = Svc {
        id: id.clone(),
        name,
        address: def["Address"].as_str().unwrap_or_default().to_owned(),
        port: def["Port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        tags: def["Tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
        checks: if check.is_object() { vec![(check_id.clone(), initial)] } else { vec![] },
        ..Svc::default()
    };
    let (local, address, generation) = {
        let mut s = w.state.lock().unwrap();
        let generation = s.agent_checks.get(&check_id).map_or(1, |g| g + 1);
        s.agent_checks.insert(check_id.clone(), generation);
        (s.local.clone(), s.agent_address.clone(), generation)
    };
    write_to(&w.state, &w.version, &local, |d, index| {
        if !d.nodes.contains_key(NODE) {
            let tagged: BTreeMap<String, String> =
                ["lan", "lan_ipv4", "wan", "wan_ipv4"].iter().map(|k| (k.to_string(), address.clone())).collect();
            put_node(d, index, NODE, &address, tagged, BTreeMap::new());
        }
        put_service(d, index, NODE, svc);
    });
    if let Some(url) = http {
        let every = check["Interval"].as_str().and_then(parse_wait).unwrap_or(Duration::from_secs(10));
        let within = check["Timeout"].as_str().and_then(parse_wait).unwrap_or(Duration::from_secs(10));
        let run = CheckRun { w: w.clone(), local, id, check_id, url, every, within, generation };
        tokio::spawn(run.run());
    }
    text(200, "")
}

/// One registered HTTP check, run until its instance is deregistered or registered again.
struct CheckRun {
    w: Writer,
    local: String,
    id: String,
    check_id: String,
    url: String,
    every: Duration,
    within: Duration,
    generation: u64,
}

impl CheckRun {
    async fn run(self) {
        loop {
            let status = http_status(&self.url, self.within).await;
            let current = {
                let s = self.w.state.lock().unwrap();
                if s.agent_checks.get(&self.check_id) != Some(&self.generation) {
                    return;
                }
                let dc = &s.dcs[&self.local];
                match dc.checks.get(&(NODE.to_owned(), self.check_id.clone())) {
                    Some(check) => check.status.clone(),
                    None => return, // deregistered
                }
            };
            if current != status {
                write_to(&self.w.state, &self.w.version, &self.local, |d, index| {
                    if d.checks.contains_key(&(NODE.to_owned(), self.check_id.clone())) {
                        put_check(d, index, NODE, &self.check_id, &self.id, status);
                    }
                });
            }
            tokio::time::sleep(self.every).await;
        }
    }
}

/// One HTTP/1.0 GET of `url` (http only): the check status its answer means.
async fn http_status(url: &str, within: Duration) -> &'static str {
    let Some(rest) = url.strip_prefix("http://") else { return "critical" };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: Consul Health Check\r\n\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head).into_owned();
        line.split_whitespace().nth(1)?.parse::<u16>().ok()
    };
    match tokio::time::timeout(within, exchange).await {
        Ok(Some(200..=299)) => "passing",
        Ok(Some(429)) => "warning",
        _ => "critical",
    }
}
