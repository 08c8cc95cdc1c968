//! A small cache of relayed answers, so that a burst of identical questions (Kong workers ×
//! requests, K14) costs one upstream query per TTL.
//!
//! State: entries keyed by the lower-cased question plus the header/EDNS bits that change what
//! an upstream answers (RD, CD, DO, whether an OPT was sent), each holding the reply bytes as
//! received, the offsets of its TTL fields, when it was stored and when it expires. An index
//! ordered by expiry finds what to drop. Invariants and limits:
//! - an entry lives for the smallest TTL of its answer records (positive answers), or
//!   `min(SOA TTL, SOA MINIMUM)` for NXDOMAIN/NODATA (RFC 2308 §5), capped at [`MAX_TTL`] and
//!   [`MAX_NEGATIVE_TTL`]; TTL 0, truncated replies, other rcodes and negative answers
//!   without an SOA are not stored;
//! - at most `max_entries` entries and `max_bytes` of reply bytes: inserting first drops
//!   expired entries, then the ones closest to expiry (they are worth the least);
//! - a hit is the stored reply with the asker's ID and question (its letter case) and every
//!   TTL lowered by the whole seconds it spent here, so no client caches past the upstream's
//!   TTL.
//!
//! Time is passed in (`now`), so tests need no clock. Pure: no I/O, no lock (the caller holds
//! one).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::dns::message::{Request, question_end, skip_record};
use crate::wire::{self, HEADER_LEN, flag, rcode, rtype};

/// Longest a positive answer is kept, whatever its TTL: a changed upstream address (a
/// container restarted with a new IP) is seen within this.
pub const MAX_TTL: u32 = 300;
/// Longest a negative answer is kept: Kong caches NXDOMAIN for 30 s on its own, and a name
/// that appears (a database container starting after Kong) should not stay missing longer.
pub const MAX_NEGATIVE_TTL: u32 = 30;
/// Default entry limit.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Default limit on stored reply bytes (large TCP answers count in full).
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

/// The cache key of a query: its question lower-cased, then one byte of flags. `None` for
/// queries whose answer may depend on who asks (EDNS client subnet, RFC 7871).
pub fn key(req: &Request<'_>) -> Option<Vec<u8>> {
    let edns = req.edns.as_ref();
    if edns.is_some_and(|e| e.client_subnet.is_some()) {
        return None;
    }
    let mut key = req.question.to_ascii_lowercase();
    let bits = u8::from(req.flags & flag::RD != 0)
        | u8::from(req.flags & flag::CD != 0) << 1
        | u8::from(edns.is_some()) << 2
        | u8::from(edns.is_some_and(|e| e.dnssec_ok)) << 3;
    key.push(bits);
    Some(key)
}

struct Entry {
    reply: Box<[u8]>,
    ttl_offsets: Box<[u16]>,
    stored: Instant,
    expires: Instant,
    seq: u64,
}

/// The cache. See the module documentation.
pub struct Cache {
    entries: HashMap<Vec<u8>, Entry>,
    by_expiry: BTreeMap<(Instant, u64), Vec<u8>>,
    seq: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("entries", &self.entries.len()).field("bytes", &self.bytes).finish()
    }
}

impl Cache {
    /// An empty cache with these limits.
    pub fn new(max_entries: usize, max_bytes: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            seq: 0,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    /// Number of live and not yet purged entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the cached answer to `req` into `out`; `false` on a miss (an expired entry is
    /// dropped).
    pub fn get(&mut self, key: &[u8], req: &Request<'_>, now: Instant, out: &mut Vec<u8>) -> bool {
        let Some(entry) = self.entries.get(key) else { return false };
        if now >= entry.expires {
            self.remove(key);
            return false;
        }
        let elapsed = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        out.clear();
        out.extend_from_slice(&entry.reply);
        wire::write_u16(out, 0, req.id);
        // Same key, so the same name up to letter case: the asker's spelling has the same length.
        out[HEADER_LEN..HEADER_LEN + req.question.len()].copy_from_slice(req.question);
        for &at in entry.ttl_offsets.iter() {
            let at = at as usize;
            let ttl = wire::read_u32(out, at).saturating_sub(elapsed);
            out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        true
    }

    /// Stores `reply` (a complete upstream answer to the query with this key) if it is
    /// cacheable. Returns whether it was stored.
    pub fn insert(&mut self, key: Vec<u8>, reply: &[u8], now: Instant) -> bool {
        let Some(scan) = scan(reply) else { return false };
        let Some(ttl) = scan.lifetime.filter(|&ttl| ttl > 0) else { return false };
        if reply.len() > self.max_bytes {
            return false;
        }
        self.remove(&key);
        self.purge_expired(now);
        while self.entries.len() >= self.max_entries || self.bytes + reply.len() > self.max_bytes {
            let Some((_, soonest)) = self.by_expiry.pop_first() else { break };
            self.drop_entry(&soonest);
        }
        self.seq += 1;
        let expires = now + Duration::from_secs(u64::from(ttl));
        self.by_expiry.insert((expires, self.seq), key.clone());
        self.bytes += reply.len();
        let entry =
            Entry { reply: reply.into(), ttl_offsets: scan.ttl_offsets.into(), stored: now, expires, seq: self.seq };
        self.entries.insert(key, entry);
        true
    }

    fn purge_expired(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.drop_entry(&key);
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(entry) = self.entries.get(key) {
            self.by_expiry.remove(&(entry.expires, entry.seq));
            self.drop_entry(key);
        }
    }

    /// Drops an entry whose expiry index record is already gone.
    fn drop_entry(&mut self, key: &[u8]) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.reply.len();
        }
    }
}

