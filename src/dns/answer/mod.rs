//! Building responses: `(request, snapshot, settings, transport) → response bytes`.
//!
//! Pure apart from the random shuffle, whose generator the caller owns (seed it in tests).
//! The policies live here once: which rcode for which situation (S11), AA/RA (S1.5), the size
//! budget (S7.1, S7.4), the answer-count cut (S7.2), TC whenever answer records were dropped
//! (S7.5 as S15 recommends), SOA on every negative answer (S5.6), and which questions go to
//! the recursors (S1.4, S3.8) for which clients ([`Access`], S15) — only questions in class
//! IN with RD set; CHAOS questions (S8.4) and zone transfers (S8.5) are settled here.

mod chaos;
mod names;
mod service;
mod writer;

use crate::catalog::Snapshot;
use crate::dns::Settings;
use crate::dns::acl::Access;
use crate::dns::message::{LowerName, Rejection, Request};
use crate::dns::name::{DomainName, Query, classify};
use crate::wire::{CLASS_CH, CLASS_IN, CLASSIC_UDP_LEN, HEADER_LEN, MAX_MESSAGE_LEN, flag, rcode, rtype};
use writer::{Section, Soa, Writer};

/// The transport a query came over, which sets the size budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the EDNS size up to `max_udp_size`.
    Udp,
    /// TCP: 65,535 bytes.
    Tcp,
}

/// What happened to one query, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Response code (16 for BADVERS).
    pub rcode: u16,
    /// Whether answer records were dropped for size (TC set).
    pub truncated: bool,
    /// The question's type (0 when the packet had no readable question).
    pub qtype: u16,
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `out`.
    Reply(Outcome),
    /// Relay the packet to the recursors ([`crate::dns::forward`]). `out` already holds the
    /// SERVFAIL to send if that cannot happen (the relay queue is full); the outcome describes
    /// that SERVFAIL.
    Forward(Outcome),
    /// Send nothing (S1.3: responses and runts are dropped).
    Ignore,
}

/// Reusable per-worker state: buffers and the shuffle's random generator.
#[derive(Debug)]
pub struct Scratch {
    order: Vec<u32>,
    glue: Vec<u8>,
    glue_seen: service::GlueSeen,
    rng: fastrand::Rng,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::with_rng(fastrand::Rng::new())
    }
}

impl Scratch {
    /// Scratch space with a seeded generator (for reproducible tests).
    pub fn with_seed(seed: u64) -> Scratch {
        Scratch::with_rng(fastrand::Rng::with_seed(seed))
    }

    fn with_rng(rng: fastrand::Rng) -> Scratch {
        Scratch { order: Vec::new(), glue: Vec::new(), glue_seen: service::GlueSeen::default(), rng }
    }
}

/// The verdict of one handler, before the writer finishes the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    rcode: u16,
    authoritative: bool,
    truncated: bool,
}

impl Reply {
    const fn authoritative(rcode: u16) -> Reply {
        Reply { rcode, authoritative: true, truncated: false }
    }
}

/// Everything a handler reads.
struct Context<'a> {
    req: &'a Request<'a>,
    snapshot: &'a Snapshot,
    settings: &'a Settings,
    /// Most answer records allowed (S7.2), `usize::MAX` if only bytes count.
    answer_cap: usize,
}

