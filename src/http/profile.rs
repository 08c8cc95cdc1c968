//! `/debug/pprof/profile?seconds=N`: a CPU profile in pprof's protobuf format, what Go's
//! `net/http/pprof` serves, so `go tool pprof http://HOST:9153/debug/pprof/profile` works.
//!
//! pprof-rs samples every thread with `SIGPROF` at 99 Hz (off the beat of periodic work) while
//! a blocking-pool thread waits out the duration, then symbolizes in-process. One profile at a
//! time, as in Go. The signal interrupts system calls; the UDP workers and tokio retry those.
//! Built only with the `pprof` cargo feature (on by default).

use std::time::Duration;

/// `/debug/pprof/`: what can be fetched here, as Go's `net/http/pprof` index lists it.
pub const INDEX: &str = "<!DOCTYPE html>
<html><head><title>consul-dns /debug/pprof/</title></head><body>
<h1>/debug/pprof/</h1>
<p>Profiles in pprof's format, for <code>go tool pprof http://HOST:PORT/debug/pprof/profile</code>.</p>
<table>
<tr><td><a href=\"/debug/pprof/heap\">heap</a></td><td>memory in use, sampled about every 512 KiB allocated (builds with the <code>heap-profile</code> feature)</td></tr>
<tr><td><a href=\"/debug/pprof/profile?seconds=30\">profile</a></td><td>CPU profile of every thread, sampled at 99 Hz for <code>seconds</code> (default 30, at most 300); one at a time</td></tr>
</table>
</body></html>
";

/// Default and largest duration, in seconds (Go: 30 and the server's write timeout).
pub const DEFAULT_SECONDS: u64 = 30;
/// The longest profile served.
pub const MAX_SECONDS: u64 = 300;

/// Code a sample must not interrupt: unwinding from inside the unwinder (libgcc's
/// non-recursive object lock) or the dynamic loader could deadlock, and the vDSO's unwind data
/// is unreliable. libc is *not* listed, unlike pprof-rs's example: since glibc 2.34 it holds
/// pthread too, the UDP workers spend most of their time in system calls made through it, and
/// its `dl_iterate_phdr` lock is recursive; listing it would drop most samples.
#[cfg(feature = "pprof")]
const BLOCKLIST: &[&str] = &["libgcc", "ld-linux", "linux-vdso"];

/// Why no profile was made.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Another profile is being taken.
    #[error("a CPU profile is already being taken")]
    Busy,
    /// Built without the `pprof` feature.
    #[error("this build has no CPU profiler (cargo feature `pprof`)")]
    Unavailable,
    /// Built without the `heap-profile` feature (or jemalloc's profiling is off).
    #[error(
        "this build has no heap profiler: build with `--features heap-profile` (jemalloc with sampled profiling instead of mimalloc)"
    )]
    NoHeapProfiler,
    /// The profiler failed.
    #[error("profiling failed: {0}")]
    Failed(String),
}

/// The duration asked for in `query` (`seconds=N`), within `1..=MAX_SECONDS`.
pub fn seconds(query: Option<&str>) -> Result<Duration, String> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("seconds="))
        .map_or(Ok(DEFAULT_SECONDS), |v| v.parse::<u64>().map_err(|_| format!("seconds={v}: expected a number")))?;
    if !(1..=MAX_SECONDS).contains(&value) {
        return Err(format!("seconds={value}: expected 1 to {MAX_SECONDS}"));
    }
    Ok(Duration::from_secs(value))
}

/// The heap in use now, sampled (gzipped `perftools.profiles.Profile`, `inuse_space`).
#[cfg(feature = "heap-profile")]
pub async fn heap() -> Result<Vec<u8>, ProfileError> {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else { return Err(ProfileError::NoHeapProfiler) };
    let mut ctl = ctl.lock().await;
    // The dump goes through a temporary file: blocking, but short and one at a time.
    tokio::task::block_in_place(|| ctl.dump_pprof()).map_err(|e| ProfileError::Failed(format!("{e:#}")))
}

/// Built without the `heap-profile` feature: no heap profile.
#[cfg(not(feature = "heap-profile"))]
pub async fn heap() -> Result<Vec<u8>, ProfileError> {
    Err(ProfileError::NoHeapProfiler)
}

/// Profiles the whole process for `duration`; the encoded `perftools.profiles.Profile`.
#[cfg(feature = "pprof")]
pub async fn cpu(duration: Duration) -> Result<Vec<u8>, ProfileError> {
    use pprof::protos::Message as _;
    let profiled = tokio::task::spawn_blocking(move || {
        let guard =
            pprof::ProfilerGuardBuilder::default().frequency(99).blocklist(BLOCKLIST).build().map_err(|e| match e {
                pprof::Error::Running => ProfileError::Busy,
                other => ProfileError::Failed(other.to_string()),
            })?;
        std::thread::sleep(duration);
        let report = guard.report().build().map_err(|e| ProfileError::Failed(e.to_string()))?;
        drop(guard);
        let profile = report.pprof().map_err(|e| ProfileError::Failed(e.to_string()))?;
        let mut body = Vec::with_capacity(profile.encoded_len());
        profile.encode(&mut body).map_err(|e| ProfileError::Failed(e.to_string()))?;
        Ok(body)
    });
    profiled.await.map_err(|e| ProfileError::Failed(e.to_string()))?
}

/// Without the `pprof` feature there is nothing to profile with.
#[cfg(not(feature = "pprof"))]
pub async fn cpu(_duration: Duration) -> Result<Vec<u8>, ProfileError> {
    Err(ProfileError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parameter() {
        assert_eq!(seconds(None), Ok(Duration::from_secs(30)));
        assert_eq!(seconds(Some("debug=1&seconds=2")), Ok(Duration::from_secs(2)));
        assert!(seconds(Some("seconds=0")).is_err());
        assert!(seconds(Some("seconds=301")).is_err());
        assert!(seconds(Some("seconds=soon")).is_err());
    }
}
