//! Service answers (S3.2, S3.4, S3.5): pick the eligible instances (tag filter, S2.6), shuffle
//! them (S10.1), and write A/AAAA/ANY or SRV records plus the SRV targets' additional records,
//! stopping at the size budget or the answer cap (TC set), or at `a_record_limit` (no TC).

use super::writer::{Owner, Section, Writer};
use super::{Context, Reply, Scratch, negative, shuffle_step};
use crate::catalog::model::MeshKind;
use crate::catalog::records::{Addr, Family, NodeRecords, PreparedInstance, Target, addr_labels, flags};
use crate::catalog::snapshot::{Datacenter, ServiceRecords, TagFilter};
use crate::dns::name::ServiceKind;
use crate::wire::{rcode, rtype};

/// Compression pointers have 14 bits of offset.
const MAX_POINTER_OFFSET: usize = 0x4000;

/// Tag-filtered candidate lists longer than this are de-duplicated with a hash set.
const LINEAR_DEDUP_MAX: usize = 32;

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
    let mesh = match kind {
        ServiceKind::Service => None,
        ServiceKind::Connect => Some(MeshKind::Connect),
        ServiceKind::Ingress => Some(MeshKind::Ingress),
    };
    let dc = ctx.snapshot.datacenter(dc);
    let Some((dc, records)) = dc.and_then(|dc| Some((dc, dc.lookup(mesh, name)?))) else {
        return negative(ctx, w, rcode::NXDOMAIN);
    };
    let filter = tag.map(|tag| records.tag_filter(tag));
    if let Some(filter) = &filter
        && !records.instances.iter().enumerate().any(|(i, inst)| filter.admits(i, inst))
    {
        return negative(ctx, w, rcode::NXDOMAIN); // S3.2: no instance has the tag
    }
    let family = match ctx.req.qtype {
        rtype::SRV => return srv(ctx, w, scratch, records, dc, filter.as_ref()),
        rtype::A => Family::V4,
        rtype::AAAA => Family::V6,
        rtype::ANY => Family::Any,
        _ => return negative(ctx, w, rcode::NOERROR), // S3.4, S15: TXT and the rest are NODATA
    };
    addresses(ctx, w, scratch, records, family, filter.as_ref())
}

/// Fills `scratch.order` with the instances that give a record: `wanted` ones, tag-filtered,
/// without duplicates (flagged at build time for the whole service; compared by `key` when a
/// tag filter may have dropped the first of two equal records).
fn candidates<'r, K: PartialEq + std::hash::Hash + Eq>(
    scratch: &mut Scratch,
    records: &'r ServiceRecords,
    filter: Option<&TagFilter<'_>>,
    uniform_bit: u8,
    wanted: impl Fn(&PreparedInstance) -> bool,
    dup_flag: u16,
    key: impl Fn(&'r PreparedInstance) -> K,
) {
    scratch.order.clear();
    let instances = &records.instances;
    let count = instances.len() as u32;
    match filter {
        None if records.uniform & uniform_bit != 0 => scratch.order.extend(0..count),
        None => scratch.order.extend(
            (0..count).filter(|&i| wanted(&instances[i as usize]) && instances[i as usize].flags & dup_flag == 0),
        ),
        Some(filter) => {
            scratch.order.extend(
                (0..count)
                    .filter(|&i| wanted(&instances[i as usize]) && filter.admits(i as usize, &instances[i as usize])),
            );
            dedup(&mut scratch.order, |i| key(&instances[i as usize]));
        }
    }
}

/// Keeps the first index of each key, in order.
fn dedup<K: PartialEq + std::hash::Hash + Eq>(order: &mut Vec<u32>, key: impl Fn(u32) -> K) {
    if order.len() <= LINEAR_DEDUP_MAX {
        let mut kept = 0;
        for i in 0..order.len() {
            let k = key(order[i]);
            if !order[..kept].iter().any(|&j| key(j) == k) {
                order[kept] = order[i];
                kept += 1;
            }
        }
        order.truncate(kept);
    } else {
        let mut seen: std::collections::HashSet<K, foldhash::fast::RandomState> = Default::default();
        order.retain(|&i| seen.insert(key(i)));
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
    filter: Option<&TagFilter<'_>>,
) -> Reply {
    let dup_flag = flags::ADDR_DUP << family as u16;
    let key = |inst: &PreparedInstance| inst.address(family).cloned();
    candidates(scratch, records, filter, 2 << family as u8, |i| i.has_ip(family), dup_flag, key);
    if scratch.order.is_empty() {
        candidates(scratch, records, filter, 0, |i| i.has_host(family), dup_flag, key);
        if scratch.order.is_empty() {
            return negative(ctx, w, rcode::NOERROR);
        }
        let pick = scratch.rng.usize(..scratch.order.len());
        scratch.order.swap(0, pick);
        scratch.order.truncate(1); // never several CNAMEs
    }
    let limit = match ctx.settings.a_record_limit {
        0 => usize::MAX,
        n => n,
    };
    let mut truncated = false;
    for i in 0..scratch.order.len() {
        if i == limit {
            break; // S7.6: a_record_limit never sets TC
        }
        if i == ctx.answer_cap {
            truncated = true;
            break;
        }
        let pick = shuffle_step(&mut scratch.order, i, &mut scratch.rng);
        let Some(addr) = records.instances[pick as usize].address(family) else { continue };
        if i > 0 && w.record_len(Owner::Question, addr.rdata().len()) > w.room() {
            truncated = true;
            break;
        }
        w.record(Section::Answer, Owner::Question, addr.rtype(), records.ttl, addr.rdata());
    }
    Reply { rcode: rcode::NOERROR, authoritative: true, truncated }
}

/// One additional record an SRV answer carries: a target's address (by node, or for an
/// `.addr.` target by the address alone) or a node's meta TXT set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Glue {
    Address(usize, [u8; 16]),
    Txt(usize),
}

