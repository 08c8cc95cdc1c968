//! Parsing one request: header screening (S1.3), the question, and the EDNS(0) OPT record
//! (RFC 6891), with no allocation.
//!
//! The question name is kept twice: as received (echoed byte for byte, S1.5) and as lower-case
//! dotted text with label spans, which is what name classification reads.

use crate::wire::{self, HEADER_LEN, MAX_NAME_LEN, flag, rcode, rtype};

/// Most labels a 255-byte name can hold.
const MAX_LABELS: usize = 128;
/// EDNS option code of client subnet (RFC 7871).
const OPTION_CLIENT_SUBNET: u16 = 8;

/// A parsed, screened query. Borrowed from the packet it came from.
#[derive(Debug, Clone)]
pub struct Request<'p> {
    /// Query ID.
    pub id: u16,
    /// The header's second word as received (opcode, RD, CD …).
    pub flags: u16,
    /// The question section exactly as received: name, type, class.
    pub question: &'p [u8],
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The OPT record, if the query had one.
    pub edns: Option<Edns>,
    name: &'p LowerName,
}

/// What the client said in its OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Advertised UDP payload size.
    pub udp_size: u16,
    /// EDNS version (only 0 exists).
    pub version: u8,
    /// The DO bit (RFC 3225): the client wants DNSSEC records. Part of a relayed answer's
    /// cache key, since upstreams answer differently with it.
    pub dnssec_ok: bool,
    /// The client-subnet option, echoed back with scope 0 (S8.3).
    pub client_subnet: Option<ClientSubnet>,
}

/// An RFC 7871 client-subnet option, as much of it as an answer echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// Address family (1 = IPv4, 2 = IPv6).
    pub family: u16,
    /// Source prefix length.
    pub source_prefix: u8,
    /// Address bytes (only the first `ceil(source_prefix / 8)` are meaningful).
    pub address: [u8; 16],
    /// How many address bytes the option carried.
    pub address_len: u8,
}

/// The question name lower-cased as dotted text, with label offsets (`user.service.consul`).
///
/// A buffer the caller owns and [`Request::parse`] fills, so the request itself stays small:
/// nothing of this size is moved per query.
#[derive(Clone)]
pub struct LowerName {
    text: [u8; MAX_NAME_LEN],
    len: u8,
    starts: [u8; MAX_LABELS],
    labels: u8,
    dotted_label: bool,
}

impl Default for LowerName {
    fn default() -> Self {
        LowerName::new()
    }
}

impl std::fmt::Debug for LowerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.text()))
    }
}

impl LowerName {
    /// An empty buffer.
    pub const fn new() -> LowerName {
        LowerName { text: [0; MAX_NAME_LEN], len: 0, starts: [0; MAX_LABELS], labels: 0, dotted_label: false }
    }

    /// The dotted text without a trailing dot; empty for the root.
    pub fn text(&self) -> &[u8] {
        &self.text[..self.len as usize]
    }

    /// Number of labels (0 for the root).
    pub fn label_count(&self) -> usize {
        self.labels as usize
    }

    fn end(&self, i: usize) -> usize {
        if i + 1 < self.labels as usize { self.starts[i + 1] as usize - 1 } else { self.len as usize }
    }

    /// Label `i` (0 = leftmost).
    pub fn label(&self, i: usize) -> &[u8] {
        &self.text[self.starts[i] as usize..self.end(i)]
    }

    /// Offset of label `i` in the dotted text, which is also the offset of its length byte in
    /// the wire-format name.
    pub fn label_offset(&self, i: usize) -> usize {
        self.starts[i] as usize
    }

    /// The dotted text of labels `from..to` (e.g. a dotted tag or node name).
    pub fn join(&self, from: usize, to: usize) -> &[u8] {
        if from >= to {
            return &[];
        }
        &self.text[self.starts[from] as usize..self.end(to - 1)]
    }

    /// Does some label contain a literal dot (which no name in a catalog can)?
    pub fn has_dotted_label(&self) -> bool {
        self.dotted_label
    }
}

/// Why a packet gets no normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not worth a reply: shorter than a header, or a response (QR=1).
    Drop,
    /// Reply with this rcode; `question` says whether the question could be parsed and is echoed.
    Reply {
        /// Response code.
        rcode: u16,
        /// Length of the question to echo (0: none).
        question_len: usize,
    },
}

