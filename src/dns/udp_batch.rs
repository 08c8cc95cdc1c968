//! Batched UDP I/O on Linux: one `recvmmsg` takes up to [`BATCH`] queries, one `sendmmsg`
//! sends their replies. Measured on a 2-vCPU machine under `bench/run.sh`'s conditions, a responder
//! that does no work reached 1.04× Knot with one `recvfrom` + one `sendto` per query and
//! 1.19× with batching: the kernel is most of the cost per query, so fewer system calls are
//! the main lever.
//!
//! All unsafe code of the server is here: the two system calls and the raw `iovec` /
//! `mmsghdr` arrays they read. Buffers are owned by [`Batch`], heap-allocated once and never
//! moved or resized while a call runs; every pointer is rebuilt right before each call.

#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Queries taken per `recvmmsg`.
pub const BATCH: usize = 32;
/// Receive buffer per query. DNS queries are small; a datagram longer than this is cut by the
/// kernel (`MSG_TRUNC`) and dropped as malformed.
pub const RECV_LEN: usize = 4096;

/// Reusable buffers for one worker.
pub struct Batch {
    packets: Box<[[u8; RECV_LEN]]>,
    peers: Box<[libc::sockaddr_storage]>,
    lens: [usize; BATCH],
    peer_lens: [libc::socklen_t; BATCH],
    truncated: [bool; BATCH],
    replies: Vec<Vec<u8>>,
    ready: [bool; BATCH],
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    /// Allocates the buffers (about 130 KiB).
    pub fn new() -> Batch {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Batch {
            packets: vec![[0u8; RECV_LEN]; BATCH].into_boxed_slice(),
            peers: vec![zero_peer; BATCH].into_boxed_slice(),
            lens: [0; BATCH],
            peer_lens: [0; BATCH],
            truncated: [false; BATCH],
            replies: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            ready: [false; BATCH],
            iovecs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH].into_boxed_slice(),
            headers: vec![zero_header; BATCH].into_boxed_slice(),
        }
    }

    /// Blocks until at least one datagram arrives (or the socket's read timeout passes), then
    /// takes what is queued, up to [`BATCH`]. Returns how many.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec { iov_base: self.packets[i].as_mut_ptr().cast(), iov_len: RECV_LEN };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
            self.ready[i] = false;
        }
        // SAFETY: `headers` holds BATCH initialised mmsghdr whose name/iov pointers point into
        // buffers owned by `self`, valid and unaliased for the duration of the call.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let received = received as usize;
        for i in 0..received {
            self.lens[i] = self.headers[i].msg_len as usize;
            self.peer_lens[i] = self.headers[i].msg_hdr.msg_namelen;
            self.truncated[i] = self.headers[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        Ok(received)
    }

    /// The datagram in slot `i` (`None` if it was longer than [`RECV_LEN`]) and the slot's
    /// reply buffer.
    pub fn slot(&mut self, i: usize) -> (Option<&[u8]>, &mut Vec<u8>) {
        let packet = (!self.truncated[i]).then(|| &self.packets[i][..self.lens[i].min(RECV_LEN)]);
        (packet, &mut self.replies[i])
    }

    /// Slot `i`'s datagram (as [`Batch::slot`]) and, when it was sent, its reply.
    pub fn view(&self, i: usize) -> (Option<&[u8]>, Option<&[u8]>) {
        let packet = (!self.truncated[i]).then(|| &self.packets[i][..self.lens[i].min(RECV_LEN)]);
        (packet, self.ready[i].then(|| &self.replies[i][..]))
    }

    /// The address slot `i` came from (IPv4 or IPv6; `None` for anything else).
    pub fn peer(&self, i: usize) -> Option<SocketAddr> {
        let storage = &self.peers[i];
        match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in here (family AF_INET); sockaddr_storage
                // is large and aligned enough for it.
                let v4 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6 (family AF_INET6).
                let v6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
                let port = u16::from_be(v6.sin6_port);
                Some(SocketAddr::V6(SocketAddrV6::new(ip, port, v6.sin6_flowinfo, v6.sin6_scope_id)))
            }
            _ => None,
        }
    }

    /// Marks slot `i`'s reply to be sent (or not) by [`Batch::send`].
    pub fn set_ready(&mut self, i: usize, ready: bool) {
        self.ready[i] = ready;
    }

    /// Sends every ready reply to the peer it answers, in as few `sendmmsg` calls as the
    /// kernel allows. A reply the kernel refuses (peer unreachable, say) is skipped. Returns
    /// how many were sent.
    pub fn send(&mut self, socket: &UdpSocket, received: usize) -> usize {
        let mut count = 0;
        for i in 0..received {
            if !self.ready[i] {
                continue;
            }
            self.iovecs[count] =
                libc::iovec { iov_base: self.replies[i].as_mut_ptr().cast(), iov_len: self.replies[i].len() };
            let header = &mut self.headers[count].msg_hdr;
            header.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = self.peer_lens[i];
            header.msg_iov = &mut self.iovecs[count];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            count += 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers[sent..count] are initialised and point into `self.replies` and
            // `self.peers`, which are not touched until the call returns.
            let n = unsafe {
                libc::sendmmsg(socket.as_raw_fd(), self.headers[sent..].as_mut_ptr(), (count - sent) as u32, 0)
            };
            if n > 0 {
                sent += n as usize;
                continue;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                tracing::debug!(%error, "UDP send failed; reply dropped.");
                sent += 1; // the first message failed: skip it, send the rest
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn receives_a_batch_and_answers_each_peer() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let clients: Vec<UdpSocket> = (0..5).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for (i, c) in clients.iter().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            c.send_to(&[i as u8; 10], server.local_addr().unwrap()).unwrap();
        }
        let mut batch = Batch::new();
        let mut got = 0;
        while got < 5 {
            let n = batch.receive(&server).unwrap();
            for i in 0..n {
                assert_eq!(batch.peer(i).unwrap().ip(), std::net::IpAddr::from([127, 0, 0, 1]));
                let (packet, reply) = batch.slot(i);
                let first = packet.unwrap()[0];
                reply.clear();
                reply.extend_from_slice(&[first, 0xAA]);
                let packet = [first];
                batch.set_ready(i, i % 2 == 0 || packet[0] != 3); // client 3 may be skipped
            }
            batch.send(&server, n);
            got += n;
        }
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 16];
            match c.recv(&mut buf) {
                Ok(len) => assert_eq!(&buf[..len], &[i as u8, 0xAA]),
                Err(_) => assert_eq!(i, 3, "only a skipped slot goes unanswered"),
            }
        }
    }

    #[test]
    fn oversized_datagram_is_flagged() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(&vec![7u8; RECV_LEN + 100], server.local_addr().unwrap()).unwrap();
        let mut batch = Batch::new();
        assert_eq!(batch.receive(&server).unwrap(), 1);
        assert!(batch.slot(0).0.is_none());
    }
}
