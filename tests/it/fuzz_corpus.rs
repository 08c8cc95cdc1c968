//! The fuzz targets' corpora (`fuzz/corpus/<target>/`), replayed through the same entry points
//! (`consul_dns::fuzzing`) on the stable toolchain: every input the fuzzer kept, and every
//! crash it found once fixed, runs in every test run. `fuzz/README.md` says how to fuzz.

use std::fs;
use std::path::PathBuf;

use consul_dns::dns::answer::Transport;
use consul_dns::fuzzing;

/// Runs `entry` on every file of `fuzz/corpus/<target>/`; fails if the corpus is missing or
/// nearly empty (a corpus that went missing would otherwise pass), and names the input that
/// panicked.
fn replay(target: &str, entry: fn(&[u8]), at_least: usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= at_least, "{} holds {} inputs, expected at least {at_least}", dir.display(), inputs.len());
    for path in &inputs {
        let data = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            panic!(
                "fuzz input {} panicked (replay: cargo +nightly fuzz run {target} {})",
                path.display(),
                path.display()
            );
        }
    }
}

#[test]
fn request_corpus() {
    replay("request", fuzzing::request, 100);
}

#[test]
fn respond_corpus() {
    replay("respond", fuzzing::respond, 100);
}

#[test]
fn static_catalog_corpus() {
    replay("static_catalog", fuzzing::static_catalog, 3);
}

#[test]
fn consul_bodies_corpus() {
    replay("consul_bodies", fuzzing::consul_bodies, 5);
}

#[test]
fn persisted_state_corpus() {
    replay("persisted_state", fuzzing::persisted_state, 1);
}

/// The checks inside the entry points can fail: a reply that does not echo the ID is caught.
#[test]
fn respond_checks_catch_a_broken_reply() {
    let query = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
    let mut reply = query;
    reply[2] |= 0x80;
    fuzzing::check_reply(&query, &reply, Transport::Udp);
    reply[1] ^= 1;
    assert!(std::panic::catch_unwind(|| fuzzing::check_reply(&query, &reply, Transport::Udp)).is_err());
}
