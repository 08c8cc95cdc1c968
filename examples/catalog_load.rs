//! Where the time and memory of loading a static catalog go:
//! `cargo run --release --example catalog_load -- /tmp/consul-dns-bench/100000x3/catalog.json`
//!
//! Prints the time to read, parse and convert the file, to build the snapshot, and to drop
//! the model, and the bytes the model and the snapshot hold (counted by a wrapping allocator,
//! so the figures are live heap bytes, not RSS).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use consul_dns::backend::file::format as catalog_file;
use consul_dns::catalog::{BuildOptions, Snapshot};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mb(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: catalog_load CATALOG_FILE (.toml or .json)");
        std::process::exit(2);
    };
    let start = Instant::now();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let read = start.elapsed();
    let before_model = LIVE.load(Relaxed);
    let started = Instant::now();
    let data = catalog_file::parse(Path::new(&path), &text, "dc1").unwrap_or_else(|e| panic!("{e}"));
    let parsed = started.elapsed();
    drop(text);
    let model = LIVE.load(Relaxed) - before_model;
    let options = BuildOptions::new("dc1", 5);
    let before_snapshot = LIVE.load(Relaxed);
    let started = Instant::now();
    let snapshot = Snapshot::build(&data, Arc::new(options));
    let built = started.elapsed();
    let held = LIVE.load(Relaxed) - before_snapshot;
    let started = Instant::now();
    drop(data);
    let dropped = started.elapsed();
    let counts = snapshot.counts();
    println!(
        "{} services, {} instances, {} nodes: read {read:.2?}, parse+convert {parsed:.2?}, build {built:.2?}, \\
         drop model {dropped:.2?}; model {:.1} MB, snapshot {:.1} MB",
        counts.services,
        counts.instances,
        counts.nodes,
        mb(model),
        mb(held)
    );
}
