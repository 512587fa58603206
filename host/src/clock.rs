//! Wall-clock times and unique ids: the leaf every timestamp and event id comes from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
