//! Writes one response into a reused buffer: header, the question echoed byte for byte (S1.5),
//! answer/authority/additional records, and the OPT record (S8), within a size budget.
//!
//! The budget is fixed up front (S7.1, S7.4) and the OPT record's size is reserved before any
//! record is written (S7.7), so a response never exceeds what the client can take. Owner names
//! are compression pointers into the question; SRV targets are never compressed (RFC 2782).

use crate::dns::message::{ClientSubnet, Request};
use crate::wire::{self, CLASS_IN, HEADER_LEN, PTR_TO_QNAME, flag, rtype};

/// Size of an OPT record without options.
const OPT_LEN: usize = 11;
/// Fixed part of a record after its owner: type, class, TTL, RDLENGTH.
const RR_FIXED: usize = 10;

/// A response under construction.
pub struct Writer<'o> {
    out: &'o mut Vec<u8>,
    limit: usize,
    reserved: usize,
    counts: [u16; 3],
    /// Offset of the response domain in the message, when the question contains it.
    domain_at: Option<usize>,
}

/// Message sections, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Answer.
    Answer = 0,
    /// Authority.
    Authority = 1,
    /// Additional.
    Additional = 2,
}

/// Where an owner name comes from.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// The question name.
    Question,
    /// A name already in the message, at this offset.
    At(usize),
    /// Relative labels (two parts, concatenated) followed by the response domain.
    Relative(&'a [u8], &'a [u8]),
}

