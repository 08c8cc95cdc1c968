//! Answers for names that are not services: the apex (SOA/NS, S5), nodes (S3.6), `.addr.`
//! names (S3.7) and reverse lookups (S3.8).

use std::net::IpAddr;

use super::writer::{Owner, Section, Writer};
use super::{Context, Reply, Scratch, negative, shuffle_step, soa};
use crate::catalog::records::{Addr, Family};
use crate::dns::OwnNameServer;
use crate::wire::{rcode, rtype};

/// Most NS records in an answer (S5.4).
const MAX_NAME_SERVERS: usize = 3;

/// The apex: SOA (with NS in authority, S5.2), NS (S5.3), ANY (both); other types NODATA (S15).
pub(super) fn apex(ctx: &Context<'_>, w: &mut Writer<'_>, scratch: &mut Scratch) -> Reply {
    match ctx.req.qtype {
        rtype::SOA => {
            w.soa(Section::Answer, &soa(ctx));
            name_servers(ctx, w, scratch, Section::Authority);
        }
        rtype::NS => {
            if name_servers(ctx, w, scratch, Section::Answer) == 0 {
                return negative(ctx, w, rcode::NOERROR);
            }
        }
        rtype::ANY => {
            w.soa(Section::Answer, &soa(ctx));
            name_servers(ctx, w, scratch, Section::Answer);
        }
        _ => return negative(ctx, w, rcode::NOERROR),
    }
    Reply::authoritative(rcode::NOERROR)
}

/// Up to three randomly chosen servers as NS records, their addresses as glue; records that
/// do not fit are left out (only authority/additional data, so no TC). Returns how many.
fn name_servers(ctx: &Context<'_>, w: &mut Writer<'_>, scratch: &mut Scratch, section: Section) -> usize {
    let servers = ctx.snapshot.name_servers();
    let ttl = ctx.snapshot.options().node_ttl;
    if let (true, Some(own)) = (servers.is_empty(), &ctx.settings.own_name_server) {
        return own_name_server(w, own, section, ttl);
    }
    scratch.order.clear();
    scratch.order.extend(0..servers.len() as u32);
    scratch.glue.clear();
    let mut written = 0;
    let mut glue_count = 0;
    for i in 0..servers.len().min(MAX_NAME_SERVERS) {
        let server = &servers[shuffle_step(&mut scratch.order, i, &mut scratch.rng) as usize];
        let glue_len = server.glue.as_ref().map_or(0, |g| w.record_len(Owner::At(0), g.rdata().len()));
        if w.record_len(Owner::Question, server.labels.len() + 2) + glue_len + scratch.glue.len() > w.room() {
            break;
        }
        let target_at = w.ns(section, &server.labels, ttl);
        if let Some(glue) = &server.glue {
            w.record_into(&mut scratch.glue, Owner::At(target_at), glue.rtype(), ttl, glue.rdata());
            glue_count += 1;
        }
        written += 1;
    }
    w.append_records(Section::Additional, &scratch.glue, glue_count);
    written
}

/// `ns_name` as the only NS, its address as glue (S5.4, without a `consul` service).
fn own_name_server(w: &mut Writer<'_>, own: &OwnNameServer, section: Section, ttl: u32) -> usize {
    let glue = own.address();
    let needed = w.record_len(Owner::Question, own.labels().len() + 2) + w.record_len(Owner::At(0), glue.rdata().len());
    if needed > w.room() {
        return 0;
    }
    let target_at = w.ns(section, own.labels(), ttl);
    w.record(Section::Additional, Owner::At(target_at), glue.rtype(), ttl, glue.rdata());
    1
}

/// `ns_name` itself: its address for A, AAAA (of its family) and ANY, NODATA otherwise.
pub(super) fn own_name(ctx: &Context<'_>, w: &mut Writer<'_>, own: &OwnNameServer) -> Reply {
    let address = own.address();
    let wanted = match ctx.req.qtype {
        rtype::ANY => true,
        qtype => qtype == address.rtype(),
    };
    if !wanted {
        return negative(ctx, w, rcode::NOERROR);
    }
    w.record(Section::Answer, Owner::Question, address.rtype(), ctx.snapshot.options().node_ttl, address.rdata());
    Reply::authoritative(rcode::NOERROR)
}

