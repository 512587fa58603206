//! The publish pipeline that HTTP publishing and both Redis ingest paths share: the
//! tenant's transform and route plugins, the broker, then the tenant's counters.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::app::App;
use crate::backend::BrokerError;
use crate::event::Event;
use crate::plugin::{self, Hook};
use crate::tenant::Tenant;

/// Runs validated `events` of `tenant` through its plugins and hands them to the broker.
/// `Ok` carries the broker's guarantee (see `Broker::publish`); events a plugin dropped
/// count as accepted.
pub(crate) async fn publish(app: &App, tenant: &Arc<Tenant>, events: Vec<Event>) -> Result<(), BrokerError> {
    let transform = app.plugins.get(&tenant.id, Hook::Transform);
    let route = app.plugins.get(&tenant.id, Hook::Route);
    let events = plugin::hooks::process_events(transform, route, events).await;
    app.broker.publish(tenant, &events).await?;
    tenant.metrics.events_published.fetch_add(events.len() as u64, Relaxed);
    Ok(())
}