impl<'o> Writer<'o> {
    /// Starts a response to `req`: header with `rcode`, the question copied, and room kept for
    /// the OPT record if the query had one. `limit` is the largest message allowed.
    pub fn start(out: &'o mut Vec<u8>, req: &Request<'_>, limit: usize, domain_offset: Option<usize>) -> Writer<'o> {
        out.clear();
        let flags = flag::QR | (req.flags & (flag::RD | flag::CD));
        wire::push_u16(req.id, out);
        wire::push_u16(flags, out);
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(req.question);
        let reserved = req.edns.map_or(0, |e| OPT_LEN + e.client_subnet.map_or(0, subnet_option_len));
        Writer { out, limit, reserved, counts: [0; 3], domain_at: domain_offset.map(|d| HEADER_LEN + d) }
    }

    /// A header-only reply (FORMERR/NOTIMP for packets we could not fully parse), echoing
    /// `question_len` bytes of the question when it was readable.
    pub fn reject(out: &mut Vec<u8>, packet: &[u8], code: u16, question_len: usize) {
        out.clear();
        out.extend_from_slice(&packet[..4]);
        out[2] = (out[2] & 0x79) | 0x80; // QR, keep opcode and RD
        out[3] = (out[3] & 0x10) | code as u8; // keep CD
        out.extend_from_slice(&[0, (question_len > 0) as u8, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&packet[HEADER_LEN..HEADER_LEN + question_len]);
    }

    /// Bytes still available for records.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.out.len() + self.reserved)
    }

    /// Offset in the message of the next byte written.
    pub fn position(&self) -> usize {
        self.out.len()
    }

    /// Number of records written to a section.
    pub fn count(&self, section: Section) -> u16 {
        self.counts[section as usize]
    }

    /// Wire length of an owner name as written.
    pub fn owner_len(&self, owner: Owner<'_>) -> usize {
        match owner {
            Owner::Question | Owner::At(_) => 2,
            Owner::Relative(first, second) => first.len() + second.len() + self.domain_len(),
        }
    }

    /// Length of the response domain as written (a pointer, or the root byte at worst).
    fn domain_len(&self) -> usize {
        if self.domain_at.is_some() { 2 } else { 1 }
    }

    /// Full size of a record with this owner and RDATA length.
    pub fn record_len(&self, owner: Owner<'_>, rdata_len: usize) -> usize {
        self.owner_len(owner) + RR_FIXED + rdata_len
    }

    /// Appends a record whose RDATA is given whole. Returns the RDATA's offset. The caller
    /// checks [`Writer::room`] first where truncation matters.
    pub fn record(&mut self, section: Section, owner: Owner<'_>, rtype: u16, ttl: u32, rdata: &[u8]) -> usize {
        put_head(self.out, owner, self.domain_at, rtype, ttl, rdata.len());
        let at = self.out.len();
        self.out.extend_from_slice(rdata);
        self.counts[section as usize] += 1;
        at
    }

    /// Appends a record owned by the question in another class than IN (CHAOS TXT).
    pub fn record_in_class(&mut self, section: Section, class: u16, rtype: u16, ttl: u32, rdata: &[u8]) {
        let class_at = self.out.len() + PTR_TO_QNAME.len() + 2;
        self.record(section, Owner::Question, rtype, ttl, rdata);
        wire::write_u16(self.out, class_at, class);
    }

    /// Appends a record whose RDATA is the concatenation of `parts` (uncompressed names).
    pub fn record_parts(&mut self, section: Section, owner: Owner<'_>, rtype: u16, ttl: u32, parts: &[&[u8]]) {
        put_head(self.out, owner, self.domain_at, rtype, ttl, parts.iter().map(|p| p.len()).sum());
        for part in parts {
            self.out.extend_from_slice(part);
        }
        self.counts[section as usize] += 1;
    }

    /// Appends an NS record owned by the question (the apex) whose target is `labels` + the
    /// response domain. Returns the target's offset, for its glue.
    pub fn ns(&mut self, section: Section, labels: &[u8], ttl: u32) -> usize {
        put_head(self.out, Owner::Question, self.domain_at, rtype::NS, ttl, labels.len() + self.domain_len());
        let at = self.name(labels);
        self.counts[section as usize] += 1;
        at
    }

    /// Writes a record into `buf` instead of the message (the additional section is built aside
    /// while answers are still being added). Pointers are message offsets, so `buf` must be
    /// appended right after the records already in the message.
    pub fn record_into(&self, buf: &mut Vec<u8>, owner: Owner<'_>, rtype: u16, ttl: u32, rdata: &[u8]) {
        put_head(buf, owner, self.domain_at, rtype, ttl, rdata.len());
        buf.extend_from_slice(rdata);
    }

    /// Size of an SRV record owned by the question whose target is `parts` concatenated,
    /// followed by the response domain if `relative`.
    pub fn srv_len(&self, parts: &[&[u8]], relative: bool, question: &[u8]) -> usize {
        let domain = if relative { self.domain_bytes(question).len() } else { 0 };
        2 + RR_FIXED + 6 + parts.iter().map(|p| p.len()).sum::<usize>() + domain
    }

    /// Appends an SRV record: `fixed` is priority/weight/port, then the target (the `parts`
    /// concatenated, then the response domain spelled out if `relative`: never compressed).
    /// Returns the target's offset.
    pub fn srv(
        &mut self,
        owner: Owner<'_>,
        ttl: u32,
        fixed: &[u8; 6],
        parts: &[&[u8]],
        relative: bool,
        question: &[u8],
    ) -> usize {
        let domain = if relative { self.domain_bytes(question) } else { &[][..] };
        let rdlen = 6 + parts.iter().map(|p| p.len()).sum::<usize>() + domain.len();
        put_head(self.out, owner, self.domain_at, rtype::SRV, ttl, rdlen);
        self.out.extend_from_slice(fixed);
        let at = self.out.len();
        for part in parts {
            self.out.extend_from_slice(part);
        }
        self.out.extend_from_slice(domain);
        self.counts[Section::Answer as usize] += 1;
        at
    }

    /// The uncompressed response domain as it appears in the question (original case), root
    /// byte included; just the root if the question is outside the domain.
    pub fn domain_bytes<'q>(&self, question: &'q [u8]) -> &'q [u8] {
        match self.domain_at {
            Some(at) => &question[at - HEADER_LEN..question.len() - 4],
            None => &[0],
        }
    }

    /// Writes a name: relative labels then a pointer to the response domain (or the root).
    pub fn name(&mut self, labels: &[u8]) -> usize {
        let at = self.out.len();
        self.out.extend_from_slice(labels);
        match self.domain_at {
            Some(domain) => wire::push_pointer(domain, self.out),
            None => self.out.push(0),
        }
        at
    }

    /// Appends raw bytes already laid out as records (the additional section built aside).
    pub fn append_records(&mut self, section: Section, bytes: &[u8], count: u16) {
        self.out.extend_from_slice(bytes);
        self.counts[section as usize] += count;
    }

    /// The SOA of the response domain (S5.1), with TTL = MINIMUM = the negative TTL (S6.4).
    pub fn soa(&mut self, section: Section, soa: &Soa) {
        let owner_at = self.out.len();
        match self.domain_at {
            Some(at) => wire::push_pointer(at, self.out),
            None => self.out.extend_from_slice(soa.domain_wire),
        }
        let rdlen_at = self.out.len() + 8;
        self.out.extend_from_slice(&fixed_fields(rtype::SOA, soa.negative_ttl, 0));
        let rdata_at = self.out.len();
        let domain_ptr = self.domain_at.unwrap_or(owner_at);
        self.out.extend_from_slice(b"\x02ns");
        wire::push_pointer(domain_ptr, self.out);
        self.out.extend_from_slice(b"\x0ahostmaster");
        wire::push_pointer(domain_ptr, self.out);
        for value in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.negative_ttl] {
            wire::push_u32(value, self.out);
        }
        let rdlen = (self.out.len() - rdata_at) as u16;
        wire::write_u16(self.out, rdlen_at, rdlen);
        self.counts[section as usize] += 1;
    }

    /// Finishes the message: rcode, AA/TC/RA flags, section counts, and the OPT record.
    pub fn finish(self, req: &Request<'_>, code: u16, flags: u16, max_udp_size: u16) {
        let out = self.out;
        out[3] |= (code & 0x0F) as u8;
        let flags = flags & (flag::AA | flag::TC | flag::RA);
        out[2] |= (flags >> 8) as u8;
        out[3] |= flags as u8;
        for (i, count) in self.counts.iter().enumerate() {
            wire::write_u16(out, 6 + 2 * i, *count);
        }
        if let Some(edns) = req.edns {
            out.push(0);
            wire::push_u16(rtype::OPT, out);
            wire::push_u16(max_udp_size, out);
            // RFC 3225 §3: the DO bit is copied from the query.
            let dnssec_ok = if edns.dnssec_ok { 0x80 } else { 0 };
            out.extend_from_slice(&[(code >> 4) as u8, 0, dnssec_ok, 0]);
            match edns.client_subnet {
                Some(subnet) => push_subnet_option(&subnet, out),
                None => wire::push_u16(0, out),
            }
            let additional = wire::read_u16(out, 10) + 1;
            wire::write_u16(out, 10, additional);
        }
    }
}

