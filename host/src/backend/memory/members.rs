//! Presence channel members on one node, in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::value::RawValue;

use crate::backend::BoxFuture;
use crate::backend::members::{Joined, MAX_MEMBERS, Member, Members};
use crate::backend::presence::PresenceError;
use crate::tenant::Tenant;

/// A channel's members: each user's connection count and `user_info`.
type Channel = BTreeMap<Box<str>, (u32, Box<RawValue>)>;

#[derive(Default)]
pub(crate) struct MemoryMembers {
    /// Locked for one join or leave, never across an await.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By tenant index and channel.
    channels: HashMap<(u32, Box<str>), Channel>,
    /// The user each membership joined as, by tenant index, channel and connection.
    conns: HashMap<(u32, Box<str>, u64), Box<str>>,
}

fn listed(channel: &Channel) -> Vec<Member> {
    channel.iter().map(|(user, (_, info))| (user.clone(), info.clone())).collect()
}

impl State {
    fn join(&mut self, tenant: &Tenant, channel: &str, conn: u64, (user, info): (&str, &RawValue)) -> Joined {
        let key = (tenant.index, Box::<str>::from(channel));
        let members = self.channels.entry(key.clone()).or_default();
        if !members.contains_key(user) && members.len() >= MAX_MEMBERS {
            return Joined::Full;
        }
        let entry = members.entry(user.into()).or_insert_with(|| (0, info.to_owned()));
        entry.0 += 1;
        entry.1 = info.to_owned();
        let first = entry.0 == 1;
        let members = listed(members);
        self.conns.insert((key.0, key.1, conn), user.into());
        Joined::In { first, members }
    }

    fn leave(&mut self, tenant: &Tenant, channel: &str, conn: u64) -> Option<Box<str>> {
        let user = self.conns.remove(&(tenant.index, channel.into(), conn))?;
        let key = (tenant.index, Box::<str>::from(channel));
        let members = self.channels.get_mut(&key)?;
        let count = &mut members.get_mut(&user)?.0;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        members.remove(&user);
        if members.is_empty() {
            self.channels.remove(&key);
        }
        Some(user)
    }
}

impl Members for MemoryMembers {
    fn join<'a>(
        &'a self,
        tenant: &'a Tenant,
        channel: &'a str,
        conn: u64,
        member: (&'a str, &'a RawValue),
    ) -> BoxFuture<'a, Result<Joined, PresenceError>> {
        let joined = self.state.lock().expect("members lock").join(tenant, channel, conn, member);
        Box::pin(async { Ok(joined) })
    }

    fn leave<'a>(
        &'a self,
        tenant: &'a Tenant,
        channel: &'a str,
        conn: u64,
    ) -> BoxFuture<'a, Result<Option<Box<str>>, PresenceError>> {
        let left = self.state.lock().expect("members lock").leave(tenant, channel, conn);
        Box::pin(async { Ok(left) })
    }

    fn member_of(&self, tenant: &Tenant, channel: &str, conn: u64) -> Option<Box<str>> {
        self.state.lock().expect("members lock").conns.get(&(tenant.index, channel.into(), conn)).cloned()
    }

    fn list<'a>(&'a self, tenant: &'a Tenant, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, PresenceError>> {
        let state = self.state.lock().expect("members lock");
        let list = state.channels.get(&(tenant.index, channel.into())).map(listed).unwrap_or_default();
        Box::pin(async { Ok(list) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::tenant::Tenants;

    #[tokio::test]
    async fn a_user_arrives_with_its_first_connection_and_leaves_with_its_last() {
        let config = Config::from_toml("[tenants.a]\npublish_key = \"a-key-123\"\n", "test", []).unwrap();
        let tenants = Tenants::from_config(&config);
        let t = &*tenants.get("a").unwrap();
        let m = MemoryMembers::default();
        let info = RawValue::from_string(r#"{"name":"Ann"}"#.into()).unwrap();
        let joined = m.join(t, "presence-a", 1, ("ann", &info)).await.unwrap();
        assert!(matches!(joined, Joined::In { first: true, ref members } if members.len() == 1));
        assert!(matches!(m.join(t, "presence-a", 2, ("ann", &info)).await.unwrap(), Joined::In { first: false, .. }));
        assert!(matches!(m.join(t, "presence-a", 3, ("bob", &info)).await.unwrap(), Joined::In { first: true, .. }));
        assert_eq!(m.list(t, "presence-a").await.unwrap().len(), 2);
        assert_eq!(m.leave(t, "presence-a", 1).await.unwrap(), None);
        assert_eq!(m.leave(t, "presence-a", 2).await.unwrap().as_deref(), Some("ann"));
        assert_eq!(m.leave(t, "presence-a", 2).await.unwrap(), None, "a second leave changes nothing");
        for i in 0..MAX_MEMBERS as u64 - 1 {
            let user = format!("u{i}");
            assert!(matches!(m.join(t, "presence-a", 10 + i, (&user, &info)).await.unwrap(), Joined::In { .. }));
        }
        assert!(matches!(m.join(t, "presence-a", 999, ("one-too-many", &info)).await.unwrap(), Joined::Full));
        assert!(matches!(
            m.join(t, "presence-a", 1000, ("bob", &info)).await.unwrap(),
            Joined::In { first: false, .. }
        ));
    }
}
