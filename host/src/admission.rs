//! Connection admission against `server.max_connections`: each admitted connection owns a
//! permit that frees its slot when dropped, so no path (refusal, error, panic, timeout) can
//! leak the count. The permit also carries the connection's place in its client address's
//! count (`addresses`).

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::addresses::{Counts, Hold};

/// The node's connection slots, and the address counts an admitted connection keeps its
/// place in.
pub(crate) struct Admission(Arc<Shared>);

struct Shared {
    /// `None` when connections are unlimited.
    slots: Option<Semaphore>,
    counts: Counts,
}

/// One admitted connection's slot, held for the connection's lifetime. Kept to one pointer
/// and a key: every byte here is paid once per idle connection.
pub(crate) struct Admitted {
    /// Holds one of `shared.slots` when connections are limited.
    shared: Arc<Shared>,
    /// The connection's place in its client address's count.
    address: Option<IpAddr>,
}

impl Admission {
    /// `max = 0` admits every connection.
    pub(crate) fn new(max: usize, counts: Counts) -> Self {
        let slots = (max > 0).then(|| Semaphore::new(max.min(Semaphore::MAX_PERMITS)));
        Self(Arc::new(Shared { slots, counts }))
    }

    /// A slot, or `None` when every slot is taken.
    pub(crate) fn try_admit(&self) -> Option<Admitted> {
        if let Some(slots) = &self.0.slots {
            slots.try_acquire().ok()?.forget();
        }
        Some(Admitted { shared: self.0.clone(), address: None })
    }
}

impl Admitted {
    /// Keeps `address` (a place in the client address's count) for as long as the
    /// connection; a connection holds at most one.
    pub(crate) fn holding(mut self, address: Option<Hold>) -> Self {
        if let Some(hold) = address {
            debug_assert!(self.address.is_none(), "a connection counts once per address");
            self.address = Some(hold.into_key());
        }
        self
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(slots) = &self.shared.slots {
            slots.add_permits(1);
        }
        if let Some(key) = self.address {
            self.shared.counts.release(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addresses::Addresses;
    use crate::config::AddressLimits;

    fn counts() -> Counts {
        Addresses::new(AddressLimits::default(), 0).counts()
    }

    #[test]
    fn slots_come_back_when_permits_drop() {
        let admission = Admission::new(2, counts());
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
        let admission = Admission::new(0, counts());
        let held: Vec<_> = (0..10_000).map(|_| admission.try_admit().unwrap()).collect();
        assert_eq!(held.len(), 10_000);
    }

    #[test]
    fn a_panicking_holder_frees_its_slot() {
        let admission = Admission::new(1, counts());
        let permit = admission.try_admit().unwrap();
        let result = std::thread::spawn(move || {
            let _held = permit;
            panic!("connection task panicked");
        })
        .join();
        assert!(result.is_err());
        assert!(admission.try_admit().is_some());
    }

    #[test]
    fn an_admitted_connection_keeps_its_address_place() {
        let addresses = Addresses::new(AddressLimits { max_connections: 1, ..AddressLimits::default() }, 0);
        let admission = Admission::new(0, addresses.counts());
        let peer = "10.0.0.1".parse().unwrap();
        let accepted = addresses.accept(peer).unwrap();
        let admitted = admission.try_admit().unwrap().holding(accepted.hold);
        assert!(addresses.accept(peer).is_err());
        drop(admitted);
        assert!(addresses.accept(peer).is_ok());
    }
}