impl<'p> Request<'p> {
    /// Screens and parses a query packet (S1.3): QR=1 or a runt is dropped, an opcode other than
    /// QUERY is NOTIMP (NOTIFY included, S15), QDCOUNT ≠ 1 or more than one answer/authority
    /// record or two additional records is FORMERR, as is anything malformed.
    pub fn parse(packet: &'p [u8], name: &'p mut LowerName) -> Result<Request<'p>, Rejection> {
        if packet.len() < HEADER_LEN {
            return Err(Rejection::Drop);
        }
        let flags = wire::read_u16(packet, 2);
        if flags & flag::QR != 0 {
            return Err(Rejection::Drop);
        }
        let counts = [4, 6, 8, 10].map(|at| wire::read_u16(packet, at));
        let formerr = Rejection::Reply { rcode: rcode::FORMERR, question_len: 0 };
        if counts[0] != 1 {
            return Err(formerr);
        }
        let name_end = parse_question_name(packet, name).ok_or(formerr)?;
        let question_end = name_end + 4;
        if packet.len() < question_end {
            return Err(formerr);
        }
        let question_len = question_end - HEADER_LEN;
        if flags & flag::OPCODE_MASK != 0 {
            return Err(Rejection::Reply { rcode: rcode::NOTIMP, question_len });
        }
        if counts[1] > 1 || counts[2] > 1 || counts[3] > 2 {
            return Err(Rejection::Reply { rcode: rcode::FORMERR, question_len });
        }
        let edns = parse_records(packet, question_end, counts[1] + counts[2], counts[3])
            .ok_or(Rejection::Reply { rcode: rcode::FORMERR, question_len })?;
        Ok(Request {
            id: wire::read_u16(packet, 0),
            flags,
            question: &packet[HEADER_LEN..question_end],
            qtype: wire::read_u16(packet, name_end),
            qclass: wire::read_u16(packet, name_end + 2),
            edns,
            name,
        })
    }

    /// The question name, lower-cased, as dotted text with label spans.
    pub fn name(&self) -> &'p LowerName {
        self.name
    }

    /// Wire length of the question name (root byte included).
    pub fn qname_len(&self) -> usize {
        self.question.len() - 4
    }
}

/// Reads the question name at offset 12 into `name`: no compression (nothing precedes it to
/// point at), at most 255 bytes. Returns where it ends. The dotted text is the wire name
/// after its first length byte, lower-cased, with the other length bytes turned into dots
/// (labels are at most 63 bytes, so lower-casing leaves length bytes alone).
fn parse_question_name(packet: &[u8], name: &mut LowerName) -> Option<usize> {
    let mut at = HEADER_LEN;
    let mut labels = 0;
    loop {
        let len = *packet.get(at)? as usize;
        if len == 0 {
            break;
        }
        if len > wire::MAX_LABEL_LEN || at - HEADER_LEN + 1 + len + 1 > MAX_NAME_LEN {
            return None; // compression pointer, reserved label type, or too long
        }
        name.starts[labels] = (at - HEADER_LEN) as u8;
        labels += 1;
        at += 1 + len;
    }
    let text_len = (at - HEADER_LEN).saturating_sub(1);
    let text = &mut name.text[..text_len];
    if text_len > 0 {
        text.copy_from_slice(&packet[HEADER_LEN + 1..at]);
    }
    text.make_ascii_lowercase();
    let dots_inside = text.iter().filter(|&&b| b == b'.').count();
    for &start in &name.starts[1..labels.max(1)] {
        text[start as usize - 1] = b'.';
    }
    name.len = text_len as u8;
    name.labels = labels as u8;
    name.dotted_label = dots_inside > 0;
    Some(at + 1)
}

/// Walks the answer and authority records (skipped) and the additional ones, returning the OPT
/// record's contents. `None` means malformed: a truncated record, an OPT outside the
/// additional section, or a second OPT (RFC 6891 §6.1.1).
fn parse_records(packet: &[u8], mut at: usize, skipped: u16, additional: u16) -> Option<Option<Edns>> {
    for _ in 0..skipped {
        let (next, rtype, _) = skip_record(packet, at)?;
        if rtype == rtype::OPT {
            return None;
        }
        at = next;
    }
    let mut edns = None;
    for _ in 0..additional {
        let (next, rtype, fixed) = skip_record(packet, at)?;
        if rtype == rtype::OPT {
            if edns.is_some() || packet[at] != 0 {
                return None; // two OPTs, or an OPT not owned by the root (RFC 6891 §6.1.1)
            }
            edns = Some(parse_opt(packet, fixed, next)?);
        }
        at = next;
    }
    Some(edns)
}

