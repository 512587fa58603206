//! `connection.refused`: every `webhooks.refusals_every`, each node sums up the connects it
//! refused for each tenant whose webhooks want them since its last such event, by reason, in
//! one event (none when it refused nothing).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Kind, Notice, Webhooks};
use crate::metrics::HandshakeFailure;
use crate::tenant::Tenants;

/// Counts by reason, as [`crate::metrics::TenantMetrics::handshake_failures`] reads them.
type Counts = [u64; HandshakeFailure::ALL.len()];

/// Runs for as long as the node does.
pub(crate) async fn sum_up_refusals(webhooks: Arc<Webhooks>, tenants: Arc<Tenants>, node: Arc<str>) {
    let every = webhooks.config.refusals_every;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = crate::clock::now_millis();
    // Counts at the last event, and since when, by tenant index. A tenant's counters start at
    // zero with the node (or the tenant), so the first event of a tenant counts from the
    // node's start.
    let mut last: HashMap<u32, (Counts, u64)> = HashMap::new();
    loop {
        tick.tick().await;
        let until = crate::clock::now_millis();
        let wanting = webhooks.tenants_wanting(Kind::ConnectionRefused.bit());
        for tenant in wanting.iter().filter_map(|id| tenants.get(id)) {
            let now = tenant.metrics.handshake_failures();
            let (before, from) =
                last.get(&tenant.index).copied().unwrap_or(([0; HandshakeFailure::ALL.len()], started));
            if let Some(refused) = refused_since(&before, &now) {
                let data = json!({"node": &*node, "from": from, "until": until, "refused": refused});
                webhooks.emit(&tenant.id, Notice::new(Kind::ConnectionRefused, data));
                last.insert(tenant.index, (now, until));
            }
        }
    }
}

/// The refusals between two readings by reason name, if any.
fn refused_since(before: &Counts, now: &Counts) -> Option<Value> {
    let by_reason: Map<String, Value> = HandshakeFailure::ALL
        .iter()
        .zip(before.iter().zip(now))
        .filter(|(_, (b, n))| n > b)
        .map(|(why, (b, n))| (why.as_str().to_owned(), json!(n - b)))
        .collect();
    (!by_reason.is_empty()).then_some(Value::Object(by_reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reasons_that_grew_are_told() {
        let mut before = [0; HandshakeFailure::ALL.len()];
        let mut now = before;
        assert_eq!(refused_since(&before, &now), None);
        now[HandshakeFailure::Unauthorized as usize] = 3;
        now[HandshakeFailure::TenantConnections as usize] = 1;
        before[HandshakeFailure::TenantConnections as usize] = 1;
        assert_eq!(refused_since(&before, &now), Some(json!({"unauthorized": 3})));
    }
}