/// What caching needs to know about a reply.
struct Scan {
    /// Offsets of the TTL fields of every record but OPT.
    ttl_offsets: Vec<u16>,
    /// How long the reply may be kept, if at all.
    lifetime: Option<u32>,
}

/// Walks a reply's records. `None` if it is malformed or truncated (TC).
fn scan(reply: &[u8]) -> Option<Scan> {
    if reply.len() < HEADER_LEN || reply.len() > usize::from(u16::MAX) {
        return None;
    }
    let flags = wire::read_u16(reply, 2);
    if flags & flag::TC != 0 || wire::read_u16(reply, 4) != 1 {
        return None;
    }
    let code = flags & 0x000F;
    let counts = [6, 8, 10].map(|at| wire::read_u16(reply, at));
    let mut at = question_end(reply)?;
    let mut ttl_offsets = Vec::new();
    let (mut answer_ttl, mut negative_ttl) = (None::<u32>, None::<u32>);
    for (section, &count) in counts.iter().enumerate() {
        for _ in 0..count {
            let (end, rtype, fixed) = skip_record(reply, at)?;
            at = end;
            if rtype == rtype::OPT {
                continue;
            }
            let ttl = wire::read_u32(reply, fixed + 4);
            ttl_offsets.push(u16::try_from(fixed + 4).ok()?);
            match section {
                0 => answer_ttl = Some(answer_ttl.map_or(ttl, |t| t.min(ttl))),
                1 if rtype == rtype::SOA && end >= fixed + 10 + 20 => {
                    let minimum = wire::read_u32(reply, end - 4);
                    negative_ttl = Some(ttl.min(minimum));
                }
                _ => {}
            }
        }
    }
    let lifetime = match (code, answer_ttl) {
        (rcode::NOERROR, Some(ttl)) => Some(ttl.min(MAX_TTL)),
        (rcode::NOERROR | rcode::NXDOMAIN, None) => negative_ttl.map(|ttl| ttl.min(MAX_NEGATIVE_TTL)),
        // NXDOMAIN after a CNAME chain: the chain's end is what is missing.
        (rcode::NXDOMAIN, Some(ttl)) => negative_ttl.map(|n| n.min(ttl).min(MAX_NEGATIVE_TTL)),
        _ => None,
    };
    Some(Scan { ttl_offsets, lifetime })
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn query_msg(qname: &str, qtype: RecordType, edns: bool) -> Message {
        let mut msg = Message::query();
        msg.metadata.id = 0x4242;
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(name(qname), qtype));
        if edns {
            msg.set_edns(Edns::new());
        }
        msg
    }

    fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A::new(ip[0], ip[1], ip[2], ip[3])))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let rdata = SOA::new(name("a.root-servers.net."), name("nstld.example."), 1, 1800, 900, 604800, minimum);
        Record::from_rdata(name("."), ttl, RData::SOA(rdata))
    }

    /// A reply to `query` with these records and rcode, as bytes.
    fn reply(query: &Message, code: ResponseCode, answers: Vec<Record>, authority: Vec<Record>) -> Vec<u8> {
        let mut msg = query.clone();
        msg.metadata.message_type = MessageType::Response;
        msg.metadata.response_code = code;
        msg.metadata.recursion_available = true;
        msg.answers = answers;
        msg.authorities = authority;
        msg.to_vec().unwrap()
    }

    fn bytes(msg: &Message) -> Vec<u8> {
        msg.to_vec().unwrap()
    }

    fn key_of(packet: &[u8]) -> Vec<u8> {
        key(&crate::dns::message::tests::parse(packet).unwrap()).unwrap()
    }

    fn ttls(packet: &[u8]) -> Vec<u32> {
        Message::from_vec(packet).unwrap().all_sections().map(|r| r.ttl).collect()
    }

    #[test]
    fn hit_patches_id_question_case_and_ttls() {
        let t0 = Instant::now();
        let q = query_msg("Kong-Database.", RecordType::A, false);
        let answer = reply(
            &q,
            ResponseCode::NoError,
            vec![a("kong-database.", 600, [10, 9, 8, 7]), a("kong-database.", 90, [10, 9, 8, 6])],
            vec![],
        );
        let mut cache = Cache::new(10, 1 << 20);
        assert!(cache.insert(key_of(&bytes(&q)), &answer, t0));

        let mut again = query_msg("kong-DATABASE.", RecordType::A, false);
        again.metadata.id = 7;
        let packet = bytes(&again);
        let req = crate::dns::message::tests::parse(&packet).unwrap();
        let mut out = Vec::new();
        assert!(cache.get(&key_of(&packet), &req, t0 + Duration::from_millis(30_500), &mut out));
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(msg.metadata.id, 7);
        assert_eq!(msg.queries[0].name().to_string(), "kong-DATABASE.", "the asker's spelling is echoed");
        assert_eq!(ttls(&out), [570, 60], "whole seconds spent in the cache are taken off");
        assert!(
            !cache.get(&key_of(&packet), &req, t0 + Duration::from_secs(90), &mut out),
            "lives for the smallest TTL"
        );
        assert!(cache.is_empty(), "an expired entry is dropped when met");
    }

    #[test]
    fn key_separates_type_edns_do_cd_and_ignores_case() {
        let plain = key_of(&bytes(&query_msg("example.com.", RecordType::A, false)));
        assert_eq!(plain, key_of(&bytes(&query_msg("EXAMPLE.com.", RecordType::A, false))));
        assert_ne!(plain, key_of(&bytes(&query_msg("example.com.", RecordType::AAAA, false))));
        assert_ne!(plain, key_of(&bytes(&query_msg("example.com.", RecordType::A, true))), "OPT or not");
        let mut dnssec = query_msg("example.com.", RecordType::A, true);
        dnssec.edns.as_mut().unwrap().flags_mut().dnssec_ok = true;
        assert_ne!(key_of(&bytes(&dnssec)), key_of(&bytes(&query_msg("example.com.", RecordType::A, true))));
        let mut cd = query_msg("example.com.", RecordType::A, false);
        cd.metadata.checking_disabled = true;
        assert_ne!(key_of(&bytes(&cd)), plain);
    }

    #[test]
    fn negative_answers_live_for_the_soa_minimum_capped() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10, 1 << 20);
        let q = query_msg("nope.example.", RecordType::A, false);
        let nx = reply(&q, ResponseCode::NXDomain, vec![], vec![soa(3600, 20)]);
        assert!(cache.insert(key_of(&bytes(&q)), &nx, t0));
        let packet = bytes(&q);
        let req = crate::dns::message::tests::parse(&packet).unwrap();
        let mut out = Vec::new();
        assert!(cache.get(&key_of(&packet), &req, t0 + Duration::from_secs(19), &mut out));
        assert!(!cache.get(&key_of(&packet), &req, t0 + Duration::from_secs(20), &mut out), "min(SOA TTL, MINIMUM)");

        let long = reply(&q, ResponseCode::NXDomain, vec![], vec![soa(86_400, 86_400)]);
        cache.insert(key_of(&packet), &long, t0);
        assert!(cache.get(&key_of(&packet), &req, t0 + Duration::from_secs(29), &mut out));
        assert!(!cache.get(&key_of(&packet), &req, t0 + Duration::from_secs(30), &mut out), "capped");

        let nodata = reply(&q, ResponseCode::NoError, vec![], vec![soa(10, 10)]);
        assert!(cache.insert(key_of(&packet), &nodata, t0), "NODATA is cached like NXDOMAIN");
        let no_soa = reply(&q, ResponseCode::NXDomain, vec![], vec![]);
        assert!(!cache.insert(key_of(&packet), &no_soa, t0), "RFC 2308 §5: no SOA, no caching");
    }

    #[test]
    fn uncacheable_replies_are_refused() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10, 1 << 20);
        let q = query_msg("example.com.", RecordType::A, false);
        let k = key_of(&bytes(&q));
        let zero = reply(&q, ResponseCode::NoError, vec![a("example.com.", 0, [192, 0, 2, 1])], vec![]);
        assert!(!cache.insert(k.clone(), &zero, t0), "TTL 0");
        let servfail = reply(&q, ResponseCode::ServFail, vec![], vec![soa(60, 60)]);
        assert!(!cache.insert(k.clone(), &servfail, t0), "SERVFAIL");
        let mut truncated = reply(&q, ResponseCode::NoError, vec![a("example.com.", 60, [192, 0, 2, 1])], vec![]);
        truncated[2] |= 0x02;
        assert!(!cache.insert(k.clone(), &truncated, t0), "TC");
        assert!(!cache.insert(k, &truncated[..20], t0), "malformed");
        assert!(cache.is_empty());
    }

    #[test]
    fn positive_ttl_is_capped() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10, 1 << 20);
        let q = query_msg("example.com.", RecordType::A, false);
        let packet = bytes(&q);
        let day = reply(&q, ResponseCode::NoError, vec![a("example.com.", 86_400, [192, 0, 2, 1])], vec![]);
        cache.insert(key_of(&packet), &day, t0);
        let req = crate::dns::message::tests::parse(&packet).unwrap();
        let mut out = Vec::new();
        let cap = Duration::from_secs(u64::from(MAX_TTL));
        assert!(cache.get(&key_of(&packet), &req, t0 + cap - Duration::from_secs(1), &mut out));
        assert_eq!(ttls(&out), [86_400 - MAX_TTL + 1], "the TTL sent is the upstream's, counted down");
        assert!(!cache.get(&key_of(&packet), &req, t0 + cap, &mut out));
    }

    #[test]
    fn full_cache_drops_expired_then_soonest_to_expire() {
        let t0 = Instant::now();
        let mut cache = Cache::new(3, 1 << 20);
        let mut keys = Vec::new();
        for (i, ttl) in [(0u8, 50u32), (1, 10), (2, 100)] {
            let owner = format!("n{i}.example.");
            let q = query_msg(&owner, RecordType::A, false);
            let k = key_of(&bytes(&q));
            cache.insert(
                k.clone(),
                &reply(&q, ResponseCode::NoError, vec![a(&owner, ttl, [192, 0, 2, i])], vec![]),
                t0,
            );
            keys.push((k, bytes(&q)));
        }
        let q = query_msg("n3.example.", RecordType::A, false);
        cache.insert(
            key_of(&bytes(&q)),
            &reply(&q, ResponseCode::NoError, vec![a("n3.example.", 60, [192, 0, 2, 3])], vec![]),
            t0,
        );
        assert_eq!(cache.len(), 3);
        let hit = |cache: &mut Cache, (k, p): &(Vec<u8>, Vec<u8>)| {
            cache.get(k, &crate::dns::message::tests::parse(p).unwrap(), t0 + Duration::from_secs(1), &mut Vec::new())
        };
        assert!(!hit(&mut cache, &keys[1]), "the entry closest to expiry made room");
        assert!(hit(&mut cache, &keys[0]) && hit(&mut cache, &keys[2]));

        // Later, the expired n0 (TTL 50) goes before anything live is evicted.
        let later = t0 + Duration::from_secs(55);
        let q = query_msg("n4.example.", RecordType::A, false);
        cache.insert(
            key_of(&bytes(&q)),
            &reply(&q, ResponseCode::NoError, vec![a("n4.example.", 60, [192, 0, 2, 4])], vec![]),
            later,
        );
        assert_eq!(cache.len(), 3);
        let live = |cache: &mut Cache, (k, p): &(Vec<u8>, Vec<u8>)| {
            cache.get(k, &crate::dns::message::tests::parse(p).unwrap(), later, &mut Vec::new())
        };
        assert!(live(&mut cache, &keys[2]), "n2 (TTL 100) survives");
    }

    #[test]
    fn byte_limit_is_kept() {
        let t0 = Instant::now();
        let q = query_msg("example.com.", RecordType::A, false);
        let one = reply(&q, ResponseCode::NoError, vec![a("example.com.", 60, [192, 0, 2, 1])], vec![]);
        let mut cache = Cache::new(100, one.len() * 2);
        for i in 0..5u8 {
            let owner = format!("n{i}.example.");
            let q = query_msg(&owner, RecordType::A, false);
            cache.insert(
                key_of(&bytes(&q)),
                &reply(&q, ResponseCode::NoError, vec![a(&owner, 60 + u32::from(i), [192, 0, 2, i])], vec![]),
                t0,
            );
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.bytes <= one.len() * 2 + 8, "{} bytes", cache.bytes);
    }

    #[test]
    fn client_subnet_queries_are_not_cached() {
        let mut q = query_msg("example.com.", RecordType::A, true);
        let subnet = hickory_proto::rr::rdata::opt::ClientSubnet::new("192.0.2.0".parse().unwrap(), 24, 0);
        q.edns.as_mut().unwrap().options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::Subnet(subnet));
        let packet = bytes(&q);
        assert_eq!(key(&crate::dns::message::tests::parse(&packet).unwrap()), None);
    }
}
