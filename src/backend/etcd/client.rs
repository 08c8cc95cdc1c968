//! etcd's v3 API through its JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`, `/v3/watch`),
//! over the reqwest client the Consul source already uses: no gRPC stack, no protoc, and the
//! handful of calls the catalog needs. Keys and values travel base64-encoded; 64-bit numbers
//! as strings. Endpoints are tried in turn until one answers.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::EtcdError;

/// How long one call may take (a watch has no deadline; its stream is read as it comes).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One key and its value, as of `mod_revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value (empty for a delete event).
    pub value: Vec<u8>,
    /// Revision of the last change.
    pub mod_revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was written.
    Put(KeyValue),
    /// A key was deleted.
    Delete(String),
}

/// A comparison in a transaction.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key was last written at this revision.
    ModRevision(String, i64),
}

/// An etcd cluster's JSON gateway.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Vec<String>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    revision: Option<String>,
}

#[derive(Deserialize)]
struct WireKv {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    mod_revision: Option<String>,
}

#[derive(Deserialize)]
struct RangeResponse {
    header: Header,
    #[serde(default)]
    kvs: Vec<WireKv>,
}

/// The end of the range of every key starting with `prefix` (etcd's `range_end`).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn number(text: Option<&str>) -> Result<i64, EtcdError> {
    text.unwrap_or("0").parse().map_err(|_| EtcdError::Decode(format!("revision {text:?} is not a number")))
}

fn decode_kv(kv: WireKv) -> Result<KeyValue, EtcdError> {
    let key = B64.decode(&kv.key).map_err(|e| EtcdError::Decode(format!("key is not base64: {e}")))?;
    let value = match kv.value {
        Some(v) => B64.decode(v).map_err(|e| EtcdError::Decode(format!("value is not base64: {e}")))?,
        None => Vec::new(),
    };
    Ok(KeyValue {
        key: String::from_utf8_lossy(&key).into_owned(),
        value,
        mod_revision: number(kv.mod_revision.as_deref())?,
    })
}

impl EtcdClient {
    /// A client for these endpoints (`http://host:port`).
    pub fn new(endpoints: &[String]) -> Result<EtcdClient, EtcdError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| EtcdError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        Ok(EtcdClient { http, endpoints: endpoints.to_vec() })
    }

    /// POSTs `body` to `path` on the first endpoint that answers; `timeout` bounds the whole
    /// call (`None` for a watch, whose response streams).
    async fn post(&self, path: &str, body: &Value, timeout: Option<Duration>) -> Result<reqwest::Response, EtcdError> {
        let mut last = EtcdError::Unreachable("no endpoint configured".into());
        for endpoint in &self.endpoints {
            let mut request = self
                .http
                .post(format!("{endpoint}{path}"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    return Err(EtcdError::Status { status, message: text.chars().take(300).collect() });
                }
                Err(e) if e.is_timeout() => last = EtcdError::Timeout(timeout.unwrap_or(CALL_TIMEOUT)),
                Err(e) => last = EtcdError::Unreachable(format!("{endpoint}: {}", error_chain(&e))),
            }
        }
        Err(last)
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let response = self.post(path, &body, Some(CALL_TIMEOUT)).await?;
        let bytes = response.bytes().await.map_err(|e| {
            if e.is_timeout() { EtcdError::Timeout(CALL_TIMEOUT) } else { EtcdError::Unreachable(error_chain(&e)) }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| EtcdError::Decode(format!("{path}: {e}")))
    }

    /// Every key under `prefix`, and the revision they are current at.
    pub async fn range(&self, prefix: &str) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let body = json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))});
        let value = self.call("/v3/kv/range", body).await?;
        let response: RangeResponse =
            serde_json::from_value(value).map_err(|e| EtcdError::Decode(format!("range: {e}")))?;
        let revision = number(response.header.revision.as_deref())?;
        let kvs = response.kvs.into_iter().map(decode_kv).collect::<Result<_, _>>()?;
        Ok((revision, kvs))
    }

    /// One key, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        let value = self.call("/v3/kv/range", json!({"key": B64.encode(key)})).await?;
        let response: RangeResponse =
            serde_json::from_value(value).map_err(|e| EtcdError::Decode(format!("range: {e}")))?;
        response.kvs.into_iter().next().map(decode_kv).transpose()
    }

    /// Writes `puts` and deletes `deletes` at once if every comparison holds; `false` = one did
    /// not, nothing written.
    pub async fn txn(
        &self,
        compare: &[Compare],
        puts: &[(String, Vec<u8>)],
        deletes: &[String],
    ) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => {
                    json!({"key": B64.encode(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
                }
                Compare::ModRevision(key, rev) => {
                    json!({"key": B64.encode(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()})
                }
            })
            .collect();
        let mut success: Vec<Value> = puts
            .iter()
            .map(|(key, value)| json!({"request_put": {"key": B64.encode(key), "value": B64.encode(value)}}))
            .collect();
        success.extend(deletes.iter().map(|key| json!({"request_delete_range": {"key": B64.encode(key)}})));
        let value = self.call("/v3/kv/txn", json!({"compare": compare, "success": success})).await?;
        Ok(value.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Writes one key.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), EtcdError> {
        self.call("/v3/kv/put", json!({"key": B64.encode(key), "value": B64.encode(value)})).await.map(drop)
    }

    /// Deletes one key; `false` when it did not exist.
    pub async fn delete(&self, key: &str) -> Result<bool, EtcdError> {
        let value = self.call("/v3/kv/deleterange", json!({"key": B64.encode(key)})).await?;
        Ok(number(value.get("deleted").and_then(Value::as_str))? > 0)
    }

    /// Compacts the history up to `revision` (tests and operators).
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        self.call("/v3/kv/compaction", json!({"revision": revision.to_string(), "physical": true})).await.map(drop)
    }

    /// Opens a watch of every key under `prefix` from `start_revision` on.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let response = self.post("/v3/watch", &body, None).await?;
        Ok(Watch { response, frames: Frames::default() })
    }
}

