//! Response-rate limiting (RRL) of UDP answers, per client network (S1.7).
//!
//! UDP sources can be forged, so whoever reaches the port could have this daemon send answers
//! many times the size of the questions to an address of their choosing. Every UDP reply is
//! therefore charged to its client's network (an IPv4 /24, an IPv6 /56 by default): past
//! `rrl_responses_per_sec` (with one second's worth as burst) a reply is dropped, except that
//! every `rrl_slip`-th one goes out with TC and no records, so a real client behind that
//! network retries over TCP, which cannot be forged. TCP is never limited here.
//!
//! State: one table of [`SLOTS`] buckets, shared by the UDP workers, created once and kept
//! across reloads. A bucket is one `AtomicU64` holding the GCRA "theoretical arrival time" in
//! microseconds since the table was made: a reply at `now` is allowed when that time is at
//! most `burst` ahead of `now`, and then moves it one interval on (`max(tat, now) + interval`).
//! Updating is a compare-and-swap on the client's bucket only, so workers never wait for one
//! another and no lock is taken. A network is hashed to its bucket with a key drawn at start,
//! so nobody can aim at another network's bucket; networks that collide share one bucket,
//! which can only limit them sooner, never later. Known limit: a flood of forged sources from
//! many networks ties up a bucket for each one it hits, exactly as it would with one entry
//! per network.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::dns::acl::{Access, Cidr};
use crate::dns::message::question_end;
use crate::wire::{HEADER_LEN, flag};

/// Buckets in the table (16 Ki × 8 bytes = 128 KiB).
pub const SLOTS: usize = 1 << 14;

/// How the limit is configured; part of the reloadable DNS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Microseconds one reply costs (1 s / rate).
    interval_us: u64,
    /// How far ahead of now a bucket may run (the burst, in microseconds).
    burst_us: u64,
    /// Every Nth limited reply is slipped; 0 = none.
    slip: u32,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    exempt: Vec<Cidr>,
    exempt_recursion: bool,
}

impl RateLimit {
    /// The limit for `config`, or `None` when it is turned off (`rrl_responses_per_sec = 0`).
    pub fn from_config(config: &crate::config::RrlConfig) -> Option<RateLimit> {
        if config.responses_per_sec == 0 {
            return None;
        }
        let interval_us = (1_000_000 / u64::from(config.responses_per_sec)).max(1);
        Some(RateLimit {
            interval_us,
            // One second's worth of replies may go out at once.
            burst_us: interval_us * (u64::from(config.responses_per_sec) - 1),
            slip: config.slip,
            ipv4_prefix: config.ipv4_prefix.min(32),
            ipv6_prefix: config.ipv6_prefix.min(128),
            exempt: config.exempt.clone(),
            exempt_recursion: config.exempt_recursion,
        })
    }

    fn exempts(&self, ip: IpAddr, client: Access) -> bool {
        (self.exempt_recursion && client == Access::Recurse) || self.exempt.iter().any(|net| net.contains(ip))
    }

    /// The client network of `ip`, as one number (the family in the top bits).
    fn network(&self, ip: IpAddr) -> u128 {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.ipv4_prefix)).unwrap_or(0);
                (1 << 127) | u128::from(u32::from(v4) & mask)
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.ipv6_prefix)).unwrap_or(0);
                u128::from(v6) & mask & !(1 << 127) | (1 << 126)
            }
        }
    }
}

/// The buckets every UDP worker charges.
#[derive(Debug)]
pub struct Table {
    buckets: Box<[AtomicU64]>,
    epoch: Instant,
    key: u64,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    /// An empty table with a fresh hash key.
    pub fn new() -> Table {
        Table {
            buckets: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            key: fastrand::u64(..) | 1,
        }
    }

    fn slot(&self, network: u128) -> usize {
        let folded = (network as u64) ^ ((network >> 64) as u64).rotate_left(29);
        let mixed = (folded ^ self.key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - SLOTS.trailing_zeros())) as usize
    }

    /// Charges one reply to `network` at `now`; whether it may go out.
    fn admit(&self, limit: &RateLimit, network: u128, now: Instant) -> bool {
        let now = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let bucket = &self.buckets[self.slot(network)];
        let mut tat = bucket.load(Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > limit.burst_us {
                return false;
            }
            match bucket.compare_exchange_weak(tat, start + limit.interval_us, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }
}

/// What became of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    /// Within the rate (or exempt, or limiting is off): send it as it is.
    Pass,
    /// Over the rate and slipped: the reply was cut to its header and question, with TC.
    Slipped,
    /// Over the rate: send nothing.
    Dropped,
}

/// One UDP worker's view: the shared table and its own slip count.
#[derive(Debug)]
pub struct Limiter {
    table: std::sync::Arc<Table>,
    limited: u32,
}

impl Limiter {
    /// A worker's limiter on the shared `table`.
    pub fn new(table: std::sync::Arc<Table>) -> Limiter {
        Limiter { table, limited: 0 }
    }

