//! Presence on one node: the local hub is the whole truth. For tenants whose webhooks want
//! presence transitions, it also follows each user's connections (and each channel's
//! subscriptions): `user.online` (`channel.occupied`) when the first opens, `user.offline`
//! (`channel.vacated`) once the last has been closed for `broker.presence_debounce` with
//! none opened meanwhile (a quick reconnect is neither).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::backend::presence::{Member, Presence, PresenceError, Status};
use crate::backend::{BoxFuture, LocalDelivery};
use crate::tenant::Tenant;
use crate::webhook::{Notice, Webhooks};

/// Reads connection counts from the hub; follows users and channels for webhooks.
pub(crate) struct MemoryPresence {
    local: Arc<dyn LocalDelivery>,
    /// Users and channels of tenants with presence webhooks that have someone, or are about
    /// to be reported as having no one.
    followed: Arc<Followed>,
    debounce: Duration,
}

/// What is followed, by kind, tenant index and name.
type Key = (Member, u32, Box<str>);

/// The users and channels followed for presence webhooks.
struct Followed {
    /// Locked for one update, never across an await.
    members: Mutex<HashMap<Key, Seen>>,
    webhooks: Arc<Webhooks>,
}

/// A followed member's connections (or subscriptions), and a count of their changes: a
/// check for none finds out whether anything happened since it was scheduled.
struct Seen {
    count: u32,
    changes: u64,
}

impl MemoryPresence {
    pub(crate) fn new(local: Arc<dyn LocalDelivery>, webhooks: Arc<Webhooks>, debounce: Duration) -> Self {
        Self { local, followed: Arc::new(Followed { members: Mutex::default(), webhooks }), debounce }
    }

    fn came(&self, tenant: &Arc<Tenant>, member: Member, name: &str) {
        if !self.followed.webhooks.wants(&tenant.id, member.bits()) {
            return;
        }
        let mut members = self.followed.members.lock().expect("presence lock");
        let seen = members.entry((member, tenant.index, name.into())).or_insert(Seen { count: 0, changes: 0 });
        // A member still counted (present, or its leaving not yet reported) is not new.
        let new = seen.changes == 0;
        seen.count += 1;
        seen.changes += 1;
        drop(members);
        if new {
            self.followed.notify(tenant, member, member.kinds().0, name);
        }
    }

    fn left(&self, tenant: &Arc<Tenant>, member: Member, name: &str) {
        if !self.followed.webhooks.wants(&tenant.id, member.bits()) {
            return;
        }
        let key = (member, tenant.index, Box::from(name));
        let mut members = self.followed.members.lock().expect("presence lock");
        let Some(seen) = members.get_mut(&key) else { return };
        seen.count = seen.count.saturating_sub(1);
        seen.changes += 1;
        if seen.count > 0 {
            return;
        }
        let (changes, followed, tenant) = (seen.changes, self.followed.clone(), tenant.clone());
        drop(members);
        let debounce = self.debounce;
        tokio::spawn(async move {
            tokio::time::sleep(debounce).await;
            followed.check_gone(&tenant, key, changes);
        });
    }
}

impl Followed {
    fn notify(&self, tenant: &Tenant, member: Member, kind: crate::webhook::Kind, name: &str) {
        self.webhooks.emit(&tenant.id, Notice::new(kind, json!({ member.field(): name })));
    }

    /// Reports `key` gone if nothing changed since `changes` and its count is none.
    fn check_gone(&self, tenant: &Tenant, key: Key, changes: u64) {
        let mut members = self.members.lock().expect("presence lock");
        if members.get(&key).is_some_and(|s| s.count == 0 && s.changes == changes) {
            members.remove(&key);
            drop(members);
            self.notify(tenant, key.0, key.0.kinds().1, &key.2);
        }
    }
}

impl Presence for MemoryPresence {
    fn connected(&self, tenant: &Arc<Tenant>, user: &str) {
        self.came(tenant, Member::User, user);
    }

    fn disconnected(&self, tenant: &Arc<Tenant>, user: &str) {
        self.left(tenant, Member::User, user);
    }

    fn subscribed(&self, tenant: &Arc<Tenant>, channel: &str) {
        self.came(tenant, Member::Channel, channel);
    }

    fn unsubscribed(&self, tenant: &Arc<Tenant>, channel: &str) {
        self.left(tenant, Member::Channel, channel);
    }

    fn follow(&self, tenant: &Arc<Tenant>, member: Member, counts: Vec<(Box<str>, u32)>) {
        let mut members = self.followed.members.lock().expect("presence lock");
        for (name, count) in counts {
            members.entry((member, tenant.index, name)).or_insert(Seen { count, changes: 1 });
        }
    }

    fn unfollow(&self, tenant: &Arc<Tenant>, member: Member) {
        let mut members = self.followed.members.lock().expect("presence lock");
        members.retain(|(m, t, _), _| !(*m == member && *t == tenant.index));
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
        let webhooks = Arc::new(Webhooks::new(&config, crate::outbound::crypto()));
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
                dialect: crate::protocol::Dialect::Native,
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