/// Type, class IN, TTL and RDLENGTH as one array, so a record head is one copy, not four.
fn fixed_fields(rtype: u16, ttl: u32, rdlen: usize) -> [u8; RR_FIXED] {
    let [t0, t1] = rtype.to_be_bytes();
    let [c0, c1] = CLASS_IN.to_be_bytes();
    let [a, b, c, d] = ttl.to_be_bytes();
    let [l0, l1] = (rdlen as u16).to_be_bytes();
    [t0, t1, c0, c1, a, b, c, d, l0, l1]
}

/// Writes a record's owner and fixed fields. Pointer owners (nearly all of them) go out as one
/// 12-byte copy; a relative owner is its labels then a pointer to the response domain
/// (`domain_at`), or the root outside the domain.
fn put_head(buf: &mut Vec<u8>, owner: Owner<'_>, domain_at: Option<usize>, rtype: u16, ttl: u32, rdlen: usize) {
    let pointer = match owner {
        Owner::Question => PTR_TO_QNAME,
        Owner::At(at) => {
            debug_assert!(at < 0x4000);
            (0xC000 | at as u16).to_be_bytes()
        }
        Owner::Relative(first, second) => {
            buf.extend_from_slice(first);
            buf.extend_from_slice(second);
            match domain_at {
                Some(domain) => wire::push_pointer(domain, buf),
                None => buf.push(0),
            }
            buf.extend_from_slice(&fixed_fields(rtype, ttl, rdlen));
            return;
        }
    };
    let mut head = [0u8; 2 + RR_FIXED];
    head[..2].copy_from_slice(&pointer);
    head[2..].copy_from_slice(&fixed_fields(rtype, ttl, rdlen));
    buf.extend_from_slice(&head);
}

/// What an SOA record needs besides the domain.
#[derive(Debug, Clone, Copy)]
pub struct Soa<'a> {
    /// The primary domain in wire form, used when the question is outside it (reverse names).
    pub domain_wire: &'a [u8],
    /// Serial (catalog generation).
    pub serial: u32,
    /// REFRESH.
    pub refresh: u32,
    /// RETRY.
    pub retry: u32,
    /// EXPIRE.
    pub expire: u32,
    /// TTL and MINIMUM.
    pub negative_ttl: u32,
}

fn subnet_option_len(subnet: ClientSubnet) -> usize {
    4 + 4 + subnet.address_len as usize
}

/// Echoes a client-subnet option with SCOPE PREFIX 0: the answer is the same everywhere (S8.3).
fn push_subnet_option(subnet: &ClientSubnet, out: &mut Vec<u8>) {
    let len = 4 + subnet.address_len as usize;
    wire::push_u16((4 + len) as u16, out);
    wire::push_u16(8, out);
    wire::push_u16(len as u16, out);
    wire::push_u16(subnet.family, out);
    out.push(subnet.source_prefix);
    out.push(0);
    out.extend_from_slice(&subnet.address[..subnet.address_len as usize]);
}