impl Glue {
    fn address(node: Option<&NodeRecords>, ip: &Addr) -> Glue {
        let mut bytes = [0u8; 16];
        let rdata = ip.rdata();
        bytes[..rdata.len().min(16)].copy_from_slice(&rdata[..rdata.len().min(16)]);
        Glue::Address(node.map_or(0, |n| n as *const NodeRecords as usize), bytes)
    }
}

/// The additional records already in a response (RFC 2181 §5.5: an RRset holds no duplicate
/// records): a short list for the usual few answers, a set for large TCP ones.
#[derive(Debug, Default)]
pub(super) struct GlueSeen {
    list: Vec<Glue>,
    set: std::collections::HashSet<Glue, foldhash::fast::RandomState>,
}

impl GlueSeen {
    fn clear(&mut self) {
        self.list.clear();
        if !self.set.is_empty() {
            self.set.clear();
        }
    }

    fn contains(&self, glue: &Glue) -> bool {
        if self.list.len() < LINEAR_DEDUP_MAX { self.list.contains(glue) } else { self.set.contains(glue) }
    }

    fn insert(&mut self, glue: Glue) {
        if self.list.len() < LINEAR_DEDUP_MAX {
            self.list.push(glue);
            if self.list.len() == LINEAR_DEDUP_MAX {
                self.set.extend(self.list.iter().copied());
            }
        } else {
            self.set.insert(glue);
        }
    }
}

/// SRV (S3.5): one record per shuffled instance, each followed (in the additional section) by
/// its target's address and its node's meta, each distinct record once; an instance is only
/// added with all of its additional records, so every SRV in a response carries its glue.
fn srv(
    ctx: &Context<'_>,
    w: &mut Writer<'_>,
    scratch: &mut Scratch,
    records: &ServiceRecords,
    dc: &Datacenter,
    filter: Option<&TagFilter<'_>>,
) -> Reply {
    candidates(scratch, records, filter, 1, |_| true, flags::SRV_DUP, PreparedInstance::srv_key);
    scratch.glue.clear();
    scratch.glue_seen.clear();
    let question = ctx.req.question;
    let meta_txt = ctx.snapshot.options().node_meta_txt;
    let mut glue_count = 0u16;
    let mut truncated = false;
    for i in 0..scratch.order.len() {
        if i == ctx.answer_cap {
            truncated = true;
            break;
        }
        let inst = &records.instances[shuffle_step(&mut scratch.order, i, &mut scratch.rng) as usize];
        let Some(target) = inst.target() else { continue };
        let hex;
        let (parts, glue_ip): ([&[u8]; 2], Option<&Addr>) = match target {
            Target::Node(node, ip) => ([&node.labels, &[]], Some(ip)),
            Target::Addr(ip) => {
                hex = addr_labels(ip);
                ([&hex.0[..hex.1], &dc.label], Some(ip))
            }
            Target::Host(name) => ([name, &[]], None),
        };
        let relative = glue_ip.is_some();
        // Glue is owned by the target: a pointer to it, or (pointers reach only the first
        // 16 KiB, RFC 1035 §4.1.4) the target spelled out again in large TCP answers.
        let target_at = w.position() + w.record_len(Owner::Question, 6);
        let target_owner =
            if target_at < MAX_POINTER_OFFSET { Owner::At(target_at) } else { Owner::Relative(parts[0], parts[1]) };
        let address_glue = glue_ip.map(|ip| (ip, Glue::address(target_node(target), ip)));
        let address_glue = address_glue.filter(|(_, key)| !scratch.glue_seen.contains(key));
        let txt = inst.node.as_deref().filter(|n| meta_txt && relative && !n.txt.is_empty());
        let txt = txt.filter(|n| !scratch.glue_seen.contains(&Glue::Txt(*n as *const NodeRecords as usize)));
        let txt_owner = match target {
            Target::Node(..) => target_owner,
            _ => Owner::Relative(txt.map_or(&[][..], |n| &n.labels), &[]),
        };
        let srv_len = w.srv_len(&parts, relative, question);
        let glue_len = address_glue.map_or(0, |(ip, _)| w.record_len(target_owner, ip.rdata().len()))
            + txt.map_or(0, |n| n.txt.iter().map(|t| w.record_len(txt_owner, t.len())).sum());
        let fits = srv_len + glue_len + scratch.glue.len() <= w.room();
        if !fits && i > 0 {
            truncated = true;
            break;
        }
        let written_at = w.srv(Owner::Question, records.ttl, &inst.fixed, &parts, relative, question);
        debug_assert_eq!(written_at, target_at);
        if !fits {
            continue; // the one answer always kept (S7.3), without glue that does not fit
        }
        if let Some((ip, key)) = address_glue {
            w.record_into(&mut scratch.glue, target_owner, ip.rtype(), records.ttl, ip.rdata());
            scratch.glue_seen.insert(key);
            glue_count += 1;
        }
        if let Some(node) = txt {
            for rdata in &node.txt {
                w.record_into(&mut scratch.glue, txt_owner, rtype::TXT, records.ttl, rdata);
                glue_count += 1;
            }
            scratch.glue_seen.insert(Glue::Txt(node as *const NodeRecords as usize));
        }
    }
    w.append_records(Section::Additional, &scratch.glue, glue_count);
    Reply { rcode: rcode::NOERROR, authoritative: true, truncated }
}

/// The node an SRV target names, if it names one (its glue is that node's address record).
fn target_node<'a>(target: Target<'a>) -> Option<&'a NodeRecords> {
    match target {
        Target::Node(node, _) => Some(node),
        Target::Addr(_) | Target::Host(_) => None,
    }
}
