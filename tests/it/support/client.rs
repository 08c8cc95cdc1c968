//! A minimal DNS client on hickory-proto (an implementation independent of ours).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// A decoded reply with its raw size, sections as sorted zone-file lines.
#[derive(Debug)]
pub struct Reply {
    /// The decoded message.
    pub message: Message,
    /// Size on the wire.
    pub size: usize,
}

impl Reply {
    fn new(bytes: &[u8]) -> Reply {
        Reply { message: Message::from_vec(bytes).expect("a decodable reply"), size: bytes.len() }
    }

    /// Response code as a number (low 4 bits plus the EDNS extension).
    pub fn rcode(&self) -> u16 {
        let high = self.message.edns.as_ref().map_or(0, |e| e.rcode_high() as u16);
        (high << 4) | (u16::from(self.message.metadata.response_code) & 0xF)
    }

    /// Answer records as text.
    pub fn answers(&self) -> Vec<String> {
        self.message.answers.iter().map(|r| r.to_string()).collect()
    }

    /// Additional records as text (without OPT).
    pub fn additionals(&self) -> Vec<String> {
        self.message.additionals.iter().map(|r| r.to_string()).collect()
    }

    /// Authority records as text.
    pub fn authorities(&self) -> Vec<String> {
        self.message.authorities.iter().map(|r| r.to_string()).collect()
    }

    /// TC bit.
    pub fn truncated(&self) -> bool {
        self.message.metadata.truncation
    }

    /// RA bit.
    pub fn recursion_available(&self) -> bool {
        self.message.metadata.recursion_available
    }

    /// AA bit.
    pub fn authoritative(&self) -> bool {
        self.message.metadata.authoritative
    }

    /// TTLs of the answer records.
    pub fn answer_ttls(&self) -> Vec<u32> {
        self.message.answers.iter().map(|r| r.ttl).collect()
    }
}

/// Builds a query packet.
pub fn packet(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.id = fastrand::u16(..);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

/// One query over UDP.
pub fn query_udp(addr: SocketAddr, name: &str, qtype: RecordType, edns: Option<u16>) -> Reply {
    query_udp_from("127.0.0.1", addr, name, qtype, edns)
}

/// One query over UDP from a socket bound to `source` (e.g. 127.0.0.2, for ACL tests).
pub fn query_udp_from(source: &str, addr: SocketAddr, name: &str, qtype: RecordType, edns: Option<u16>) -> Reply {
    let query = packet(name, qtype, edns);
    let bytes = query_udp_raw_from(source, addr, &query).expect("a UDP reply");
    let reply = Reply::new(&bytes);
    assert_eq!(&bytes[..2], &query[..2], "reply carries the query's ID");
    reply
}

/// Sends raw bytes over UDP; the raw reply, or None after a timeout.
pub fn query_udp_raw(addr: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    query_udp_raw_from("127.0.0.1", addr, packet)
}

/// Sends raw bytes over UDP from `source`; the raw reply, or None after a timeout.
pub fn query_udp_raw_from(source: &str, addr: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((source, 0)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.send_to(packet, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// One query over a new TCP connection.
pub fn query_tcp(addr: SocketAddr, name: &str, qtype: RecordType) -> Reply {
    query_tcp_from("127.0.0.1", addr, name, qtype)
}

/// One query over a new TCP connection from `source`.
pub fn query_tcp_from(source: &str, addr: SocketAddr, name: &str, qtype: RecordType) -> Reply {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = (source.parse::<std::net::IpAddr>().unwrap(), 0).into();
    socket.bind(&local.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let bytes = packet(name, qtype, None);
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).unwrap();
    let reply = read_framed(&mut stream).expect("a TCP reply");
    assert_eq!(&reply[..2], &bytes[..2], "reply carries the query's ID");
    Reply::new(&reply)
}

/// Reads one length-prefixed message.
pub fn read_framed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).ok()?;
    Some(buf)
}
