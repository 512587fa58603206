//! Devices and users' push state in this node's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::backend::BoxFuture;
use crate::backend::devices::{DeviceError, DeviceLimits, Devices, HOUR_MS, MAX_SENT, Sent};
use crate::device::{Device, Preferences};

#[derive(Default)]
pub(crate) struct MemoryDevices {
    /// Held for one call's check and change, never across an await.
    tenants: Mutex<HashMap<String, TenantDevices>>,
}

#[derive(Default)]
struct TenantDevices {
    users: HashMap<String, UserPush>,
    /// Devices over all users, for `limits.max_devices`.
    count: usize,
}

#[derive(Default)]
struct UserPush {
    devices: Vec<Device>,
    preferences: Preferences,
    /// When pushes were counted, the last hour's.
    recent: VecDeque<u64>,
    /// Sent pushes not yet read, each with when it lapses.
    sent: Vec<(Sent, u64)>,
}

impl MemoryDevices {
    /// Runs `f` on the user's state (made when missing), dropping it when left empty.
    fn with_user<T>(&self, tenant: &str, user: &str, f: impl FnOnce(&mut UserPush, &mut usize) -> T) -> T {
        let mut tenants = self.tenants.lock().expect("devices lock");
        let t = tenants.entry(tenant.to_owned()).or_default();
        let state = t.users.entry(user.to_owned()).or_default();
        let out = f(state, &mut t.count);
        let empty = state.devices.is_empty()
            && state.preferences == Preferences::default()
            && state.recent.is_empty()
            && state.sent.is_empty();
        if empty {
            t.users.remove(user);
        }
        out
    }

    fn register_now(&self, tenant: &str, user: &str, device: &Device, limits: DeviceLimits) -> Result<(), DeviceError> {
        self.with_user(tenant, user, |u, count| {
            if let Some(i) = u.devices.iter().position(|d| d.id == device.id) {
                u.devices.remove(i);
                u.devices.push(device.clone());
                return Ok(());
            }
            if u.devices.len() >= limits.per_user {
                return Err(DeviceError::UserFull(u.devices.len()));
            }
            if limits.per_tenant > 0 && *count >= limits.per_tenant {
                return Err(DeviceError::TenantFull(*count));
            }
            u.devices.push(device.clone());
            *count += 1;
            Ok(())
        })
    }

    fn remove_now(&self, tenant: &str, user: &str, id: &str) -> bool {
        self.with_user(tenant, user, |u, count| {
            let before = u.devices.len();
            u.devices.retain(|d| d.id != id);
            let removed = u.devices.len() < before;
            *count -= usize::from(removed);
            removed
        })
    }
}

/// An answer already known.
fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Devices for MemoryDevices {
    fn register<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        device: &'a Device,
        limits: DeviceLimits,
    ) -> BoxFuture<'a, Result<(), DeviceError>> {
        ready(self.register_now(tenant, user, device, limits))
    }

    fn list<'a>(&'a self, tenant: &'a str, user: &'a str) -> BoxFuture<'a, Result<Vec<Device>, DeviceError>> {
        ready(Ok(self.with_user(tenant, user, |u, _| u.devices.clone())))
    }

    fn remove<'a>(&'a self, tenant: &'a str, user: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, DeviceError>> {
        ready(Ok(self.remove_now(tenant, user, id)))
    }

    fn preferences<'a>(&'a self, tenant: &'a str, user: &'a str) -> BoxFuture<'a, Result<Preferences, DeviceError>> {
        ready(Ok(self.with_user(tenant, user, |u, _| u.preferences.clone())))
    }

    fn set_preferences<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        preferences: &'a Preferences,
    ) -> BoxFuture<'a, Result<(), DeviceError>> {
        self.with_user(tenant, user, |u, _| u.preferences = preferences.clone());
        ready(Ok(()))
    }

    fn count_push<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        now: u64,
        max: u32,
    ) -> BoxFuture<'a, Result<bool, DeviceError>> {
        let counted = self.with_user(tenant, user, |u, _| {
            while u.recent.front().is_some_and(|&at| at + HOUR_MS <= now) {
                u.recent.pop_front();
            }
            let room = u.recent.len() < max as usize;
            if room {
                u.recent.push_back(now);
            }
            room
        });
        ready(Ok(counted))
    }

    fn record_sent<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        sent: &'a Sent,
        until: u64,
    ) -> BoxFuture<'a, Result<(), DeviceError>> {
        let now = crate::clock::now_millis();
        self.with_user(tenant, user, |u, _| {
            u.sent.retain(|(_, lapses)| *lapses > now);
            u.sent.push((sent.clone(), until));
            let excess = u.sent.len().saturating_sub(MAX_SENT);
            u.sent.drain(..excess);
        });
        ready(Ok(()))
    }

    fn take_read<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        epoch: &'a str,
        acked: u64,
    ) -> BoxFuture<'a, Result<Vec<Sent>, DeviceError>> {
        let read = self.with_user(tenant, user, |u, _| {
            let (read, kept): (Vec<_>, Vec<_>) =
                u.sent.drain(..).partition(|(s, _)| s.epoch != epoch || s.offset <= acked);
            u.sent = kept;
            read.into_iter().filter(|(s, _)| s.epoch == epoch).map(|(s, _)| s).collect()
        });
        ready(Ok(read))
    }

    fn forget<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<(), DeviceError>> {
        self.tenants.lock().expect("devices lock").remove(tenant);
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hourly_cap_counts_the_last_hour() {
        let store = MemoryDevices::default();
        assert!(store.count_push("t", "u", 1_000, 2).await.unwrap());
        assert!(store.count_push("t", "u", 2_000, 2).await.unwrap());
        assert!(!store.count_push("t", "u", 3_000, 2).await.unwrap(), "two in the hour");
        assert!(store.count_push("t", "other", 3_000, 2).await.unwrap(), "per user");
        assert!(store.count_push("t", "u", 1_000 + HOUR_MS, 2).await.unwrap(), "the first left the hour");
    }

    #[tokio::test]
    async fn sent_pushes_are_taken_once_when_read() {
        let store = MemoryDevices::default();
        let sent = |offset| Sent { epoch: "e".into(), offset, id: format!("ev-{offset}"), tag: None };
        let far = u64::MAX;
        for offset in [3, 5, 9] {
            store.record_sent("t", "u", &sent(offset), far).await.unwrap();
        }
        assert_eq!(store.take_read("t", "u", "e", 5).await.unwrap(), vec![sent(3), sent(5)]);
        assert_eq!(store.take_read("t", "u", "e", 5).await.unwrap(), vec![]);
        assert_eq!(store.take_read("t", "u", "other-epoch", 100).await.unwrap(), vec![], "another epoch's drop");
        assert_eq!(store.take_read("t", "u", "e", 100).await.unwrap(), vec![]);
    }
}
