//! Connection admission against `server.max_connections`: each admitted connection owns a
//! permit that frees its slot when dropped, so no path (refusal, error, panic, timeout) can
//! leak the count. The permit also carries the connection's place in its client address's
//! count (`addresses`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::addresses::Hold;

/// The node's connection slots; `None` when connections are unlimited.
pub(crate) struct Admission(Option<Arc<Semaphore>>);

/// One admitted connection's slot, held for the connection's lifetime.
pub(crate) struct Admitted {
    _slot: Option<OwnedSemaphorePermit>,
    _address: Option<Hold>,
}

impl Admission {
    /// `max = 0` admits every connection.
    pub(crate) fn new(max: usize) -> Self {
        Self((max > 0).then(|| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)))))
    }

    /// A slot, or `None` when every slot is taken.
    pub(crate) fn try_admit(&self) -> Option<Admitted> {
        match &self.0 {
            None => Some(Admitted { _slot: None, _address: None }),
            Some(slots) => slots.clone().try_acquire_owned().ok().map(|p| Admitted { _slot: Some(p), _address: None }),
        }
    }
}

impl Admitted {
    /// Keeps `address` (the client address's count) for as long as the connection.
    pub(crate) fn holding(self, address: Hold) -> Self {
        Self { _address: Some(address), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_back_when_permits_drop() {
        let admission = Admission::new(2);
        let a = admission.try_admit().unwrap();
        let b = admission.try_admit().unwrap();
        assert!(admission.try_admit().is_none());
        drop(a);
        let c = admission.try_admit().unwrap();
        assert!(admission.try_admit().is_none());
        drop((b, c));
        assert!(admission.try_admit().is_some());
    }

    #[test]
    fn zero_means_unlimited() {
        let admission = Admission::new(0);
        let held: Vec<_> = (0..10_000).map(|_| admission.try_admit().unwrap()).collect();
        assert_eq!(held.len(), 10_000);
    }

    #[test]
    fn a_panicking_holder_frees_its_slot() {
        let admission = Admission::new(1);
        let permit = admission.try_admit().unwrap();
        let result = std::thread::spawn(move || {
            let _held = permit;
            panic!("connection task panicked");
        })
        .join();
        assert!(result.is_err());
        assert!(admission.try_admit().is_some());
    }
}
