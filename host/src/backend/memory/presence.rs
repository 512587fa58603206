//! Presence on one node: the local hub is the whole truth.

use std::sync::Arc;

use crate::backend::presence::{Presence, PresenceError, Status};
use crate::backend::{BoxFuture, LocalDelivery};
use crate::tenant::Tenant;

/// Reads connection counts from the hub; nothing to keep.
pub(crate) struct MemoryPresence {
    local: Arc<dyn LocalDelivery>,
}

impl MemoryPresence {
    pub(crate) fn new(local: Arc<dyn LocalDelivery>) -> Self {
        Self { local }
    }
}

impl Presence for MemoryPresence {
    fn connected(&self, _: &Arc<Tenant>, _: &str) {}

    fn disconnected(&self, _: &Arc<Tenant>, _: &str) {}

    fn status<'a>(&'a self, tenant: &'a Tenant, user: &'a str) -> BoxFuture<'a, Result<Status, PresenceError>> {
        let connections = self.local.user_connections(tenant, user) as u64;
        Box::pin(async move { Ok(Status { connections }) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::fanout::QueueLimits;
    use crate::hub::{Conn, Hub};
    use crate::tenant::Tenants;

    #[tokio::test]
    async fn counts_a_users_connections_on_this_node() {
        let config = Config::from_toml("[tenants.a]\npublish_key = \"a-key-123\"\n", "test", []).unwrap();
        let tenants = Tenants::from_config(&config);
        let tenant = &tenants.get("a").unwrap();
        let hub = Arc::new(Hub::new(QueueLimits { frames: 10, bytes: 1 << 16 }));
        let presence = MemoryPresence::new(hub.clone());
        let device = || {
            Arc::new(Conn {
                id: hub.next_conn_id(),
                segment: crate::segment::Segment::empty(),
                tenant: tenant.clone(),
                user: "alice".into(),
                outbox: Default::default(),
                gates: Default::default(),
                subscriptions: Default::default(),
                deflate: false,
            })
        };
        let (phone, laptop) = (device(), device());
        assert_eq!(presence.status(tenant, "alice").await.unwrap(), Status { connections: 0 });
        hub.register(&phone);
        hub.register(&laptop);
        assert_eq!(presence.status(tenant, "alice").await.unwrap(), Status { connections: 2 });
        hub.unregister(&phone, []);
        assert_eq!(presence.status(tenant, "alice").await.unwrap(), Status { connections: 1 });
        assert_eq!(presence.status(tenant, "bob").await.unwrap(), Status { connections: 0 });
    }
}
