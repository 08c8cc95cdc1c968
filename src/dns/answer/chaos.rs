//! CHAOS-class questions about the server itself (`version.bind`, `id.server`, …, S8.4).
//!
//! They are answered here and never relayed: a recursor's answer would name the recursor's
//! software, and its identity is not ours to hand out. `chaos_version`, when set, answers
//! `version.bind` and `version.server`; everything else in class CHAOS is REFUSED.

use super::Reply;
use super::writer::{Section, Writer};
use crate::dns::Settings;
use crate::dns::message::Request;
use crate::wire::{CLASS_CH, rcode, rtype};

/// The names that ask for the software version.
const VERSION_NAMES: [&[u8]; 2] = [b"version.bind", b"version.server"];

/// Answers a CHAOS-class question.
pub(super) fn answer(req: &Request<'_>, settings: &Settings, w: &mut Writer<'_>) -> Reply {
    let refused = Reply { rcode: rcode::REFUSED, authoritative: false, truncated: false };
    let Some(version) = settings.chaos_version.as_deref() else { return refused };
    if !VERSION_NAMES.contains(&req.name().text()) {
        return refused;
    }
    if matches!(req.qtype, rtype::TXT | rtype::ANY) {
        // One character-string; the configuration holds it to 255 bytes.
        let text = version.as_bytes();
        let mut rdata = Vec::with_capacity(text.len() + 1);
        rdata.push(text.len() as u8);
        rdata.extend_from_slice(text);
        if w.room() >= w.record_len(super::writer::Owner::Question, rdata.len()) {
            w.record_in_class(Section::Answer, CLASS_CH, rtype::TXT, 0, &rdata);
        }
    }
    Reply::authoritative(rcode::NOERROR)
}
