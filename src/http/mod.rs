//! The HTTP listener (`--http`, default 127.0.0.1:9153, CoreDNS's metrics port): `/metrics`
//! (Prometheus text), `/health` and `/ready` (JSON), `/v1/catalog` (the live snapshot as JSON)
//! and `/debug/pprof/profile` (a CPU profile for `go tool pprof`).
//!
//! hyper's HTTP/1 server on tokio, one task per connection, at most [`MAX_CONNECTIONS`] at a
//! time, and a header timeout so an idle client cannot hold one. Everything is read when asked
//! (the snapshot, the counters); nothing here sits on the DNS path. Must not import `backend`.

pub mod catalog;
pub mod health;
pub mod profile;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::catalog::Catalog;
use crate::telemetry::{CatalogGauges, Metrics};

/// Concurrent HTTP connections; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the HTTP listener could not start.
#[derive(Debug, Error)]
#[error("cannot bind HTTP listener on {addr}: {source}")]
pub struct HttpError {
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: io::Error,
}

/// What the handlers read.
#[derive(Debug)]
pub struct State {
    /// The live catalog.
    pub catalog: Arc<Catalog>,
    /// The process's metrics (a test passes its own).
    pub metrics: &'static Metrics,
    /// The oldest catalog `/ready` accepts; `None` = no limit.
    pub max_age: Option<Duration>,
    /// When the process started.
    pub started: Instant,
    /// The live source, if any: until it first publishes, what is served is only the
    /// seed (the static catalog or the restored one), and `/ready` says so.
    pub live: Option<crate::telemetry::Backend>,
    /// The seed is a catalog restored from the state directory (not the static catalog).
    pub restored: bool,
}

/// Binds the listener (before anything announces readiness, so a busy port stops start-up).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr).await.map_err(|source| HttpError { addr, source })
}

/// Serves on `listener` until `cancel`; logs "HTTP listening." with the bound address.
pub fn serve(listener: TcpListener, state: Arc<State>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "HTTP listening.");
    }
    tokio::spawn(async move {
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => return,
                permit = Arc::clone(&connections).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        debug!(error = %e, "HTTP accept failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (state, cancel) = (Arc::clone(&state), cancel.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| handle(req, Arc::clone(&state)));
                let mut connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let mut connection = std::pin::Pin::new(&mut connection);
                tokio::select! {
                    served = connection.as_mut() => if let Err(e) = served {
                        debug!(%peer, error = %e, "HTTP connection ended with an error.");
                    },
                    _ = cancel.cancelled() => {}
                }
            });
        }
    })
}

type Reply = Response<Full<Bytes>>;

/// Routes one request.
async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Reply, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(json(StatusCode::METHOD_NOT_ALLOWED, &Message { error: "only GET" }));
    }
    Ok(match req.uri().path() {
        "/metrics" => metrics(&state),
        "/health" => {
            json(StatusCode::OK, &Health { alive: true, uptime_seconds: state.started.elapsed().as_secs_f64() })
        }
        "/ready" => ready(&state),
        "/v1/catalog" => match catalog::Filter::parse(req.uri().query()) {
            Ok(filter) => json(StatusCode::OK, &catalog::CatalogView::filtered(&state.catalog.load(), &filter)),
            Err(error) => json(StatusCode::BAD_REQUEST, &Problem { error }),
        },
        "/debug/pprof/profile" => cpu_profile(req.uri().query()).await,
        "/debug/pprof/heap" => heap_profile().await,
        "/debug/pprof" | "/debug/pprof/" => reply(StatusCode::OK, "text/html; charset=utf-8", profile::INDEX.into()),
        _ => json(StatusCode::NOT_FOUND, &Message { error: "not found" }),
    })
}

#[derive(Serialize)]
struct Message {
    error: &'static str,
}

#[derive(Serialize)]
struct Problem {
    error: String,
}

#[derive(Serialize)]
struct Health {
    alive: bool,
    uptime_seconds: f64,
}

fn metrics(state: &State) -> Reply {
    let snapshot = state.catalog.load();
    let counts = snapshot.counts();
    let gauges = CatalogGauges {
        services: counts.services,
        instances: counts.instances,
        nodes: counts.nodes,
        serial: snapshot.serial(),
    };
    drop(snapshot);
    let body = state.metrics.render(gauges, SystemTime::now());
    reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body.into())
}