/// An open watch: a stream of JSON objects, one per message.
#[derive(Debug)]
pub struct Watch {
    response: reqwest::Response,
    frames: Frames,
}

/// The bytes of a watch stream not decoded yet.
#[derive(Debug, Default)]
struct Frames {
    buffer: Vec<u8>,
}

/// One message of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// The watch is set up (or a progress notice): current as of this revision.
    Progress(i64),
    /// Changes, and the revision they bring the keys to.
    Events(i64, Vec<Event>),
    /// History up to this revision is gone: re-read everything.
    Compacted(i64),
}

#[derive(Deserialize)]
struct WatchEnvelope {
    #[serde(default)]
    result: Option<WatchResult>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WatchResult {
    header: Header,
    #[serde(default)]
    events: Vec<WireEvent>,
    #[serde(default)]
    compact_revision: Option<String>,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    kv: WireKv,
}

impl Watch {
    /// The next message; `Err` when the stream ends or breaks (reconnect from the last
    /// revision seen).
    pub async fn next(&mut self) -> Result<WatchMessage, EtcdError> {
        loop {
            if let Some(message) = self.frames.take()? {
                return Ok(message);
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.frames.buffer.extend_from_slice(&chunk),
                Ok(None) => return Err(EtcdError::Unreachable("the watch stream ended".into())),
                Err(e) => return Err(EtcdError::Unreachable(format!("the watch stream broke: {}", error_chain(&e)))),
            }
        }
    }
}

impl Frames {
    /// Decodes one complete JSON object from the front of the buffer, if there is one.
    fn take(&mut self) -> Result<Option<WatchMessage>, EtcdError> {
        let start = self.buffer.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(self.buffer.len());
        self.buffer.drain(..start);
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let mut stream = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<WatchEnvelope>();
        let envelope = match stream.next() {
            Some(Ok(envelope)) => envelope,
            Some(Err(e)) if e.is_eof() => return Ok(None),
            Some(Err(e)) => return Err(EtcdError::Decode(format!("watch: {e}"))),
            None => return Ok(None),
        };
        let used = stream.byte_offset();
        self.buffer.drain(..used);
        if let Some(error) = envelope.error {
            return Err(EtcdError::Status { status: 0, message: format!("watch: {error}") });
        }
        let Some(result) = envelope.result else { return Ok(None) };
        let compact = number(result.compact_revision.as_deref())?;
        if compact > 0 {
            return Ok(Some(WatchMessage::Compacted(compact)));
        }
        if result.canceled {
            let reason = result.cancel_reason.unwrap_or_else(|| "no reason given".into());
            return Err(EtcdError::Unreachable(format!("the watch was cancelled: {reason}")));
        }
        let revision = number(result.header.revision.as_deref())?;
        if result.events.is_empty() {
            return Ok(Some(WatchMessage::Progress(revision)));
        }
        let mut events = Vec::with_capacity(result.events.len());
        for event in result.events {
            let delete = event.kind.as_deref() == Some("DELETE");
            let kv = decode_kv(event.kv)?;
            events.push(if delete { Event::Delete(kv.key) } else { Event::Put(kv) });
        }
        Ok(Some(WatchMessage::Events(revision, events)))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end("/consul-dns/"), b"/consul-dns0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn watch_messages_decode_across_chunk_boundaries() {
        let key = B64.encode("/p/services/a");
        let value = B64.encode("{}");
        let text = format!(
            "{{\"result\":{{\"header\":{{\"revision\":\"7\"}},\"created\":true}}}}\n\
             {{\"result\":{{\"header\":{{\"revision\":\"9\"}},\"events\":[{{\"kv\":{{\"key\":\"{key}\",\"value\":\"{value}\",\"mod_revision\":\"9\"}}}},{{\"type\":\"DELETE\",\"kv\":{{\"key\":\"{key}\"}}}}]}}}}\n\
             {{\"result\":{{\"header\":{{\"revision\":\"9\"}},\"compact_revision\":\"8\",\"canceled\":true}}}}"
        );
        let (first, rest) = text.as_bytes().split_at(70);
        let mut frames = Frames { buffer: first.to_vec() };
        assert_eq!(frames.take().unwrap(), Some(WatchMessage::Progress(7)));
        assert_eq!(frames.take().unwrap(), None, "half an object waits for more");
        frames.buffer.extend_from_slice(rest);
        let Some(WatchMessage::Events(9, events)) = frames.take().unwrap() else { panic!("events") };
        assert_eq!(events[1], Event::Delete("/p/services/a".into()));
        assert!(matches!(&events[0], Event::Put(kv) if kv.value == b"{}" && kv.mod_revision == 9));
        assert_eq!(frames.take().unwrap(), Some(WatchMessage::Compacted(8)));
    }
}
