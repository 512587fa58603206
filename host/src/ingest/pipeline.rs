//! The publish pipeline that HTTP publishing and a backend's ingestion (the node as its
//! `Publisher`) share: idempotency keys, the tenant's transform and route plugins, the
//! broker, then the tenant's counters.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::app::App;
use crate::backend::BrokerError;
use crate::backend::idempotency::Claim;
use crate::event::Event;
use crate::plugin::{self, Hook};
use crate::tenant::Tenant;

/// Runs validated `events` of `tenant` through its plugins and hands them to the broker.
/// `Ok` carries the broker's guarantee (see `Broker::publish`) and every event's id, in
/// order: the first event's id for one whose idempotency key was taken (it is not
/// delivered). Events a plugin dropped count as accepted. On `Err`, the keys this call
/// claimed are given back, so a retry is delivered.
pub(crate) async fn publish(
    app: &App,
    tenant: &Arc<Tenant>,
    mut events: Vec<Event>,
) -> Result<Vec<String>, BrokerError> {
    let mut ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let claimed = claim_keys(app, tenant, &mut events, &mut ids).await?;
    let transform = app.plugins.get(&tenant.id, Hook::Transform);
    let route = app.plugins.get(&tenant.id, Hook::Route);
    let events = plugin::hooks::process_events(transform, route, events).await;
    if let Err(e) = app.broker.publish(tenant, &events).await {
        let claims: Vec<Claim<'_>> = claimed.iter().map(|(key, id)| Claim { key, id }).collect();
        app.idempotency.release(&tenant.id, &claims).await;
        return Err(e);
    }
    tenant.metrics.events_published.fetch_add(events.len() as u64, Relaxed);
    Ok(ids)
}

/// Claims the events' idempotency keys; drops the events whose key was taken, giving them
/// the owner's id in `ids`. Returns the keys claimed, with their events' ids.
async fn claim_keys(
    app: &App,
    tenant: &Tenant,
    events: &mut Vec<Event>,
    ids: &mut [String],
) -> Result<Vec<(Box<str>, String)>, BrokerError> {
    let keyed: Vec<usize> = (0..events.len()).filter(|&i| events[i].idempotency_key.is_some()).collect();
    if keyed.is_empty() {
        return Ok(Vec::new());
    }
    let claims: Vec<Claim<'_>> = keyed
        .iter()
        .map(|&i| Claim { key: events[i].idempotency_key.as_deref().expect("keyed"), id: &events[i].id })
        .collect();
    let owners = app.idempotency.claim(&tenant.id, &claims, app.config.server.idempotency_window).await?;
    let mut claimed = Vec::new();
    let mut taken = vec![false; events.len()];
    for (&i, owner) in keyed.iter().zip(owners) {
        match owner {
            Some(first) => {
                ids[i] = first;
                taken[i] = true;
            }
            None => claimed.push((events[i].idempotency_key.clone().expect("keyed"), events[i].id.clone())),
        }
    }
    let duplicates = taken.iter().filter(|t| **t).count();
    if duplicates > 0 {
        tenant.metrics.deduplicated.fetch_add(duplicates as u64, Relaxed);
        let mut taken = taken.into_iter();
        events.retain(|_| !taken.next().expect("one flag per event"));
    }
    Ok(claimed)
}

/// The node as a backend's ingestion consumers see it.
impl crate::backend::ingest::Publisher for crate::app::App {
    fn tenants(&self) -> &crate::tenant::Tenants {
        &self.tenants
    }

    fn parse(&self, body: &[u8]) -> Result<Event, String> {
        super::parse_one(&self.ids, body).map_err(|e| e.to_string())
    }

    fn publish<'a>(
        &'a self,
        tenant: &'a std::sync::Arc<crate::tenant::Tenant>,
        events: Vec<Event>,
    ) -> crate::backend::BoxFuture<'a, Result<(), crate::backend::BrokerError>> {
        Box::pin(async move { publish(self, tenant, events).await.map(drop) })
    }

    fn drain(&self) -> &crate::drain::Drain {
        &self.drain
    }
}
