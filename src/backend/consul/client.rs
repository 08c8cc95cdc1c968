//! The HTTP side: one `reqwest` client (rustls, no OpenSSL) with the token header, the CA
//! bundle, `?stale`, timeouts longer than the blocking wait (H3.3, H6.2), and a semaphore that
//! bounds concurrent requests to `max_conns` (H1.4: an agent answers 429 beyond 200
//! connections per client IP).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use super::{Settings, SyncError};

/// Slack on top of `wait + wait/16` for a blocking query: Consul holds requests up to ~7 s more
/// during leader elections (H3.3).
const TIMEOUT_SLACK: Duration = Duration::from_secs(10);
/// Timeout of requests that do not block.
const PLAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to establish a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A successful read.
#[derive(Debug)]
pub struct Reply {
    /// The JSON body.
    pub body: Bytes,
    /// `X-Consul-Index`, if sent (blocking-capable endpoints only, H3.8).
    pub index: Option<u64>,
}

/// A Consul HTTP API client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    stale: bool,
    wait: Duration,
    permits: Arc<Semaphore>,
}

impl Client {
    /// Builds the client; fails on an unreadable CA bundle.
    pub fn new(settings: &Settings) -> Result<Client, SyncError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &settings.token {
            let mut value = HeaderValue::from_str(token.expose())
                .map_err(|_| SyncError::Setup("the Consul token has characters a header cannot carry".into()))?;
            value.set_sensitive(true);
            headers.insert("X-Consul-Token", value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(settings.max_conns)
            .user_agent(concat!("consul-dns/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_cert {
            let shown = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let pem = std::fs::read(path)
                .map_err(|e| SyncError::Setup(format!("cannot read CA bundle {}: {e}", shown.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| SyncError::Setup(format!("CA bundle {}: {e}", path.display())))?;
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| SyncError::Setup(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: settings.address.trim_end_matches('/').into(),
            stale: settings.stale,
            wait: settings.wait,
            permits: Arc::new(Semaphore::new(settings.max_conns.max(1))),
        })
    }

    /// `GET path` in datacenter `dc`; a blocking query when `index` is given (H3.2).
    pub async fn get(&self, path: &str, dc: Option<&str>, index: Option<u64>) -> Result<Reply, SyncError> {
        let mut url = format!("{}{path}", self.base);
        let mut sep = if path.contains('?') { '&' } else { '?' };
        let mut param = |url: &mut String, text: &str| {
            url.push(sep);
            url.push_str(text);
            sep = '&';
        };
        if let Some(dc) = dc {
            param(&mut url, &format!("dc={dc}"));
        }
        if self.stale {
            param(&mut url, "stale");
        }
        let timeout = match index {
            Some(index) => {
                param(&mut url, &format!("index={index}&wait={}ms", self.wait.as_millis()));
                self.wait + self.wait / 16 + TIMEOUT_SLACK
            }
            None => PLAIN_TIMEOUT,
        };
        let _permit = self.permits.acquire().await.map_err(|_| SyncError::Setup("client closed".into()))?;
        let response = self
            .http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| SyncError::Network { url: url.clone(), source })?;
        let status = response.status();
        let index = response
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response.bytes().await.map_err(|source| SyncError::Network { url: url.clone(), source })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
            return Err(SyncError::Status { url, status: status.as_u16(), body: text });
        }
        Ok(Reply { body, index })
    }
}
