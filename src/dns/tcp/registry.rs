//! Who holds a TCP connection: a fixed table of slots, the caps on it (all clients, one client
//! prefix), and eviction of the oldest idle connection when a cap is reached, so that a new
//! client is served instead of waiting in the kernel's accept queue behind idle ones.
//!
//! The table is locked only when a connection opens or closes; on the query path a connection
//! writes one atomic (idle since when, or busy) and waits on its slot's [`Notify`], which an
//! eviction wakes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// `idle_since` of a connection in the middle of a query (not evictable).
const BUSY: u64 = u64::MAX;

/// The caps one registry enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Connections open at once (evicted ones excepted).
    pub(crate) total: usize,
    /// Connections of one client prefix.
    pub(crate) per_client: usize,
    /// Prefix length grouping IPv4 clients.
    pub(crate) prefix_v4: u8,
    /// Prefix length grouping IPv6 clients.
    pub(crate) prefix_v6: u8,
}

/// One connection's place in the table.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Nanoseconds since the registry's epoch at which the connection last became idle, or
    /// [`BUSY`].
    idle_since: AtomicU64,
    /// Set when the connection was chosen for eviction; it then ends at its next wait.
    evicted: AtomicBool,
    /// Woken on eviction.
    wake: Notify,
}

impl Slot {
    /// The connection is answering a query: it cannot be evicted now.
    pub(crate) fn busy(&self) {
        self.idle_since.store(BUSY, Ordering::Relaxed);
    }

    /// Whether the connection was evicted and must end.
    pub(crate) fn evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Wakes the connection's current wait when it is evicted ([`Slot::evicted`] must be
    /// checked after this future is enabled and before it is awaited).
    pub(crate) fn evicted_signal(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

/// A client prefix: its leading bits, and whether it is IPv4's (the families never share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Client {
    bits: u128,
    v4: bool,
}

#[derive(Debug)]
struct Entry {
    client: Client,
    evicted: bool,
}

#[derive(Debug, Default)]
struct Table {
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// Open connections not evicted: what the caps count.
    live: usize,
    /// Open connections, evicted ones included (they hold a slot until their task ends).
    open: usize,
    per_client: HashMap<Client, usize, foldhash::fast::RandomState>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client's prefix is at its cap and all its connections are busy.
    ClientFull,
    /// All connections are busy (or evicted ones have not ended yet).
    Full,
}

/// What [`Registry::admit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// The new connection's slot.
    pub(crate) slot: u32,
    /// Whether another connection was evicted to make room.
    pub(crate) evicted: bool,
}

/// The table of TCP connections of one server (every listener shares it).
#[derive(Debug)]
pub(crate) struct Registry {
    caps: Caps,
    epoch: Instant,
    slots: Box<[Slot]>,
    table: Mutex<Table>,
    emptied: Notify,
}

