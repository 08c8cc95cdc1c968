//! Service answers (S3.2, S3.4, S3.5): pick the eligible instances (tag filter, S2.6), shuffle
//! them (S10.1), and write A/AAAA/ANY or SRV records plus the SRV targets' additional records,
//! stopping at the size budget or the answer cap (TC set), or at `a_record_limit` (no TC).

use super::writer::{Owner, Section, Writer};
use super::{Context, Reply, Scratch, negative, shuffle_step};
use crate::catalog::records::{Family, GlueOwner, Target};
use crate::catalog::snapshot::{NO_GROUP, ServiceRecords, family_index};
use crate::dns::name::ServiceKind;
use crate::wire::{rcode, rtype};

/// Compression pointers have 14 bits of offset.
const MAX_POINTER_OFFSET: usize = 0x4000;

#[allow(clippy::too_many_arguments)]
pub(super) fn answer(
    ctx: &Context<'_>,
    w: &mut Writer<'_>,
    scratch: &mut Scratch,
    kind: ServiceKind,
    name: &[u8],
    tag: Option<&[u8]>,
    dc: Option<&[u8]>,
) -> Reply {
    let records = match (kind, ctx.snapshot.datacenter(dc)) {
        // Mesh (.connect/.ingress) endpoints exist only where a backend reports them; the
        // catalog model carries none yet, so those names do not exist here.
        (ServiceKind::Service, Some(dc)) => dc.services.get(name),
        _ => None,
    };
    let Some(records) = records else { return negative(ctx, w, rcode::NXDOMAIN) };
    if let Some(tag) = tag {
        scratch.spare.clear();
        scratch.spare.extend(
            (0..records.instances.len() as u32)
                .filter(|&i| records.instances[i as usize].tags.iter().any(|t| **t == *tag)),
        );
        if scratch.spare.is_empty() {
            return negative(ctx, w, rcode::NXDOMAIN); // S3.2: no instance has the tag
        }
    }
    let family = match ctx.req.qtype {
        rtype::SRV => return srv(ctx, w, scratch, records, tag.is_some()),
        rtype::A => Family::V4,
        rtype::AAAA => Family::V6,
        rtype::ANY => Family::Any,
        _ => return negative(ctx, w, rcode::NOERROR), // S3.4, S15: TXT and the rest are NODATA
    };
    addresses(ctx, w, scratch, records, family, tag.is_some())
}

/// Fills `scratch.order` with the instances to shuffle: the prepared list, or (with a tag)
/// the tagged instances in `scratch.spare` de-duplicated by group `column` and kept by `keep`.
fn candidates(
    scratch: &mut Scratch,
    records: &ServiceRecords,
    prepared: &[u32],
    tagged: bool,
    column: usize,
    keep: impl Fn(u32) -> bool,
) {
    scratch.order.clear();
    if !tagged {
        scratch.order.extend_from_slice(prepared);
        return;
    }
    let stamp = scratch.new_stamp(records.group_counts[column] as usize);
    for &i in &scratch.spare {
        let group = records.groups[i as usize][column];
        if group != NO_GROUP && keep(i) && scratch.stamps[group as usize] != stamp {
            scratch.stamps[group as usize] = stamp;
            scratch.order.push(i);
        }
    }
}

