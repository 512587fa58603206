//! A token bucket: `rate` tokens a second up to `burst`, refilled from the elapsed time
//! whenever it is used. It holds no lock; its owner keeps it under its own.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Bucket {
    pub(crate) fn full(burst: f64, now: Instant) -> Self {
        Self { tokens: burst, at: now }
    }

    /// Adds what `rate` earned since the last call, up to `burst`.
    pub(crate) fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
    }

    pub(crate) fn is_full(&self, burst: f64) -> bool {
        self.tokens >= burst
    }

    /// Takes `n` tokens, all or none, or says how long until they would be there.
    pub(crate) fn take(&mut self, n: f64, rate: f64) -> Result<(), Duration> {
        self.holds(n, rate)?;
        self.tokens -= n;
        Ok(())
    }

    /// Whether `n` tokens are there (without taking them), or how long until they would be.
    pub(crate) fn holds(&self, n: f64, rate: f64) -> Result<(), Duration> {
        if self.tokens >= n {
            return Ok(());
        }
        Err(Duration::from_secs_f64((n - self.tokens) / rate))
    }

    /// Takes a token for as many of `n` as the bucket holds; returns how many.
    pub(crate) fn take_up_to(&mut self, n: usize) -> usize {
        let taken = (self.tokens.floor() as usize).min(n);
        self.tokens -= taken as f64;
        taken
    }
}