/// The end of the question section of a message with one question (a query, or a reply to
/// one).
pub(crate) fn question_end(message: &[u8]) -> Option<usize> {
    let end = skip_name(message, HEADER_LEN)? + 4;
    (end <= message.len()).then_some(end)
}

/// Skips one resource record at `at`; returns (end, type, offset of its type field).
pub(crate) fn skip_record(packet: &[u8], at: usize) -> Option<(usize, u16, usize)> {
    let fixed = skip_name(packet, at)?;
    let header = packet.get(fixed..fixed + 10)?;
    let rdlen = u16::from_be_bytes([header[8], header[9]]) as usize;
    let end = fixed + 10 + rdlen;
    (end <= packet.len()).then_some((end, u16::from_be_bytes([header[0], header[1]]), fixed))
}

/// Skips a possibly compressed name; returns the offset after it.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            1..=63 => at += 1 + len as usize,
            0xC0..=0xFF => return packet.get(at + 1).map(|_| at + 2),
            _ => return None,
        }
    }
}

/// Reads an OPT record whose TYPE field is at `fixed` and which ends at `end`.
fn parse_opt(packet: &[u8], fixed: usize, end: usize) -> Option<Edns> {
    let udp_size = wire::read_u16(packet, fixed + 2);
    let version = packet[fixed + 5];
    let dnssec_ok = packet[fixed + 6] & 0x80 != 0;
    let mut edns = Edns { udp_size, version, dnssec_ok, client_subnet: None };
    let mut at = fixed + 10;
    while at < end {
        let option = packet.get(at..at + 4)?;
        let code = u16::from_be_bytes([option[0], option[1]]);
        let len = u16::from_be_bytes([option[2], option[3]]) as usize;
        let data = packet.get(at + 4..at + 4 + len)?;
        if at + 4 + len > end {
            return None;
        }
        if code == OPTION_CLIENT_SUBNET {
            edns.client_subnet = Some(parse_client_subnet(data)?);
        }
        at += 4 + len;
    }
    Some(edns)
}

