//! The catalog: the one place backends and the DNS layer meet.
//!
//! State machine: a [`Catalog`] always holds exactly one [`Snapshot`] behind an
//! `arc_swap::ArcSwap`. Readers (every DNS query) take it with one atomic load and never wait.
//! The single writer at a time (a backend's sync loop, or a reload) builds a complete new
//! snapshot to the side and [`Catalog::publish`]es it, which assigns the next serial and swaps
//! one pointer. Invariants:
//! - a snapshot is immutable once published; readers holding an old one finish with it;
//! - serials only grow, also across restarts (they start from the wall clock), so the SOA
//!   serial moves forward with every change (S15);
//! - nothing is ever published from a failed read: a backend that fails publishes nothing and
//!   the last good snapshot keeps serving (backends own that rule; the catalog cannot tell).
//!
//! Must not import `dns` or `backend`.

pub mod model;
pub mod persist;
pub mod records;
pub mod reverse;
pub mod snapshot;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, Guard};

pub use snapshot::{BuildOptions, Snapshot};

/// The live catalog: the current snapshot and its serial counter.
#[derive(Debug)]
pub struct Catalog {
    current: ArcSwap<Snapshot>,
    last_serial: AtomicU32,
}

impl Catalog {
    /// A catalog serving `initial` (which gets the first serial).
    pub fn new(initial: Snapshot) -> Catalog {
        let catalog = Catalog {
            current: ArcSwap::from_pointee(Snapshot::empty(initial.options_arc(), false)),
            last_serial: AtomicU32::new(0),
        };
        catalog.publish(initial);
        catalog
    }

    /// The current snapshot: one atomic load, no lock.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc` (for long-lived holders).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Makes `snapshot` the one answers come from; returns its serial.
    pub fn publish(&self, mut snapshot: Snapshot) -> u32 {
        let serial = self.next_serial();
        snapshot.set_serial(serial);
        self.current.store(Arc::new(snapshot));
        serial
    }

    /// `max(now in Unix seconds, previous + 1)`: monotonic and roughly a timestamp.
    fn next_serial(&self) -> u32 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32);
        let mut previous = self.last_serial.load(Ordering::Relaxed);
        loop {
            let next = now.max(previous.wrapping_add(1));
            match self.last_serial.compare_exchange_weak(previous, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => previous = actual,
            }
        }
    }
}
