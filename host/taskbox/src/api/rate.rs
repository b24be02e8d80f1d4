//! The per-token enqueue rate limit: a token bucket per caller, kept in this API process.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Token buckets by caller.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `rate` jobs per second on average, `burst` at once.
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            buckets: Mutex::default(),
        }
    }

    /// Takes `jobs` from `caller`'s bucket, or says in how many seconds there will be enough.
    pub(crate) fn take(&self, caller: &str, jobs: usize) -> Result<(), u64> {
        let wanted = jobs as f64;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let missing = wanted.min(self.burst) - bucket.tokens;
        Err((missing / self.rate).ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_over_its_burst_is_told_when_to_come_back() {
        let limiter = RateLimiter::new(2.0, 4.0);
        assert_eq!(limiter.take("a", 4), Ok(()));
        assert_eq!(limiter.take("a", 4), Err(2));
        // Another caller has its own bucket.
        assert_eq!(limiter.take("b", 1), Ok(()));
    }
}