/// Answers one packet from `client` (whose [`Access`] the caller looked up in
/// `settings.acl`) into `out`, or says to relay it or to ignore it.
pub fn respond(
    packet: &[u8],
    snapshot: &Snapshot,
    settings: &Settings,
    transport: Transport,
    client: Access,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> Action {
    let mut name = LowerName::new();
    match Request::parse(packet, &mut name) {
        Ok(req) => answer(&req, snapshot, settings, transport, client, scratch, out),
        Err(Rejection::Drop) => Action::Ignore,
        Err(Rejection::Reply { rcode, question_len }) => {
            Writer::reject(out, packet, rcode, question_len);
            let qtype =
                if question_len >= 4 { crate::wire::read_u16(packet, HEADER_LEN + question_len - 4) } else { 0 };
            Action::Reply(Outcome { rcode, truncated: false, qtype })
        }
    }
}

/// Answers a parsed request (see [`respond`]).
pub fn answer(
    req: &Request<'_>,
    snapshot: &Snapshot,
    settings: &Settings,
    transport: Transport,
    client: Access,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> Action {
    let primary = &settings.domain;
    let both: [&DomainName; 2];
    let domain_list: &[&DomainName] = match &settings.alt_domain {
        Some(alt) => {
            both = [primary, alt];
            &both
        }
        None => std::slice::from_ref(&primary),
    };
    let classified = classify(req.name(), req.qtype, domain_list);
    let in_domain = !matches!(classified.query, Query::Outside | Query::Reverse(_));
    let limit = budget(req, settings, transport);
    let mut w = Writer::start(out, req, limit, in_domain.then_some(classified.domain_offset));
    let answer_cap = match (transport, limit, settings.udp_answer_limit) {
        (Transport::Udp, CLASSIC_UDP_LEN, n) if n > 0 => n.min(8),
        _ => usize::MAX,
    };
    let ctx = Context { req, snapshot, settings, answer_cap };
    let recursion = client == Access::Recurse && settings.recursion.is_enabled();
    let ra = if recursion { flag::RA } else { 0 };
    let max_udp_size = settings.max_udp_size.max(CLASSIC_UDP_LEN as u16);
    let reply = match req.edns {
        Some(edns) if edns.version > 0 => Reply { rcode: rcode::BADVERS, authoritative: false, truncated: false },
        _ if client == Access::Refused => Reply { rcode: rcode::REFUSED, authoritative: false, truncated: false },
        _ if req.qclass == CLASS_CH => chaos::answer(req, settings, &mut w),
        _ if matches!(req.qtype, rtype::AXFR | rtype::IXFR) => zone_transfer(in_domain),
        _ if recursion && req.flags & flag::RD != 0 && forwarded(&ctx, classified.query) => {
            w.finish(req, rcode::SERVFAIL, ra, max_udp_size);
            return Action::Forward(Outcome { rcode: rcode::SERVFAIL, truncated: false, qtype: req.qtype });
        }
        _ => dispatch(&ctx, classified.query, &mut w, scratch),
    };
    let mut flags = ra;
    if reply.authoritative {
        flags |= flag::AA;
    }
    if reply.truncated {
        flags |= flag::TC;
    }
    w.finish(req, reply.rcode, flags, max_udp_size);
    Action::Reply(Outcome { rcode: reply.rcode, truncated: reply.truncated, qtype: req.qtype })
}

/// S8.5: zone transfers are never relayed; in the domain they are not implemented (one rcode
/// for AXFR and IXFR), elsewhere they are not ours to refuse or serve.
fn zone_transfer(in_domain: bool) -> Reply {
    let rcode = if in_domain { rcode::NOTIMP } else { rcode::REFUSED };
    Reply { rcode, authoritative: false, truncated: false }
}

/// Whether the recursors answer this question (the client asked for recursion and may have
/// it): Internet-class names outside the domain (S1.4), and reverse names of addresses the
/// catalog does not hold (S3.8) once it has synced.
fn forwarded(ctx: &Context<'_>, query: Query<'_>) -> bool {
    match query {
        Query::Outside => matches!(ctx.req.qclass, CLASS_IN | rtype::ANY),
        Query::Reverse(ip) => {
            matches!(ctx.req.qclass, CLASS_IN | rtype::ANY)
                && ctx.snapshot.is_synced()
                && ip.and_then(|ip| ctx.snapshot.reverse(&ip)).is_none()
        }
        _ => false,
    }
}

/// A reply with no records: ID, opcode, RD and CD copied, the question, `rcode`, `flags`
/// (AA/TC/RA), and our OPT record if the query had one. For relayed questions that failed
/// (S9.4) or whose answer does not fit the client's UDP budget.
pub fn empty_reply(req: &Request<'_>, rcode: u16, flags: u16, settings: &Settings, out: &mut Vec<u8>) {
    let w = Writer::start(out, req, MAX_MESSAGE_LEN, None);
    w.finish(req, rcode, flags, settings.max_udp_size.max(CLASSIC_UDP_LEN as u16));
}

/// S7.1/S7.4: TCP takes a full message; UDP 512 bytes, or the client's EDNS size (never below
/// 512) capped at our `max_udp_size`.
pub fn budget(req: &Request<'_>, settings: &Settings, transport: Transport) -> usize {
    match (transport, req.edns) {
        (Transport::Tcp, _) => MAX_MESSAGE_LEN,
        (Transport::Udp, None) => CLASSIC_UDP_LEN,
        (Transport::Udp, Some(edns)) => {
            let ours = settings.max_udp_size.max(CLASSIC_UDP_LEN as u16);
            edns.udp_size.clamp(CLASSIC_UDP_LEN as u16, ours) as usize
        }
    }
}

fn dispatch(ctx: &Context<'_>, query: Query<'_>, w: &mut Writer<'_>, scratch: &mut Scratch) -> Reply {
    if ctx.req.qclass != CLASS_IN && ctx.req.qclass != rtype::ANY {
        return Reply { rcode: rcode::REFUSED, authoritative: false, truncated: false };
    }
    match query {
        Query::Outside => Reply { rcode: rcode::REFUSED, authoritative: false, truncated: false },
        _ if !ctx.snapshot.is_synced() => Reply { rcode: rcode::SERVFAIL, authoritative: false, truncated: false },
        Query::Reverse(ip) => names::reverse(ctx, w, ip),
        Query::Apex => names::apex(ctx, w, scratch),
        Query::NotFound => match &ctx.settings.own_name_server {
            Some(own) if own.is(ctx.req.name().text(), ctx.settings.domains().map(|d| d.text())) => {
                names::own_name(ctx, w, own)
            }
            _ => negative(ctx, w, rcode::NXDOMAIN),
        },
        Query::Service { kind, name, tag, dc } => service::answer(ctx, w, scratch, kind, name, tag, dc),
        Query::Node { name, dc } => names::node(ctx, w, name, dc),
        Query::Addr(ip) => names::addr(ctx, w, ip),
    }
}

/// NXDOMAIN or NODATA: no answer, the SOA in the authority section (S5.6, S11).
fn negative(ctx: &Context<'_>, w: &mut Writer<'_>, code: u16) -> Reply {
    w.soa(Section::Authority, &soa(ctx));
    Reply::authoritative(code)
}

fn soa<'a>(ctx: &Context<'a>) -> Soa<'a> {
    Soa {
        domain_wire: &ctx.settings.domain_wire,
        serial: ctx.snapshot.serial(),
        refresh: ctx.settings.soa.refresh,
        retry: ctx.settings.soa.retry,
        expire: ctx.settings.soa.expire,
        negative_ttl: ctx.settings.negative_ttl,
    }
}

/// Picks the next element of a partial Fisher–Yates shuffle: after the call, `order[i]` is a
/// uniformly chosen element among `order[i..]` (S10.1).
fn shuffle_step(order: &mut [u32], i: usize, rng: &mut fastrand::Rng) -> u32 {
    let j = rng.usize(i..order.len());
    order.swap(i, j);
    order[i]
}

#[cfg(test)]
mod tests;