    /// Screens `reply`, about to go to `ip` (whose [`Access`] is `client`) at `now` (the
    /// batch's clock reading). A slipped reply is rewritten in place.
    pub fn screen(
        &mut self,
        limit: Option<&RateLimit>,
        ip: IpAddr,
        client: Access,
        now: Instant,
        reply: &mut Vec<u8>,
    ) -> Screened {
        let Some(limit) = limit else { return Screened::Pass };
        if limit.exempts(ip, client) || self.table.admit(limit, limit.network(ip), now) {
            return Screened::Pass;
        }
        self.limited = self.limited.wrapping_add(1);
        if limit.slip == 0 || self.limited % limit.slip != 0 {
            return Screened::Dropped;
        }
        slip(reply);
        Screened::Slipped
    }
}

/// Cuts a reply to its header and question, counts zeroed (the OPT goes too), TC set.
fn slip(reply: &mut Vec<u8>) {
    let keep = question_end(reply).unwrap_or(HEADER_LEN.min(reply.len()));
    reply.truncate(keep);
    if reply.len() < HEADER_LEN {
        return;
    }
    reply[2] |= (flag::TC >> 8) as u8;
    reply[6..HEADER_LEN].fill(0);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::RrlConfig;

    fn limit(rate: u32, slip: u32) -> RateLimit {
        let config = RrlConfig {
            responses_per_sec: rate,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: Cidr::loopback().to_vec(),
            exempt_recursion: false,
        };
        RateLimit::from_config(&config).unwrap()
    }

    /// Screens `n` replies to `ip` at `at`; how many passed, slipped, dropped.
    fn screen_n(limiter: &mut Limiter, limit: &RateLimit, ip: &str, at: Instant, n: usize) -> [usize; 3] {
        let mut counts = [0; 3];
        for _ in 0..n {
            let mut reply = crate::dns::message::tests::query("user.service.consul", 33, None);
            match limiter.screen(Some(limit), ip.parse().unwrap(), Access::Query, at, &mut reply) {
                Screened::Pass => counts[0] += 1,
                Screened::Slipped => counts[1] += 1,
                Screened::Dropped => counts[2] += 1,
            }
        }
        counts
    }

    #[test]
    fn a_network_gets_its_burst_then_the_rate_with_every_second_reply_slipped() {
        let limit = limit(100, 2);
        let mut limiter = Limiter::new(Arc::new(Table::new()));
        let start = Instant::now();
        assert_eq!(screen_n(&mut limiter, &limit, "192.0.2.1", start, 150), [100, 25, 25], "burst = 1 s");
        assert_eq!(screen_n(&mut limiter, &limit, "192.0.2.77", start, 10), [0, 5, 5], "same /24, same bucket");
        let later = start + Duration::from_millis(100);
        assert_eq!(screen_n(&mut limiter, &limit, "192.0.2.1", later, 20)[0], 10, "100/s: 10 more after 100 ms");
        assert_eq!(screen_n(&mut limiter, &limit, "198.51.100.1", start, 100)[0], 100, "another /24 is apart");
    }

    #[test]
    fn ipv6_networks_are_slash_56_and_exemptions_hold() {
        let limit = limit(10, 0);
        let mut limiter = Limiter::new(Arc::new(Table::new()));
        let at = Instant::now();
        assert_eq!(screen_n(&mut limiter, &limit, "2001:db8:0:ff::1", at, 12), [10, 0, 2], "slip 0 drops all");
        assert_eq!(screen_n(&mut limiter, &limit, "2001:db8:0:1::9", at, 1), [0, 0, 1], "same /56");
        assert_eq!(screen_n(&mut limiter, &limit, "2001:db8:0:100::1", at, 1), [1, 0, 0], "next /56");
        assert_eq!(screen_n(&mut limiter, &limit, "127.0.0.1", at, 50), [50, 0, 0], "loopback exempt");
        let mut recursing = limit.clone();
        recursing.exempt_recursion = true;
        let mut reply = vec![0; 12];
        let ip = "2001:db8:0:ff::1".parse().unwrap();
        assert_eq!(limiter.screen(Some(&recursing), ip, Access::Recurse, at, &mut reply), Screened::Pass);
        assert_eq!(limiter.screen(Some(&recursing), ip, Access::Query, at, &mut reply), Screened::Dropped);
        assert_eq!(limiter.screen(None, ip, Access::Query, at, &mut reply), Screened::Pass, "off");
    }

    #[test]
    fn a_slipped_reply_is_header_and_question_with_tc() {
        let mut reply = crate::dns::message::tests::query("user.service.consul", 33, Some((1232, 0, &[])));
        reply[7] = 3; // pretend it carried three answers
        let question = reply[HEADER_LEN..question_end(&reply).unwrap()].to_vec();
        slip(&mut reply);
        assert_eq!(&reply[HEADER_LEN..], &question[..]);
        assert_eq!(reply[2] & 0x02, 0x02, "TC");
        assert_eq!(&reply[4..HEADER_LEN], &[0, 1, 0, 0, 0, 0, 0, 0], "one question, nothing else");
        let mut runt = vec![1, 2, 3];
        slip(&mut runt); // never panics on what is not a message
    }

    #[test]
    fn workers_on_one_table_share_the_budget() {
        let limit = Arc::new(limit(1000, 0));
        let table = Arc::new(Table::new());
        let at = Instant::now();
        let passed: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (table, limit) = (Arc::clone(&table), Arc::clone(&limit));
                    s.spawn(move || screen_n(&mut Limiter::new(table), &limit, "203.0.113.5", at, 500)[0])
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(passed, 1000, "2,000 replies at one instant, 1,000 allowed across four workers");
    }
}