fn ready(state: &State) -> Reply {
    let snapshot = state.catalog.load();
    let as_of = state.metrics.catalog_as_of();
    let seed = match state.live {
        Some(backend) if snapshot.is_synced() && !state.metrics.ever_published(backend) => {
            Some(if state.restored { health::Seed::Restored } else { health::Seed::Static })
        }
        _ => None,
    };
    let facts = health::Facts {
        stopping: state.metrics.is_stopping(),
        source_down: state.metrics.is_source_down(),
        synced: snapshot.is_synced(),
        seed,
        as_of,
        max_age: state.max_age,
        now: SystemTime::now(),
    };
    let (ready, body) = health::ready_body(&facts, snapshot.serial());
    json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body)
}

async fn heap_profile() -> Reply {
    match profile::heap().await {
        Ok(body) => {
            let mut response = reply(StatusCode::OK, "application/octet-stream", body.into());
            let disposition = HeaderValue::from_static("attachment; filename=\"heap\"");
            response.headers_mut().insert(hyper::header::CONTENT_DISPOSITION, disposition);
            response
        }
        Err(e @ profile::ProfileError::NoHeapProfiler) => {
            reply(StatusCode::NOT_IMPLEMENTED, "text/plain", format!("{e}\n").into())
        }
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n").into()),
    }
}

async fn cpu_profile(query: Option<&str>) -> Reply {
    let duration = match profile::seconds(query) {
        Ok(duration) => duration,
        Err(message) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("{message}\n").into()),
    };
    match profile::cpu(duration).await {
        Ok(body) => {
            let mut response = reply(StatusCode::OK, "application/octet-stream", body.into());
            let disposition = HeaderValue::from_static("attachment; filename=\"profile\"");
            response.headers_mut().insert(hyper::header::CONTENT_DISPOSITION, disposition);
            response
        }
        Err(e @ profile::ProfileError::Busy) => reply(StatusCode::CONFLICT, "text/plain", format!("{e}\n").into()),
        Err(e @ profile::ProfileError::Unavailable) => {
            reply(StatusCode::NOT_IMPLEMENTED, "text/plain", format!("{e}\n").into())
        }
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n").into()),
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    let mut text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    reply(status, "application/json", text.into())
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::catalog::model::CatalogData;
    use crate::catalog::{BuildOptions, Snapshot};
    use crate::telemetry::Backend;

    async fn get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = raw.split_once("\r\n\r\n").unwrap().1;
        (status, serde_json::from_str(body).unwrap())
    }

    /// `/ready` follows the snapshots and their age: an unsynced start (no data yet), a
    /// restored snapshot older than the limit, a live sync, and shutdown.
    #[tokio::test]
    async fn ready_flips_as_snapshots_come_and_age() {
        let options = Arc::new(BuildOptions::new("dc1", 5));
        let catalog = Arc::new(Catalog::new(Snapshot::empty(Arc::clone(&options), false)));
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let hour = Duration::from_secs(3600);
        let state = State {
            catalog: Arc::clone(&catalog),
            metrics,
            max_age: Some(hour),
            started: std::time::Instant::now(),
            live: None,
            restored: false,
        };
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let server = serve(listener, Arc::new(state), cancel.clone());

        let (status, body) = get(addr, "/ready").await;
        assert_eq!((status, body["reason"].as_str()), (503, Some("not synced")), "{body}");
        assert_eq!(get(addr, "/health").await.0, 200, "alive all along");

        let data = CatalogData::default();
        catalog.publish(Snapshot::build(&data, Arc::clone(&options)));
        metrics.restored(SystemTime::now() - 2 * hour);
        let (status, body) = get(addr, "/ready").await;
        assert_eq!((status, body["reason"].as_str()), (503, Some("stale")), "{body}");
        assert!(body["age_seconds"].as_f64().unwrap() >= 7200.0, "{body}");

        metrics.sync_read(Backend("consul"), SystemTime::now());
        let (status, body) = get(addr, "/ready").await;
        assert_eq!((status, body["ready"].as_bool()), (200, Some(true)), "{body}");
        assert_eq!(body["serial"].as_u64(), Some(u64::from(catalog.load().serial())));

        metrics.set_stopping();
        assert_eq!(get(addr, "/ready").await.1["reason"], "stopping");
        cancel.cancel();
        server.await.unwrap();
    }
}
