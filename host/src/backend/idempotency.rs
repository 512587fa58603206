//! Idempotency keys: a publisher may retry an event carrying an `idempotency_key` (a
//! timeout, a lost answer, an ingest entry claimed after its reader died) and the event is
//! delivered once. The first event with a key claims it for the window; later ones with
//! the same key learn the first one's id and are not delivered.

use std::time::Duration;

use super::{BoxFuture, BrokerError};

/// One key to claim for the event `id`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim<'a> {
    pub key: &'a str,
    pub id: &'a str,
}

/// Remembers each tenant's keys for a window. Kept where the broker keeps its state (one
/// node's memory, or the cluster's Redis), so it fails as the broker does: a publish whose
/// keys cannot be claimed is refused, and its publisher retries.
///
/// Contract:
/// - `claim` is atomic per key across every node sharing the store: of any number of
///   claims of one key within `window`, exactly one gets `None` (it owns the key); every
///   other gets `Some` of the owner's id. Claims in one call are made in order, so a key
///   twice in one call is claimed by the first;
/// - keys are per tenant: two tenants never see each other's;
/// - `release` gives a key back only if `id` still owns it (the publish failed, so a retry
///   must be delivered);
/// - a key is forgotten `window` after its claim, at the latest by then plus the store's
///   expiry granularity.
pub(crate) trait Idempotency: Send + Sync + 'static {
    fn claim<'a>(
        &'a self,
        tenant: &'a str,
        claims: &'a [Claim<'a>],
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, BrokerError>>;

    fn release<'a>(&'a self, tenant: &'a str, claims: &'a [Claim<'a>]) -> BoxFuture<'a, ()>;
}