impl Registry {
    /// A table for `caps.total` connections, with room for as many evicted ones still ending.
    pub(crate) fn new(caps: Caps) -> Registry {
        let total = caps.total.max(1);
        let size = total * 2;
        let caps = Caps { total, per_client: caps.per_client.max(1), ..caps };
        Registry {
            caps,
            epoch: Instant::now(),
            slots: (0..size).map(|_| Slot::default()).collect(),
            table: Mutex::new(Table {
                entries: (0..size).map(|_| None).collect(),
                free: (0..size as u32).rev().collect(),
                ..Table::default()
            }),
            emptied: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The connection in `slot` waits for its next query from now on.
    pub(crate) fn idle(&self, slot: u32) {
        self.slots[slot as usize].idle_since.store(self.now(), Ordering::Relaxed);
    }

    /// The slot of an admitted connection.
    pub(crate) fn slot(&self, slot: u32) -> &Slot {
        &self.slots[slot as usize]
    }

    /// Admits a connection from `peer` (`busy`: its first query has arrived already), evicting
    /// the oldest idle connection of its prefix (at the per-client cap) or of all (at the total
    /// cap) when needed.
    pub(crate) fn admit(&self, peer: IpAddr, busy: bool) -> Result<Admitted, Refusal> {
        let client = self.prefix(peer);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mut evicted = false;
        if table.per_client.get(&client).is_some_and(|&n| n >= self.caps.per_client) {
            let victim = self.oldest_idle(&table, Some(client)).ok_or(Refusal::ClientFull)?;
            self.evict(&mut table, victim);
            evicted = true;
        }
        if table.live >= self.caps.total {
            let victim = self.oldest_idle(&table, None).ok_or(Refusal::Full)?;
            self.evict(&mut table, victim);
            evicted = true;
        }
        let slot = table.free.pop().ok_or(Refusal::Full)?;
        table.entries[slot as usize] = Some(Entry { client, evicted: false });
        table.live += 1;
        table.open += 1;
        *table.per_client.entry(client).or_insert(0) += 1;
        let s = &self.slots[slot as usize];
        s.evicted.store(false, Ordering::Release);
        s.idle_since.store(if busy { BUSY } else { self.now() }, Ordering::Relaxed);
        Ok(Admitted { slot, evicted })
    }

    /// Gives `slot` back when its connection has ended.
    pub(crate) fn release(&self, slot: u32) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = table.entries[slot as usize].take() else { return };
        if !entry.evicted {
            table.live -= 1;
            Self::forget_client(&mut table, entry.client);
        }
        table.open -= 1;
        table.free.push(slot);
        if table.open == 0 {
            self.emptied.notify_waiters();
        }
    }

    /// Connections open now (evicted ones still ending included).
    pub(crate) fn open(&self) -> usize {
        self.table.lock().unwrap_or_else(PoisonError::into_inner).open
    }

    /// Waits until every connection has ended, or `limit` passed; true if they all ended.
    pub(crate) async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.open() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, emptied).await.is_err() {
                return self.open() == 0;
            }
        }
    }

    fn forget_client(table: &mut Table, client: Client) {
        if let Some(n) = table.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                table.per_client.remove(&client);
            }
        }
    }

    /// The idle, not yet evicted connection that has waited longest, of `client` or of all.
    fn oldest_idle(&self, table: &Table, client: Option<Client>) -> Option<u32> {
        let mut best: Option<(u64, u32)> = None;
        for (i, entry) in table.entries.iter().enumerate() {
            let Some(entry) = entry else { continue };
            if entry.evicted || client.is_some_and(|c| c != entry.client) {
                continue;
            }
            let since = self.slots[i].idle_since.load(Ordering::Relaxed);
            if since != BUSY && best.is_none_or(|(b, _)| since < b) {
                best = Some((since, i as u32));
            }
        }
        best.map(|(_, i)| i)
    }

    fn evict(&self, table: &mut Table, slot: u32) {
        let Some(entry) = table.entries[slot as usize].as_mut() else { return };
        entry.evicted = true;
        let client = entry.client;
        table.live -= 1;
        Self::forget_client(table, client);
        let s = &self.slots[slot as usize];
        s.evicted.store(true, Ordering::Release);
        s.wake.notify_waiters();
    }

    /// The client prefix `ip` belongs to (an IPv4-mapped IPv6 address counts as IPv4).
    fn prefix(&self, ip: IpAddr) -> Client {
        let v4_bits = |v4: std::net::Ipv4Addr| (u128::from(u32::from(v4)) << 96, self.caps.prefix_v4.min(32), true);
        let (bits, len, v4) = match ip {
            IpAddr::V4(v4) => v4_bits(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4_bits(v4),
                None => (u128::from(v6), self.caps.prefix_v6.min(128), false),
            },
        };
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
        Client { bits: bits & mask, v4 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(total: usize, per_client: usize) -> Registry {
        Registry::new(Caps { total, per_client, prefix_v4: 24, prefix_v6: 64 })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_full_prefix_gives_up_its_oldest_idle_connection() {
        let r = registry(10, 2);
        let a = r.admit(ip("10.0.0.1"), false).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = r.admit(ip("10.0.0.2"), false).unwrap(); // same /24
        let c = r.admit(ip("10.0.0.3"), false).unwrap();
        assert!(c.evicted);
        assert!(r.slot(a.slot).evicted(), "the oldest idle one goes");
        assert!(!r.slot(b.slot).evicted());
        // Another prefix is not affected.
        assert!(!r.admit(ip("10.0.1.1"), false).unwrap().evicted);
    }

    #[test]
    fn busy_connections_are_not_evicted_and_the_newcomer_is_refused() {
        let r = registry(2, 2);
        let a = r.admit(ip("192.0.2.1"), false).unwrap();
        let b = r.admit(ip("198.51.100.1"), false).unwrap();
        r.slot(a.slot).busy();
        r.slot(b.slot).busy();
        assert_eq!(r.admit(ip("203.0.113.1"), false), Err(Refusal::Full));
        r.idle(b.slot);
        let c = r.admit(ip("203.0.113.1"), false).unwrap();
        assert!(c.evicted && r.slot(b.slot).evicted() && !r.slot(a.slot).evicted());
    }

    #[test]
    fn a_connection_admitted_with_its_query_waiting_is_not_idle() {
        let r = registry(1, 8);
        let a = r.admit(ip("192.0.2.1"), true).unwrap();
        assert_eq!(r.admit(ip("192.0.2.2"), false), Err(Refusal::Full));
        r.idle(a.slot);
        assert!(r.admit(ip("192.0.2.2"), false).unwrap().evicted);
    }

    #[test]
    fn released_slots_are_reused_and_counted_once() {
        let r = registry(1, 1);
        let a = r.admit(ip("::1"), false).unwrap();
        let b = r.admit(ip("::1"), false).unwrap(); // evicts a
        assert_eq!(r.open(), 2);
        r.release(a.slot);
        r.release(b.slot);
        assert_eq!(r.open(), 0);
        let c = r.admit(ip("::1"), false).unwrap();
        assert!(!c.evicted && !r.slot(c.slot).evicted(), "a reused slot starts clean");
    }

    #[test]
    fn prefixes_group_as_configured() {
        let r = registry(4, 4);
        assert_eq!(r.prefix(ip("10.1.2.3")), r.prefix(ip("10.1.2.200")));
        assert_ne!(r.prefix(ip("10.1.2.3")), r.prefix(ip("10.1.3.3")));
        assert_eq!(r.prefix(ip("2001:db8::1")), r.prefix(ip("2001:db8::ffff:1")));
        assert_ne!(r.prefix(ip("2001:db8::1")), r.prefix(ip("2001:db8:0:1::1")));
        assert_eq!(r.prefix(ip("::ffff:10.1.2.3")), r.prefix(ip("10.1.2.9")));
        assert_ne!(r.prefix(ip("0.0.0.1")), r.prefix(ip("::1")));
    }
}
