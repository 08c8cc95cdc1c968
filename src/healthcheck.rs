//! `consul-dns healthcheck [ADDR]`: one SOA query over UDP for the domain. Healthy is a
//! well-formed reply (same ID, QR set, the question echoed) with NOERROR: NXDOMAIN means the
//! daemon does not serve the name asked, which is a misconfiguration, not health. Container
//! images have no dig, and the daemon's own binary is always there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
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

/// An address given on the command line (`IP:PORT`, `[IPv6]:PORT`).
pub fn parse_addr(text: &str) -> Result<SocketAddr, HealthError> {
    text.parse::<ListenAddr>().map(|a| reachable(a.0)).map_err(HealthError::Usage)
}

/// Where a listen address is asked: a wildcard (`0.0.0.0`, `::`) through loopback.
pub fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

/// Asks `addr` for the SOA of `name` (trailing dot optional); `Ok` carries a one-line summary.
pub fn check(addr: SocketAddr, name: &str, timeout: Duration) -> Result<String, HealthError> {
    let absolute = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
    let qname = Name::from_ascii(&absolute).map_err(|e| HealthError::Usage(format!("bad name {name:?}: {e}")))?;
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
        ResponseCode::NoError => Ok(format!("{addr}: NOERROR for {absolute} SOA")),
        ResponseCode::NXDomain => Err(bad(format!(
            "NXDOMAIN for {absolute}: that name is not in the domain this daemon serves (see --name and domain)"
        ))),
        other => Err(bad(format!("rcode {other} for {absolute} SOA"))),
    }
}