/// `<node>.node[.<dc>]` (S3.6): its address for A/AAAA/ANY (CNAME for a hostname), its meta as
/// TXT for TXT/ANY, and the meta in the additional section of A/AAAA answers.
pub(super) fn node(ctx: &Context<'_>, w: &mut Writer<'_>, name: &[u8], dc: Option<&[u8]>) -> Reply {
    let node = ctx.snapshot.datacenter(dc).and_then(|dc| dc.nodes.get(name));
    let Some(node) = node else { return negative(ctx, w, rcode::NXDOMAIN) };
    let ttl = ctx.snapshot.options().node_ttl;
    let (family, txt_section) = match ctx.req.qtype {
        rtype::A => (Some(Family::V4), Section::Additional),
        rtype::AAAA => (Some(Family::V6), Section::Additional),
        rtype::ANY => (Some(Family::Any), Section::Answer),
        rtype::TXT => (None, Section::Answer),
        _ => return negative(ctx, w, rcode::NOERROR),
    };
    if let Some(record) = family.and_then(|f| node.addresses.choose(f).filter(|a| a.fits(f))) {
        w.record(Section::Answer, Owner::Question, record.rtype(), ttl, record.rdata());
    }
    let wants_txt = txt_section == Section::Answer || ctx.snapshot.options().node_meta_txt;
    if wants_txt && (w.count(Section::Answer) > 0 || txt_section == Section::Answer) {
        for txt in node.txt.iter() {
            if w.record_len(Owner::Question, txt.len()) > w.room() {
                break; // meta is extra; an answer without all of it is still whole
            }
            w.record(txt_section, Owner::Question, rtype::TXT, ttl, txt);
        }
    }
    if w.count(Section::Answer) == 0 {
        return negative(ctx, w, rcode::NOERROR);
    }
    Reply::authoritative(rcode::NOERROR)
}

/// `<hex>.addr` (S3.7): the encoded address for a matching type, NODATA otherwise (S15).
pub(super) fn addr(ctx: &Context<'_>, w: &mut Writer<'_>, ip: IpAddr) -> Reply {
    let record = match (ip, ctx.req.qtype) {
        (IpAddr::V4(v4), rtype::A | rtype::ANY) => Addr::V4(v4.octets()),
        (IpAddr::V6(v6), rtype::AAAA | rtype::ANY) => Addr::V6(v6.octets()),
        _ => return negative(ctx, w, rcode::NOERROR),
    };
    let ttl = ctx.snapshot.options().node_ttl;
    w.record(Section::Answer, Owner::Question, record.rtype(), ttl, record.rdata());
    Reply::authoritative(rcode::NOERROR)
}

/// Reverse lookups (S3.8): a node's or service instance's address gives a PTR to its name in
/// the primary domain; unknown addresses are NXDOMAIN with the domain's SOA. The PTR's TTL is
/// the node TTL rather than Consul's fixed 0 (hashicorp/consul#10577).
pub(super) fn reverse(ctx: &Context<'_>, w: &mut Writer<'_>, ip: Option<IpAddr>) -> Reply {
    let Some(pointer) = ip.and_then(|ip| ctx.snapshot.reverse(&ip)) else {
        return negative(ctx, w, rcode::NXDOMAIN);
    };
    if !matches!(ctx.req.qtype, rtype::PTR | rtype::ANY) {
        return negative(ctx, w, rcode::NOERROR);
    }
    let domain = &ctx.settings.domain_wire;
    w.record_parts(
        Section::Answer,
        Owner::Question,
        rtype::PTR,
        ctx.snapshot.options().node_ttl,
        &[pointer.labels(), domain],
    );
    Reply::authoritative(rcode::NOERROR)
}
