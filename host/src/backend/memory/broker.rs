//! In-process broker: publishing is delivery into the local hub, through the stream history
//! when the tenant keeps one (positions, resume).

use std::sync::Arc;

use super::history::MemoryHistory;
use crate::backend::history::Limits;
use crate::backend::{BoxFuture, Broker, BrokerError, LocalDelivery};
use crate::event::Event;
use crate::hub::Routing;
use crate::tenant::Tenant;

/// Delivers straight into the local hub; the publisher waits for the fan-out, which is what
/// bounds ingest when fan-out falls behind.
pub(crate) struct MemoryBroker {
    local: Arc<dyn LocalDelivery>,
    history: Arc<MemoryHistory>,
}

impl MemoryBroker {
    pub(crate) fn new(local: Arc<dyn LocalDelivery>, history: Arc<MemoryHistory>) -> Self {
        Self { local, history }
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(&'a self, tenant: &'a Arc<Tenant>, events: &'a [Event]) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let limits = Limits::from(tenant.config.history);
            for event in events {
                if !tenant.config.history.enabled() {
                    self.local.deliver(tenant, event);
                    continue;
                }
                for target in event.targets() {
                    let filter = event.filter.as_ref();
                    self.history.append(
                        tenant.index,
                        target,
                        limits,
                        filter,
                        |position| event.encode_for(target, Some(position)),
                        |frame, position| {
                            let latency = event.received_at.elapsed();
                            let filter = filter.map(|f| &**f);
                            let routing =
                                Routing { filter, position: Some(position), delta: event.delta, except: event.except };
                            self.local.deliver_frame(tenant, target, frame, routing, latency);
                        },
                    );
                }
            }
            Ok(())
        })
    }

    fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::config::Config;
    use crate::stream::Target;
    use crate::tenant::Tenants;

    /// Records what the broker hands to local connections.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl LocalDelivery for Recorder {
        fn deliver(&self, _: &Tenant, event: &Event) {
            self.0.lock().unwrap().push(format!("event {}", event.name));
        }

        fn deliver_frame(&self, _: &Tenant, target: Target<'_>, _: &Bytes, routing: Routing<'_>, _: Duration) {
            let offset = routing.position.map(|p| p.offset);
            self.0.lock().unwrap().push(format!("frame {target:?} {offset:?}"));
        }

        fn resync(&self, _: Duration) -> usize {
            0
        }

        fn resync_stream(&self, _: &Tenant, _: Target<'_>, _: Duration) -> usize {
            0
        }

        fn user_connections(&self, _: &Tenant, _: &str) -> usize {
            0
        }
    }

    fn tenants() -> Arc<Tenants> {
        let toml = "[tenants.kept]\npublish_key = \"key-1234\"\nhistory = { size = 10 }\n\
                    [tenants.live]\npublish_key = \"key-5678\"\nhistory = { size = 0 }\n";
        Arc::new(Tenants::from_config(&Config::from_toml(toml, "test", []).unwrap()))
    }

    #[tokio::test]
    async fn events_reach_local_connections_through_history_when_the_tenant_keeps_one() {
        let recorder = Arc::new(Recorder::default());
        let broker = MemoryBroker::new(recorder.clone(), Arc::new(MemoryHistory::default()));
        let tenants = tenants();
        let two = Event::sample("two", &["ann"], &["news"]);
        let (kept, live) = (tenants.get("kept").unwrap(), tenants.get("live").unwrap());
        broker.publish(&kept, &[two]).await.unwrap();
        broker.publish(&kept, &[Event::sample("again", &["ann"], &[])]).await.unwrap();
        broker.publish(&live, &[Event::sample("live", &["ann"], &[])]).await.unwrap();
        let seen = recorder.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                r#"frame User("ann") Some(1)"#,
                r#"frame Channel("news") Some(1)"#,
                r#"frame User("ann") Some(2)"#,
                "event live",
            ]
        );
    }
}
