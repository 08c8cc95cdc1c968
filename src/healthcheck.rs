//! `consul-dns healthcheck [ADDR]`: one SOA query over UDP; success is a well-formed reply
//! (same ID, QR set, the question echoed) with NOERROR or NXDOMAIN. Container images have no
//! dig, and the daemon's own binary is always there.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use thiserror::Error;

use crate::config::value::ListenAddr;

/// Why the check failed.
#[derive(Debug, Error)]
pub enum HealthError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Network trouble or no reply in time.
    #[error("no answer from {addr}: {source}")]
    Io {
        /// Server.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A reply that is not a proper answer to the query.
    #[error("bad answer from {addr}: {reason}")]
    BadAnswer {
        /// Server.
        addr: SocketAddr,
        /// What is wrong.
        reason: String,
    },
}

/// Runs the check; `Ok` carries a one-line summary.
pub fn check(addr: Option<&str>, name: &str, timeout: Duration) -> Result<String, HealthError> {
    let addr = addr.unwrap_or("127.0.0.1:8600").parse::<ListenAddr>().map_err(HealthError::Usage)?.0;
    let qname = Name::from_ascii(name).map_err(|e| HealthError::Usage(format!("bad name {name:?}: {e}")))?;
    let id = fastrand::u16(..);
    let mut query = Message::query();
    query.metadata.id = id;
    query.add_query(Query::query(qname.clone(), RecordType::SOA));
    let bytes = query.to_vec().map_err(|e| HealthError::Usage(e.to_string()))?;
    let io = |source| HealthError::Io { addr, source };
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(bind).map_err(io)?;
    socket.set_read_timeout(Some(timeout)).map_err(io)?;
    socket.connect(addr).map_err(io)?;
    socket.send(&bytes).map_err(io)?;
    let mut buf = [0u8; 4096];
    let len = socket.recv(&mut buf).map_err(io)?;
    let bad = |reason: String| HealthError::BadAnswer { addr, reason };
    let reply = Message::from_vec(&buf[..len]).map_err(|e| bad(format!("undecodable: {e}")))?;
    if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response {
        return Err(bad("wrong ID or not a response".into()));
    }
    if reply.queries.len() != 1 || reply.queries[0].name() != &qname {
        return Err(bad("question not echoed".into()));
    }
    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {
            Ok(format!("{addr}: {} for {name} SOA", reply.metadata.response_code))
        }
        other => Err(bad(format!("rcode {other}"))),
    }
}
