//! An instance's resource caps, and how far its linear memory has grown. A language
//! runtime's heap (JavaScript's, Python's) grows over thousands of calls with large payloads
//! until an allocation is refused at `plugins.memory_limit_bytes`, and the runtime then
//! aborts, failing that call. An instance whose memory has passed three quarters of the cap
//! is therefore retired after its call instead of serving the next one.

use wasmtime::{ResourceLimiter, Result, StoreLimits, StoreLimitsBuilder};

/// The caps wasmtime enforces on every growth, and the largest memory grown to so far.
pub(crate) struct MemoryCaps {
    caps: StoreLimits,
    /// Bytes one memory of the instance may grow to.
    cap: usize,
    /// The largest size any memory of the instance was allowed to grow to.
    largest: usize,
}

impl MemoryCaps {
    pub(crate) fn new(cap: usize) -> Self {
        let caps = StoreLimitsBuilder::new().memory_size(cap).instances(32).memories(8).tables(16).build();
        Self { caps, cap, largest: 0 }
    }

    /// Whether the instance should be retired rather than kept warm.
    pub(crate) fn near_cap(&self) -> bool {
        self.largest > self.cap / 4 * 3
    }
}

impl ResourceLimiter for MemoryCaps {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> Result<bool> {
        let allowed = self.caps.memory_growing(current, desired, maximum)?;
        if allowed {
            self.largest = self.largest.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> Result<()> {
        self.caps.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> Result<bool> {
        self.caps.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> Result<()> {
        self.caps.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.caps.instances()
    }

    fn tables(&self) -> usize {
        self.caps.tables()
    }

    fn memories(&self) -> usize {
        self.caps.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_near_its_cap_past_three_quarters_and_never_grows_past_it() {
        let mib = 1 << 20;
        let mut caps = MemoryCaps::new(32 * mib);
        assert!(caps.memory_growing(0, 24 * mib, None).unwrap());
        assert!(!caps.near_cap(), "exactly three quarters");
        assert!(!caps.memory_growing(24 * mib, 33 * mib, None).unwrap(), "over the cap");
        assert!(!caps.near_cap(), "a refused growth does not count");
        assert!(caps.memory_growing(24 * mib, 25 * mib, None).unwrap());
        assert!(caps.near_cap());
    }
}
