//! Wall-clock times and unique ids: the leaf every timestamp and event id comes from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant at Unix time `secs` (now, if that has passed).
pub(crate) fn unix_to_instant(secs: u64) -> Instant {
    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let target = Duration::from_secs(secs);
    let now = Instant::now();
    match target.checked_sub(now_unix) {
        Some(ahead) => now + ahead,
        None => now,
    }
}

/// Makes event ids unique across nodes and restarts: milliseconds, a random per-process tag,
/// and a sequence number.
pub(crate) struct IdGenerator {
    tag: u32,
    seq: AtomicU64,
}

impl Default for IdGenerator {
    fn default() -> Self {
        use std::hash::{BuildHasher, RandomState};
        let tag = RandomState::new().hash_one(std::process::id()) as u32;
        Self { tag, seq: AtomicU64::new(0) }
    }
}

impl IdGenerator {
    pub(crate) fn next_id(&self) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{:011x}-{:08x}-{seq:x}", now_millis(), self.tag)
    }
}
