//! Presence on one node: the local hub is the whole truth. For tenants whose webhooks want
//! `user.online` or `user.offline`, it also follows each user's connections: `online` when
//! the first opens, `offline` once the last has been closed for `broker.presence_debounce`
//! with none opened meanwhile (a quick reconnect is neither).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::backend::presence::{Presence, PresenceError, Status};
use crate::backend::{BoxFuture, LocalDelivery};
use crate::tenant::Tenant;
use crate::webhook::{Kind, Notice, Webhooks};

/// Reads connection counts from the hub; follows users for presence webhooks.
pub(crate) struct MemoryPresence {
    local: Arc<dyn LocalDelivery>,
    /// Users of tenants with presence webhooks that are online or about to go offline.
    followed: Arc<Followed>,
    debounce: Duration,
}

/// The users followed for presence webhooks, by tenant index and user.
struct Followed {
    /// Locked for one update, never across an await.
    users: Mutex<HashMap<(u32, Box<str>), Seen>>,
    webhooks: Arc<Webhooks>,
}

/// A followed user's connections, and a count of their changes: an offline check finds
/// out whether anything happened since it was scheduled.
struct Seen {
    connections: u32,
    changes: u64,
}

impl MemoryPresence {
    pub(crate) fn new(local: Arc<dyn LocalDelivery>, webhooks: Arc<Webhooks>, debounce: Duration) -> Self {
        Self { local, followed: Arc::new(Followed { users: Mutex::default(), webhooks }), debounce }
    }

    fn followed(&self, tenant: &Tenant) -> bool {
        self.followed.webhooks.wants(&tenant.id, Kind::UserOnline.bit() | Kind::UserOffline.bit())
    }
}

impl Followed {
    fn notify(&self, tenant: &Tenant, kind: Kind, user: &str) {
        self.webhooks.emit(&tenant.id, Notice::new(kind, json!({"user": user})));
    }

    /// Reports `user` offline if nothing changed since `changes` and no connection is open.
    fn check_offline(&self, tenant: &Tenant, user: &str, changes: u64) {
        let key = (tenant.index, Box::from(user));
        let mut users = self.users.lock().expect("presence lock");
        if users.get(&key).is_some_and(|s| s.connections == 0 && s.changes == changes) {
            users.remove(&key);
            drop(users);
            self.notify(tenant, Kind::UserOffline, user);
        }
    }
}

impl Presence for MemoryPresence {
    fn connected(&self, tenant: &Arc<Tenant>, user: &str) {
        if !self.followed(tenant) {
            return;
        }
        let mut users = self.followed.users.lock().expect("presence lock");
        let seen = users.entry((tenant.index, user.into())).or_insert(Seen { connections: 0, changes: 0 });
        // A user still counted (online, or offline not yet reported) is not new.
        let new = seen.changes == 0;
        seen.connections += 1;
        seen.changes += 1;
        drop(users);
        if new {
            self.followed.notify(tenant, Kind::UserOnline, user);
        }
    }

    fn disconnected(&self, tenant: &Arc<Tenant>, user: &str) {
        if !self.followed(tenant) {
            return;
        }
        let mut users = self.followed.users.lock().expect("presence lock");
        let Some(seen) = users.get_mut(&(tenant.index, Box::from(user))) else { return };
        seen.connections = seen.connections.saturating_sub(1);
        seen.changes += 1;
        if seen.connections > 0 {
            return;
        }
        let (changes, followed, tenant, user) = (seen.changes, self.followed.clone(), tenant.clone(), user.to_owned());
        drop(users);
        let debounce = self.debounce;
        tokio::spawn(async move {
            tokio::time::sleep(debounce).await;
            followed.check_offline(&tenant, &user, changes);
        });
    }

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
        // The host's own provider sits above the backends; no request is made here.
        #[allow(deprecated)]
        let webhooks = Arc::new(Webhooks::new(&config, rustls::crypto::ring::default_provider()));
        let presence = MemoryPresence::new(hub.clone(), webhooks, Duration::from_secs(5));
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