/// RFC 7871 §6: family, source prefix, scope prefix, then just enough address bytes.
fn parse_client_subnet(data: &[u8]) -> Option<ClientSubnet> {
    let head = data.get(..4)?;
    let family = u16::from_be_bytes([head[0], head[1]]);
    let source_prefix = head[2];
    let address = &data[4..];
    let max_prefix = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source_prefix > max_prefix || address.len() != (source_prefix as usize).div_ceil(8) {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[..address.len()].copy_from_slice(address);
    Some(ClientSubnet { family, source_prefix, address: bytes, address_len: address.len() as u8 })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query packet: id 0x1234, RD, one question, optional OPT (udp size, version, options).
    pub(crate) fn query(name: &str, qtype: u16, opt: Option<(u16, u8, &[u8])>) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, opt.is_some() as u8];
        wire::push_name(name, &mut p).unwrap();
        wire::push_u16(qtype, &mut p);
        wire::push_u16(1, &mut p);
        if let Some((size, version, options)) = opt {
            p.push(0);
            wire::push_u16(rtype::OPT, &mut p);
            wire::push_u16(size, &mut p);
            p.extend_from_slice(&[0, version, 0, 0]);
            wire::push_u16(options.len() as u16, &mut p);
            p.extend_from_slice(options);
        }
        p
    }

    /// Parses with a fresh name buffer (tests only: the buffer lives as long as the test).
    pub(crate) fn parse(packet: &[u8]) -> Result<Request<'_>, Rejection> {
        Request::parse(packet, Box::leak(Box::new(LowerName::new())))
    }

    #[test]
    fn dotted_labels_are_noticed() {
        let mut packet = query("a.b.consul", rtype::A, None);
        packet[13] = b'.'; // the label "a" becomes "."
        let mut name = LowerName::new();
        let req = Request::parse(&packet, &mut name).unwrap();
        assert!(req.name().has_dotted_label());
        let plain = query("a.b.consul", rtype::A, None);
        assert!(!parse(&plain).unwrap().name().has_dotted_label());
    }

    #[test]
    fn parses_question_lowercase_with_spans() {
        let packet = query("UsEr.SeRvIcE.CoNsUl.", rtype::SRV, None);
        let mut name = LowerName::new();
        let req = Request::parse(&packet, &mut name).unwrap();
        assert_eq!(req.id, 0x1234);
        assert_eq!(req.qtype, rtype::SRV);
        assert_eq!(req.qclass, 1);
        assert_eq!(req.name().text(), b"user.service.consul");
        assert_eq!(req.name().label_count(), 3);
        assert_eq!(req.name().label(1), b"service");
        assert_eq!(req.name().label_offset(2), 13);
        assert_eq!(req.name().join(0, 2), b"user.service");
        assert_eq!(&req.question[1..5], b"UsEr", "question kept as received");
        assert_eq!(req.qname_len(), 21);
        assert!(req.edns.is_none());
    }

    #[test]
    fn root_name_has_no_labels() {
        let packet = query(".", rtype::NS, None);
        let mut name = LowerName::new();
        let req = Request::parse(&packet, &mut name).unwrap();
        assert_eq!(req.name().label_count(), 0);
        assert_eq!(req.name().text(), b"");
    }

    #[test]
    fn s1_3_screening() {
        let ok = query("a.consul", rtype::A, None);
        let formerr = |question_len| Err(Rejection::Reply { rcode: rcode::FORMERR, question_len });

        let mut response = ok.clone();
        response[2] |= 0x80;
        assert_eq!(parse(&response).unwrap_err(), Rejection::Drop);
        assert_eq!(parse(&ok[..11]).unwrap_err(), Rejection::Drop);

        let mut notify = ok.clone();
        notify[2] |= 4 << 3;
        let qlen = ok.len() - HEADER_LEN;
        assert_eq!(parse(&notify).unwrap_err(), Rejection::Reply { rcode: rcode::NOTIMP, question_len: qlen });

        let mut two_questions = ok.clone();
        two_questions[5] = 2;
        assert_eq!(parse(&two_questions).map(|_| ()), formerr(0).map(|_: ()| ()));

        let mut no_question = ok.clone();
        no_question[5] = 0;
        assert!(parse(&no_question).is_err());

        let mut many_additional = ok.clone();
        many_additional[11] = 3;
        assert_eq!(parse(&many_additional).map(|_| ()), formerr(qlen).map(|_: ()| ()));

        let mut truncated_question = ok.clone();
        truncated_question.truncate(ok.len() - 3);
        assert_eq!(parse(&truncated_question).map(|_| ()), formerr(0).map(|_: ()| ()));
    }

    #[test]
    fn compressed_question_name_is_formerr() {
        let mut packet = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1];
        assert!(parse(&packet).is_err());
        packet[12] = 0x40; // reserved label type
        assert!(parse(&packet).is_err());
    }

    #[test]
    fn parses_edns_and_client_subnet() {
        let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2];
        let packet = query("a.consul", rtype::A, Some((4096, 0, &ecs)));
        let edns = parse(&packet).unwrap().edns.unwrap();
        assert_eq!(edns.udp_size, 4096);
        assert_eq!(edns.version, 0);
        let subnet = edns.client_subnet.unwrap();
        assert_eq!((subnet.family, subnet.source_prefix, subnet.address_len), (1, 24, 3));
        assert_eq!(&subnet.address[..3], &[192, 0, 2]);
    }

    #[test]
    fn bad_opt_is_formerr_with_question() {
        let bad_ecs = [0, 8, 0, 4, 0, 1, 24, 0]; // prefix 24 but no address bytes
        let packet = query("a.consul", rtype::A, Some((4096, 0, &bad_ecs)));
        assert!(matches!(
            parse(&packet),
            Err(Rejection::Reply { rcode: rcode::FORMERR, question_len }) if question_len > 0
        ));
        let mut two_opts = query("a.consul", rtype::A, Some((1232, 0, &[])));
        let opt = two_opts[two_opts.len() - 11..].to_vec();
        two_opts.extend_from_slice(&opt);
        two_opts[11] = 2;
        assert!(parse(&two_opts).is_err());
    }

    #[test]
    fn opt_outside_the_additional_section_is_formerr() {
        let with_opt = query("a.consul", rtype::A, Some((1232, 0, &[])));
        let opt = with_opt[with_opt.len() - 11..].to_vec();
        for count_at in [7, 9] {
            // the same OPT record, counted as an answer, then as an authority record
            let mut packet = query("a.consul", rtype::A, None);
            packet.extend_from_slice(&opt);
            packet[count_at] = 1;
            assert!(
                matches!(parse(&packet), Err(Rejection::Reply { rcode: rcode::FORMERR, question_len }) if question_len > 0),
                "OPT counted at byte {count_at}"
            );
        }
    }

    #[test]
    fn never_panics_on_prefixes_of_a_valid_packet() {
        let packet = query("user.service.consul", rtype::SRV, Some((1232, 0, &[0, 8, 0, 5, 0, 1, 8, 0, 10])));
        for end in 0..packet.len() {
            let _ = parse(&packet[..end]);
        }
    }
}
