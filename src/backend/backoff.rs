//! Jittered, capped exponential backoff on tokio's clock (so tests pause time rather than wait
//! for it), and the token bucket that keeps a churning blocking query from busy-polling
//! (docs/consul-api.md H3.7).

use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

/// The first retry delay of a catalog source after a failed read.
pub const SOURCE_RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest a catalog source waits between retries, jitter included. Small on purpose: a
/// source that comes back (Consul re-elected a leader, a database restarted) is seen within
/// about this long, and a handful of watches retrying every 2 s is no load for a registry.
pub const SOURCE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Backoff settings that cannot work.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BackoffError {
    /// `max` is zero.
    #[error("maximum backoff must be above zero")]
    ZeroMax,
    /// `min` is above `max`.
    #[error("minimum backoff {min:?} is above the maximum {max:?}")]
    MinAboveMax {
        /// The minimum.
        min: Duration,
        /// The maximum.
        max: Duration,
    },
    /// `jitter` is negative or not a number.
    #[error("jitter must be a finite number from 0 to 1, not {0}")]
    BadJitter(f64),
}

/// Exponential backoff: `min`, `2 min`, `4 min` … capped at `max`, each delay stretched by a
/// random factor in `[1, 1 + jitter]` (capped at `max` again), so that many clients failing at
/// once do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    failures: u32,
}

impl Backoff {
    /// Validates `min ≤ max`, `max > 0` and `0 ≤ jitter ≤ 1`.
    pub fn try_new(min: Duration, max: Duration, jitter: f64) -> Result<Backoff, BackoffError> {
        if max.is_zero() {
            return Err(BackoffError::ZeroMax);
        }
        if min > max {
            return Err(BackoffError::MinAboveMax { min, max });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(BackoffError::BadJitter(jitter));
        }
        Ok(Backoff { min, max, jitter, failures: 0 })
    }

    /// The delay before the next attempt after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exponent = self.failures.min(31);
        self.failures = self.failures.saturating_add(1);
        let base = self.min.saturating_mul(1u32 << exponent).min(self.max);
        let factor = 1.0 + self.jitter * fastrand::f64();
        base.mul_f64(factor).min(self.max)
    }

    /// A success: the next failure starts again from `min`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A token bucket: `burst` requests at once, then one per `every`. A blocking query whose
/// result churns takes one token per round; without tokens it waits for the next one, so a
/// churning result costs at most one request per `every` instead of a busy loop.
#[derive(Debug, Clone)]
pub struct RateLimit {
    burst: u32,
    every: Duration,
    tokens: u32,
    refilled: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(burst: u32, every: Duration) -> RateLimit {
        RateLimit { burst: burst.max(1), every, tokens: burst.max(1), refilled: Instant::now() }
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&mut self) {
        self.refill();
        if self.tokens == 0 {
            tokio::time::sleep_until(self.refilled + self.every).await;
            self.refill();
        }
        self.tokens = self.tokens.saturating_sub(1);
    }

    fn refill(&mut self) {
        if self.every.is_zero() {
            self.tokens = self.burst;
            return;
        }
        let now = Instant::now();
        let earned = (now - self.refilled).as_nanos() / self.every.as_nanos();
        if earned > 0 {
            self.tokens = (self.tokens as u128 + earned).min(self.burst as u128) as u32;
            self.refilled += self.every * earned.min(u32::MAX as u128) as u32;
            if self.tokens == self.burst {
                self.refilled = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn try_new_validates() {
        assert_eq!(Backoff::try_new(MS, Duration::ZERO, 0.0).unwrap_err(), BackoffError::ZeroMax);
        assert!(matches!(Backoff::try_new(MS * 10, MS, 0.0), Err(BackoffError::MinAboveMax { .. })));
        assert!(matches!(Backoff::try_new(MS, MS, -0.1), Err(BackoffError::BadJitter(_))));
        assert!(matches!(Backoff::try_new(MS, MS, f64::NAN), Err(BackoffError::BadJitter(_))));
        assert!(Backoff::try_new(MS, MS, 0.0).is_ok());
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::try_new(MS * 100, MS * 1000, 0.0).unwrap();
        let delays: Vec<u128> = (0..6).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), MS * 100);
        for _ in 0..4 {
            backoff.next_delay();
        }
        for _ in 0..100 {
            assert_eq!(backoff.next_delay(), MS * 1000, "no overflow after many failures");
        }
    }

    #[test]
    fn jitter_stretches_within_bounds() {
        let mut backoff = Backoff::try_new(MS * 100, MS * 10_000, 0.5).unwrap();
        let first = backoff.next_delay();
        assert!((MS * 100..=MS * 150).contains(&first), "{first:?}");
        let second = backoff.next_delay();
        assert!((MS * 200..=MS * 300).contains(&second), "{second:?}");
        let mut capped = Backoff::try_new(MS * 100, MS * 100, 1.0).unwrap();
        assert_eq!(capped.next_delay(), MS * 100, "jitter never exceeds max");
    }

    #[test]
    fn a_source_retries_within_the_cap_however_long_the_outage() {
        let mut backoff = Backoff::try_new(SOURCE_RETRY_MIN, SOURCE_RETRY_MAX, 0.5).unwrap();
        let delays: Vec<Duration> = (0..1000).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= SOURCE_RETRY_MAX), "{:?}", delays.iter().max());
        assert!(delays[..4].iter().sum::<Duration>() < Duration::from_millis(2500), "four retries in the first 2.5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_sleeps_on_tokios_clock() {
        let mut backoff = Backoff::try_new(Duration::from_secs(1), Duration::from_secs(30), 0.0).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            tokio::time::sleep(backoff.next_delay()).await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1 + 2 + 4 + 8 + 16));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_allows_a_burst_then_one_per_interval() {
        let mut limit = RateLimit::new(2, Duration::from_millis(250));
        let start = Instant::now();
        limit.acquire().await;
        limit.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        limit.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        limit.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle = Instant::now();
        limit.acquire().await;
        limit.acquire().await;
        assert_eq!(idle.elapsed(), Duration::ZERO, "an idle loop earns its burst back, no more");
        limit.acquire().await;
        assert_eq!(idle.elapsed(), Duration::from_millis(250));
    }
}
