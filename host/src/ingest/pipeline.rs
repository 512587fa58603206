//! The publish pipeline that HTTP publishing and a backend's ingestion (the node as its
//! `Publisher`) share: idempotency keys, the tenant's transform and route plugins, the
//! broker, then the tenant's counters.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::app::Pipeline;
use crate::backend::BrokerError;
use crate::backend::idempotency::Claim;
use crate::event::Event;
use crate::plugin::hooks::Refusal;
use crate::plugin::{self, Hook};
use crate::tenant::Tenant;

/// What a publish did: every event's id, in order (the first event's id for one whose
/// idempotency key was taken: it is not delivered), and the events a plugin dropped (they
/// count as accepted).
pub(crate) struct Published {
    pub ids: Vec<String>,
    pub refused: Vec<Refusal>,
}

/// Runs validated `events` of `tenant` through its plugins and hands them to the broker.
/// `Ok` carries the broker's guarantee (see `Broker::publish`). On `Err`, the keys this
/// call claimed are given back, so a retry is delivered.
pub(crate) async fn publish(
    pipeline: &Pipeline,
    tenant: &Arc<Tenant>,
    mut events: Vec<Event>,
) -> Result<Published, BrokerError> {
    let mut ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let claimed = claim_keys(pipeline, tenant, &mut events, &mut ids).await?;
    let transform = pipeline.plugins.get(&tenant.id, Hook::Transform);
    let route = pipeline.plugins.get(&tenant.id, Hook::Route);
    let (events, refused) = plugin::hooks::process_events(transform, route, events).await;
    if let Err(e) = pipeline.broker.publish(tenant, &events).await {
        let claims: Vec<Claim<'_>> = claimed.iter().map(|(key, id)| Claim { key, id }).collect();
        pipeline.idempotency.release(&tenant.id, &claims).await;
        return Err(e);
    }
    tenant.metrics.events_published.fetch_add(events.len() as u64, Relaxed);
    pipeline.push.schedule(tenant, &events).await;
    Ok(Published { ids, refused })
}

/// Claims the events' idempotency keys; drops the events whose key was taken, giving them
/// the owner's id in `ids`. Returns the keys claimed, with their events' ids.
async fn claim_keys(
    pipeline: &Pipeline,
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
    let owners = pipeline.idempotency.claim(&tenant.id, &claims, pipeline.idempotency_window).await?;
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
        self.tenants()
    }

    fn parse(&self, body: &[u8]) -> Result<Event, String> {
        super::parse_one(self.ids(), body).map_err(|e| e.to_string())
    }

    fn publish<'a>(
        &'a self,
        tenant: &'a std::sync::Arc<crate::tenant::Tenant>,
        events: Vec<Event>,
    ) -> crate::backend::BoxFuture<'a, Result<Vec<Refusal>, crate::backend::BrokerError>> {
        Box::pin(async move { publish(self.pipeline(), tenant, events).await.map(|p| p.refused) })
    }

    fn drain(&self) -> &crate::drain::Drain {
        &self.lifecycle().drain
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::app::App;
    use crate::backend::{BackendError, BoxFuture, Broker};
    use crate::config::Config;

    const CONFIG: &str = "[tenants.t]\npublish_key = \"key-12345\"\nhistory = { size = 10 }\n";

    async fn app() -> App {
        App::new(Config::from_toml(CONFIG, "test", []).unwrap()).await.unwrap().0
    }

    fn event(app: &App, body: &str) -> Event {
        super::super::parse_one(app.ids(), body.as_bytes()).unwrap()
    }

    /// How many events the user stream of `ann` holds.
    async fn delivered(app: &App) -> u64 {
        app.history().cursor(&app.tenants().get("t").unwrap(), "ann").await.unwrap().offset
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_is_delivered_once_and_answers_the_first_id() {
        let app = app().await;
        let tenant = app.tenants().get("t").unwrap();
        let body = r#"{"users": ["ann"], "event": "paid", "idempotency_key": "order-1"}"#;
        let first = publish(app.pipeline(), &tenant, vec![event(&app, body)]).await.unwrap().ids;
        let again = publish(
            app.pipeline(),
            &tenant,
            vec![event(&app, body), event(&app, r#"{"users": ["ann"], "event": "new"}"#)],
        )
        .await
        .unwrap()
        .ids;
        assert_eq!(again[0], first[0], "the first event's id");
        assert_ne!(again[1], first[0]);
        assert_eq!(delivered(&app).await, 2);
        assert_eq!(tenant.metrics.deduplicated.load(Relaxed), 1);
        assert_eq!(tenant.metrics.events_published.load(Relaxed), 2);
    }

    /// A broker that refuses while `down` is set, and otherwise hands on to the real one.
    struct Flaky {
        down: AtomicBool,
        inner: Arc<dyn Broker>,
    }

    impl Broker for Flaky {
        fn publish<'a>(
            &'a self,
            tenant: &'a Arc<Tenant>,
            events: &'a [Event],
        ) -> BoxFuture<'a, Result<(), BrokerError>> {
            if self.down.load(Relaxed) {
                let after = std::time::Duration::from_secs(1);
                return Box::pin(async move { Err(BackendError::Timeout { backend: "test", after }.into()) });
            }
            self.inner.publish(tenant, events)
        }

        fn healthy(&self) -> bool {
            !self.down.load(Relaxed)
        }
    }

    #[tokio::test]
    async fn a_publish_the_broker_refused_gives_its_keys_back_so_a_retry_is_delivered() {
        let app = app().await;
        let flaky = Arc::new(Flaky { down: AtomicBool::new(true), inner: app.pipeline().broker.clone() });
        let pipeline = Pipeline { broker: flaky.clone(), ..app.pipeline().clone() };
        let tenant = app.tenants().get("t").unwrap();
        let body = r#"{"users": ["ann"], "event": "paid", "idempotency_key": "order-2"}"#;
        assert!(publish(&pipeline, &tenant, vec![event(&app, body)]).await.is_err());
        flaky.down.store(false, Relaxed);
        publish(&pipeline, &tenant, vec![event(&app, body)]).await.unwrap();
        assert_eq!(delivered(&app).await, 1, "the retry was not taken for a duplicate");
        assert_eq!(tenant.metrics.events_published.load(Relaxed), 1);
    }
}
