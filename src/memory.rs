//! The allocator, and giving memory back to the operating system after a catalog build.
//!
//! Building a snapshot parses and converts the whole catalog: transient data several times
//! the size of the snapshot that stays (100,000 services × 3: ~90 MB of model for a 40 MB
//! snapshot), in millions of small allocations. mimalloc makes those cheap (glibc spent a
//! third of the load time in malloc/free), and [`release_freed`] hands the freed pages back so
//! the process does not carry the peak as RSS for its lifetime.
//!
//! mimalloc keeps freed pages per thread: a collection on one thread does not return what the
//! runtime's workers freed (a Consul sync decodes its JSON bodies there). So [`release_freed`]
//! also asks every thread that calls [`on_idle`] (the runtime's workers, as they park) to
//! collect its own heap once.

use std::sync::atomic::{AtomicU64, Ordering};

/// The allocator of the binary (set with `#[global_allocator]` in `main.rs`).
#[cfg(not(feature = "heap-profile"))]
pub type Allocator = mimalloc::MiMalloc;

/// The allocator of the binary: jemalloc, whose sampled heap profile `/debug/pprof/heap`
/// exports (feature `heap-profile`).
#[cfg(feature = "heap-profile")]
pub type Allocator = tikv_jemallocator::Jemalloc;

/// How many times [`release_freed`] was called: a thread whose last collection saw an older
/// count collects again at its next [`on_idle`].
static RELEASES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The count of [`RELEASES`] this thread last collected for.
    static COLLECTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Returns free memory to the OS; call after dropping a large transient structure. jemalloc
/// does that by itself, within its decay time (10 s).
#[cfg(feature = "heap-profile")]
pub fn release_freed() {}

/// Returns free memory to the OS; call after dropping a large transient structure. Collects
/// this thread's heap now and every other [`on_idle`] thread's when it next goes idle.
#[cfg(not(feature = "heap-profile"))]
pub fn release_freed() {
    let count = RELEASES.fetch_add(1, Ordering::Relaxed) + 1;
    COLLECTED.with(|seen| seen.set(count));
    collect();
}

/// For a runtime's `on_thread_park`: the first time a thread goes idle after
/// [`release_freed`], it returns the pages it freed itself. Costs one atomic load otherwise.
pub fn on_idle() {
    let count = RELEASES.load(Ordering::Relaxed);
    if COLLECTED.with(|seen| seen.replace(count)) != count {
        collect();
    }
}

#[cfg(not(feature = "heap-profile"))]
fn collect() {
    // SAFETY: mi_collect takes no pointers; it only walks mimalloc's own free lists and
    // returns unused pages. `true` forces the collection of abandoned and retained segments.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(feature = "heap-profile")]
fn collect() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_thread_collects_after_a_release() {
        std::thread::spawn(|| {
            COLLECTED.with(|seen| seen.set(0));
            let released = RELEASES.fetch_add(1, Ordering::Relaxed) + 1;
            on_idle();
            assert!(COLLECTED.with(|seen| seen.get()) >= released, "collected for the release");
        })
        .join()
        .unwrap();
    }
}
