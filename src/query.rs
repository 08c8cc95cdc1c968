//! `consul-dns query NAME [TYPE]`: one question to the daemon, the reply printed dig-style.
//! Container images have no dig; the daemon's binary is always there. UDP first, and TCP when
//! the reply is truncated (or with `--tcp`), as dig does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RecordType};
use thiserror::Error;

/// Why no answer could be shown.
#[derive(Debug, Error)]
pub enum QueryError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Network trouble or no reply in time.
    #[error("no answer from {addr} over {proto}: {source}")]
    Io {
        /// Server.
        addr: SocketAddr,
        /// "UDP" or "TCP".
        proto: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// A reply that cannot be read or does not answer the question.
    #[error("bad answer from {addr}: {reason}")]
    BadAnswer {
        /// Server.
        addr: SocketAddr,
        /// What is wrong.
        reason: String,
    },
}

/// A record type by name (`srv`, `AAAA`) or number (`TYPE65`, `65`).
pub fn parse_type(text: &str) -> Result<RecordType, QueryError> {
    let upper = text.to_ascii_uppercase();
    let number = upper.strip_prefix("TYPE").unwrap_or(&upper);
    if let Ok(code) = number.parse::<u16>() {
        return Ok(RecordType::from(code));
    }
    RecordType::from_str(&upper)
        .map_err(|_| QueryError::Usage(format!("unknown record type {text:?}: try A, AAAA, SRV, TXT, NS, SOA or PTR")))
}

/// Asks `addr` for `name`/`qtype` and returns the reply as text: status line, then the answer,
/// authority and additional sections in zone-file form.
pub fn run(
    addr: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Result<String, QueryError> {
    let absolute = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
    let qname = Name::from_ascii(&absolute).map_err(|e| QueryError::Usage(format!("bad name {name:?}: {e}")))?;
    let mut query = Message::query();
    query.metadata.id = fastrand::u16(..);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(qname, qtype));
    let bytes = query.to_vec().map_err(|e| QueryError::Usage(e.to_string()))?;
    let mut reply = if tcp { over_tcp(addr, &bytes, timeout)? } else { over_udp(addr, &bytes, timeout)? };
    let mut via = if tcp { "TCP" } else { "UDP" };
    let mut message = decode(addr, &reply, query.metadata.id)?;
    if message.metadata.truncation && !tcp {
        reply = over_tcp(addr, &bytes, timeout)?;
        message = decode(addr, &reply, query.metadata.id)?;
        via = "TCP after a truncated UDP reply";
    }
    Ok(render(&message, addr, via))
}

fn decode(addr: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, QueryError> {
    let bad = |reason: String| QueryError::BadAnswer { addr, reason };
    let message = Message::from_vec(bytes).map_err(|e| bad(format!("undecodable: {e}")))?;
    if message.metadata.id != id || message.metadata.message_type != MessageType::Response {
        return Err(bad("wrong ID or not a response".into()));
    }
    Ok(message)
}

fn over_udp(addr: SocketAddr, query: &[u8], timeout: Duration) -> Result<Vec<u8>, QueryError> {
    let io = |source| QueryError::Io { addr, proto: "UDP", source };
    let socket = UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).map_err(io)?;
    socket.set_read_timeout(Some(timeout)).map_err(io)?;
    socket.connect(addr).map_err(io)?;
    socket.send(query).map_err(io)?;
    let mut buf = vec![0u8; 65_535];
    let len = socket.recv(&mut buf).map_err(io)?;
    buf.truncate(len);
    Ok(buf)
}

fn over_tcp(addr: SocketAddr, query: &[u8], timeout: Duration) -> Result<Vec<u8>, QueryError> {
    let io = |source| QueryError::Io { addr, proto: "TCP", source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let len = u16::try_from(query.len()).map_err(|_| QueryError::Usage("query too long".into()))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).map_err(io)?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).map_err(io)?;
    let mut buf = vec![0u8; u16::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

/// The mnemonic dig prints (RFC 1035, 6891).
fn rcode_name(code: u16) -> String {
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        16 => "BADVERS",
        other => return format!("RCODE{other}"),
    };
    name.to_owned()
}

fn render(message: &Message, addr: SocketAddr, via: &str) -> String {
    let m = &message.metadata;
    let flags: Vec<&str> =
        [(m.authoritative, "aa"), (m.truncation, "tc"), (m.recursion_desired, "rd"), (m.recursion_available, "ra")]
            .into_iter()
            .filter_map(|(on, flag)| on.then_some(flag))
            .collect();
    let mut out = format!(
        ";; status: {}; flags: {}; answer {}, authority {}, additional {} ({addr} over {via})\n",
        rcode_name(u16::from(m.response_code)),
        flags.join(" "),
        message.answers.len(),
        message.authorities.len(),
        message.additionals.len()
    );
    for (title, records) in
        [("ANSWER", &message.answers), ("AUTHORITY", &message.authorities), ("ADDITIONAL", &message.additionals)]
    {
        if !records.is_empty() {
            out.push_str(&format!(";; {title}\n"));
            for record in records {
                out.push_str(&format!("{record}\n"));
            }
        }
    }
    out
}
