//! One question to one upstream, over UDP or TCP, before a deadline.
//!
//! UDP uses a fresh socket per question (a random source port, connected to the upstream so
//! only its datagrams arrive); datagrams that are not the answer (another ID, another
//! question, not a response) are skipped, as stub resolvers do, until the deadline. TCP uses
//! a fresh connection with the 2-byte length prefix (S1.2).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use crate::dns::message::question_end;
use crate::wire::{self, HEADER_LEN, MAX_MESSAGE_LEN, flag};

/// Why an upstream gave no usable reply.
#[derive(Debug, Error)]
pub enum ExchangeError {
    /// Nothing usable arrived before the deadline.
    #[error("no reply in time")]
    Timeout,
    /// The network said no (connection refused, unreachable, …).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A TCP reply that is not the answer to the question.
    #[error("reply does not answer the question")]
    Mismatch,
}

impl ExchangeError {
    /// The metric label of this failure.
    pub fn reason(&self) -> crate::telemetry::UpstreamError {
        use crate::telemetry::UpstreamError;
        match self {
            ExchangeError::Timeout => UpstreamError::Timeout,
            ExchangeError::Io(_) => UpstreamError::Network,
            ExchangeError::Mismatch => UpstreamError::Mismatch,
        }
    }
}

/// Sends `query` over UDP and returns the first datagram that answers it.
pub async fn udp(server: SocketAddr, query: &[u8], deadline: Instant) -> Result<Vec<u8>, ExchangeError> {
    let local: SocketAddr =
        if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        let len = match timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Err(ExchangeError::Timeout),
            Ok(received) => received?,
        };
        if answers(query, &buf[..len]) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// Sends `query` over a new TCP connection and returns the reply.
pub async fn tcp(server: SocketAddr, query: &[u8], deadline: Instant) -> Result<Vec<u8>, ExchangeError> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        let _ = stream.set_nodelay(true);
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await? as usize;
        let mut reply = vec![0u8; len];
        stream.read_exact(&mut reply).await?;
        Ok::<_, ExchangeError>(reply)
    };
    let reply = timeout_at(deadline, exchange).await.map_err(|_| ExchangeError::Timeout)??;
    if answers(query, &reply) { Ok(reply) } else { Err(ExchangeError::Mismatch) }
}

/// Whether `reply` is a response to `query`: same ID, QR set, and the same single question
/// (letter case aside: some servers normalise it).
pub fn answers(query: &[u8], reply: &[u8]) -> bool {
    let Some(end) = question_end(query) else { return false };
    reply.len() >= end
        && reply[..2] == query[..2]
        && wire::read_u16(reply, 2) & flag::QR != 0
        && wire::read_u16(reply, 4) == 1
        && reply[HEADER_LEN..end].eq_ignore_ascii_case(&query[HEADER_LEN..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::tests::query;
    use crate::wire::rtype;

    #[test]
    fn answers_needs_id_qr_and_the_question() {
        let q = query("Kong-Database", rtype::A, None);
        let mut reply = q.clone();
        reply[2] |= 0x80;
        assert!(answers(&q, &reply));
        let mut lower = reply.clone();
        lower[13] = b'k';
        assert!(answers(&q, &lower), "case may differ");
        let mut other_id = reply.clone();
        other_id[1] ^= 1;
        assert!(!answers(&q, &other_id));
        assert!(!answers(&q, &q), "a query is not an answer");
        let mut other_name = reply.clone();
        other_name[14] = b'x';
        assert!(!answers(&q, &other_name));
        let mut other_type = reply.clone();
        let type_at = q.len() - 3;
        other_type[type_at] ^= 0xff;
        assert!(!answers(&q, &other_type));
        assert!(!answers(&q, &reply[..20]), "cut short");
    }
}
