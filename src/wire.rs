//! DNS wire-format primitives (RFC 1035 §3–4, RFC 6891): record type and rcode numbers, header
//! bits, and name encoding.
//!
//! Shared by the snapshot builder (which prepares record bytes once) and the answer path (which
//! copies them). Pure, no I/O, imports nothing from this crate.

use thiserror::Error;

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire, root label included (RFC 1035 §3.1).
pub const MAX_NAME_LEN: usize = 255;
/// Longest single label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// A compression pointer to the question name, which always starts right after the header.
pub const PTR_TO_QNAME: [u8; 2] = [0xC0, HEADER_LEN as u8];
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// Class CHAOS (RFC 1035), where servers are asked who they are (`version.bind`).
pub const CLASS_CH: u16 = 3;
/// Largest DNS message (the TCP length prefix is 16 bits).
pub const MAX_MESSAGE_LEN: usize = 65_535;
/// The classic UDP payload limit for clients without EDNS (RFC 1035 §4.2.1).
pub const CLASSIC_UDP_LEN: usize = 512;

/// Record types this server reads or writes.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Domain name pointer.
    pub const PTR: u16 = 12;
    /// Text strings.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Service locator (RFC 2782).
    pub const SRV: u16 = 33;
    /// EDNS(0) pseudo-record (RFC 6891).
    pub const OPT: u16 = 41;
    /// Incremental zone transfer.
    pub const IXFR: u16 = 251;
    /// Full zone transfer.
    pub const AXFR: u16 = 252;
    /// Any type (QTYPE only).
    pub const ANY: u16 = 255;
}

/// Response codes (the low four bits live in the header; BADVERS needs the OPT record).
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// The query could not be parsed.
    pub const FORMERR: u16 = 1;
    /// The server failed to answer.
    pub const SERVFAIL: u16 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented (opcode, zone transfer).
    pub const NOTIMP: u16 = 4;
    /// Refused by policy.
    pub const REFUSED: u16 = 5;
    /// Unsupported EDNS version (RFC 6891 §6.1.3); extended rcode 16.
    pub const BADVERS: u16 = 16;
}

/// Header flag bits in the second 16-bit word.
pub mod flag {
    /// Query (0) or response (1).
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Checking disabled (RFC 4035).
    pub const CD: u16 = 0x0010;
    /// Opcode field mask.
    pub const OPCODE_MASK: u16 = 0x7800;
}

/// Why a name cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// `a..b` or a leading dot.
    #[error("empty label in {0:?}")]
    EmptyLabel(String),
    /// A label longer than 63 bytes.
    #[error("label longer than 63 bytes in {0:?}")]
    LabelTooLong(String),
    /// The whole name is longer than 255 bytes on the wire.
    #[error("name longer than 255 bytes: {0:?}")]
    NameTooLong(String),
}

/// Appends the labels of a dotted name (trailing dot optional), *without* the root byte, so a
/// caller can follow it with a domain or a compression pointer. `""` and `"."` append nothing.
pub fn push_labels(name: &str, out: &mut Vec<u8>) -> Result<(), NameError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Ok(());
    }
    let start = out.len();
    for label in trimmed.split('.') {
        if label.is_empty() {
            out.truncate(start);
            return Err(NameError::EmptyLabel(name.to_owned()));
        }
        if label.len() > MAX_LABEL_LEN {
            out.truncate(start);
            return Err(NameError::LabelTooLong(name.to_owned()));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    if out.len() - start + 1 > MAX_NAME_LEN {
        out.truncate(start);
        return Err(NameError::NameTooLong(name.to_owned()));
    }
    Ok(())
}

/// Appends a complete uncompressed name (labels and the root byte).
pub fn push_name(name: &str, out: &mut Vec<u8>) -> Result<(), NameError> {
    push_labels(name, out)?;
    out.push(0);
    Ok(())
}

/// Appends a compression pointer to `offset` (must be below 0x4000, always true for offsets
/// inside the question, which starts at 12 and is at most 255 bytes long).
pub fn push_pointer(offset: usize, out: &mut Vec<u8>) {
    debug_assert!(offset < 0x4000);
    out.extend_from_slice(&(0xC000 | offset as u16).to_be_bytes());
}

/// Appends a big-endian u16.
pub fn push_u16(value: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a big-endian u32.
pub fn push_u32(value: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Reads a big-endian u16 at `at`; the caller guarantees the bounds.
pub fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Reads a big-endian u32 at `at`; the caller guarantees the bounds.
pub fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Overwrites a big-endian u16 at `at`.
pub fn write_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Appends one TXT character-string per 255-byte chunk of `text` (RFC 1035 §3.3.14); an empty
/// text gives one empty string, as a TXT RDATA must hold at least one.
pub fn push_character_strings(text: &[u8], out: &mut Vec<u8>) {
    if text.is_empty() {
        out.push(0);
        return;
    }
    for chunk in text.chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_labels_encodes_without_root() {
        let cases: &[(&str, &[u8])] = &[("a.bc", b"\x01a\x02bc"), ("a.bc.", b"\x01a\x02bc"), ("", b""), (".", b"")];
        for (name, want) in cases {
            let mut out = Vec::new();
            push_labels(name, &mut out).unwrap();
            assert_eq!(&out, want, "{name}");
        }
    }

    #[test]
    fn push_labels_rejects_bad_names_and_leaves_buffer_untouched() {
        let long_label = "x".repeat(64);
        let long_name = ["abcdefghij"; 26].join(".");
        for bad in ["a..b", ".a", long_label.as_str(), long_name.as_str()] {
            let mut out = vec![7];
            assert!(push_labels(bad, &mut out).is_err(), "{bad}");
            assert_eq!(out, [7], "{bad}");
        }
    }

    #[test]
    fn character_strings_split_at_255() {
        let mut out = Vec::new();
        push_character_strings(&[b'a'; 300], &mut out);
        assert_eq!(out[0], 255);
        assert_eq!(out[256], 45);
        assert_eq!(out.len(), 302);
        let mut empty = Vec::new();
        push_character_strings(b"", &mut empty);
        assert_eq!(empty, [0]);
    }
}