/// A / AAAA / ANY (S3.4): IP records of the shuffled instances; CNAMEs only when no instance
/// has an IP of the family, and then just one.
fn addresses(
    ctx: &Context<'_>,
    w: &mut Writer<'_>,
    scratch: &mut Scratch,
    records: &ServiceRecords,
    family: Family,
    tagged: bool,
) -> Reply {
    let f = family_index(family);
    let is_ip = |i: u32| records.instances[i as usize].addresses.get(family).is_some_and(|r| r.is_ip());
    candidates(scratch, records, &records.ips[f], tagged, f + 1, is_ip);
    if scratch.order.is_empty() {
        candidates(scratch, records, &records.cnames[f], tagged, f + 1, |i| !is_ip(i));
        if scratch.order.is_empty() {
            return negative(ctx, w, rcode::NOERROR);
        }
        let pick = scratch.rng.usize(..scratch.order.len());
        scratch.order.swap(0, pick);
        scratch.order.truncate(1);
    }
    let limit = match ctx.settings.a_record_limit {
        0 => usize::MAX,
        n => n,
    };
    let mut truncated = false;
    let n = scratch.order.len();
    for i in 0..n {
        if i == limit {
            break; // S7.6: a_record_limit never sets TC
        }
        if i == ctx.answer_cap {
            truncated = true;
            break;
        }
        let pick = shuffle_step(&mut scratch.order, i, &mut scratch.rng);
        let Some(record) = records.instances[pick as usize].addresses.get(family) else { continue };
        if i > 0 && w.record_len(Owner::Question, record.rdata().len()) > w.room() {
            truncated = true;
            break;
        }
        w.record(Section::Answer, Owner::Question, record.rtype(), records.ttl, record.rdata());
        if !record.is_ip() {
            break; // never several CNAMEs
        }
    }
    Reply { rcode: rcode::NOERROR, authoritative: true, truncated }
}

/// SRV (S3.5): one record per shuffled instance, each followed (in the additional section) by
/// its target's address and node meta; an instance is only added with all its additional
/// records, so every SRV in a response carries its glue.
fn srv(ctx: &Context<'_>, w: &mut Writer<'_>, scratch: &mut Scratch, records: &ServiceRecords, tagged: bool) -> Reply {
    candidates(scratch, records, &records.srv, tagged, 0, |_| true);
    scratch.glue.clear();
    let question = ctx.req.question;
    let domain_len = w.domain_bytes(question).len();
    let mut glue_count = 0u16;
    let mut truncated = false;
    let n = scratch.order.len();
    for i in 0..n {
        if i == ctx.answer_cap {
            truncated = true;
            break;
        }
        let pick = shuffle_step(&mut scratch.order, i, &mut scratch.rng);
        let srv = &records.instances[pick as usize].srv;
        let (target, relative) = match &srv.target {
            Target::Relative(labels) => (&**labels, true),
            Target::Absolute(name) => (&**name, false),
        };
        let srv_len = w.record_len(Owner::Question, 6 + target.len() + if relative { domain_len } else { 0 });
        // Where the target will start: after the SRV's owner pointer, fixed fields and RDATA head.
        let target_at = w.position() + w.record_len(Owner::Question, 6);
        let target_owner = target_owner(target_at, target);
        let glue_len: usize =
            srv.glue.iter().map(|g| w.record_len(glue_owner(&g.owner, target_owner), g.rdata.len())).sum();
        let fits = srv_len + glue_len + scratch.glue.len() <= w.room();
        if !fits && i > 0 {
            truncated = true;
            break;
        }
        let written_at = w.srv(Owner::Question, records.ttl, &srv.fixed, target, relative, question);
        debug_assert_eq!(written_at, target_at);
        if fits {
            for glue in srv.glue.iter() {
                let owner = glue_owner(&glue.owner, target_owner);
                w.record_into(&mut scratch.glue, owner, glue.rtype, records.ttl, &glue.rdata);
                glue_count += 1;
            }
        }
    }
    w.append_records(Section::Additional, &scratch.glue, glue_count);
    Reply { rcode: rcode::NOERROR, authoritative: true, truncated }
}

/// The owner of glue records for a target written at `at`: a compression pointer, which can
/// only reach the first 16 KiB of a message (RFC 1035 §4.1.4), else the target spelled out
/// (large TCP answers). Only relative targets have glue owned by the target (records.rs).
fn target_owner(at: usize, target: &[u8]) -> Owner<'_> {
    if at < MAX_POINTER_OFFSET { Owner::At(at) } else { Owner::Relative(target) }
}

fn glue_owner<'a>(owner: &'a GlueOwner, target: Owner<'a>) -> Owner<'a> {
    match owner {
        GlueOwner::Target => target,
        GlueOwner::Node(labels) => Owner::Relative(labels),
    }
}
