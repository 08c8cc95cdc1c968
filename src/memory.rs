//! The allocator, and giving memory back to the operating system after a catalog build.
//!
//! Building a snapshot parses and converts the whole catalog: transient data several times
//! the size of the snapshot that stays (100,000 services × 3: ~90 MB of model for a 40 MB
//! snapshot), in millions of small allocations. mimalloc makes those cheap (glibc spent a
//! third of the load time in malloc/free), and [`release_freed`] hands the freed pages back so
//! the process does not carry the peak as RSS for its lifetime.

/// The allocator of the binary (set with `#[global_allocator]` in `main.rs`).
#[cfg(not(feature = "heap-profile"))]
pub type Allocator = mimalloc::MiMalloc;

/// The allocator of the binary: jemalloc, whose sampled heap profile `/debug/pprof/heap`
/// exports (feature `heap-profile`).
#[cfg(feature = "heap-profile")]
pub type Allocator = tikv_jemallocator::Jemalloc;

/// Returns free memory to the OS; call after dropping a large transient structure. jemalloc
/// does that by itself, within its decay time (10 s).
#[cfg(feature = "heap-profile")]
pub fn release_freed() {}

/// Returns free memory to the OS; call after dropping a large transient structure.
#[cfg(not(feature = "heap-profile"))]
pub fn release_freed() {
    // SAFETY: mi_collect takes no pointers; it only walks mimalloc's own free lists and
    // returns unused pages. `true` forces the collection of abandoned and retained segments.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
