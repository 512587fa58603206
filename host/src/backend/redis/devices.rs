//! Devices and users' push state in Redis, shared by every node: a hash of devices per user
//! and a count per tenant, preferences, the last hour's pushes and the sent ones, all in the
//! tenant's devices slot, changed by scripts that check and count in one step.

use std::time::Duration;

use super::scripts::{
    DEVICES_COUNT_PUSH, DEVICES_REGISTER, DEVICES_REMOVE, DEVICES_SENT_RECORD, DEVICES_SENT_TAKE, eval,
};
use super::{Link, keys};
use crate::backend::devices::{DeviceError, DeviceLimits, Devices, HOUR_MS, MAX_SENT, Sent};
use crate::backend::{BackendError, BoxFuture};
use crate::device::{Device, Preferences};

pub(crate) struct RedisDevices {
    link: Link,
    timeout: Duration,
}

impl RedisDevices {
    pub(crate) fn new(link: Link, timeout: Duration) -> Self {
        Self { link, timeout }
    }

    async fn register_now(
        &self,
        tenant: &str,
        user: &str,
        device: &Device,
        limits: DeviceLimits,
    ) -> Result<(), DeviceError> {
        let json = serde_json::to_string(device).expect("a device serializes");
        let mut cmd = eval(DEVICES_REGISTER, &keys::devices(tenant, user));
        cmd.arg(&device.id).arg(json).arg(limits.per_user).arg(limits.per_tenant);
        let (outcome, full): (i64, usize) = self.link.query_within(cmd, self.timeout).await?;
        match outcome {
            -1 => Err(DeviceError::UserFull(full)),
            -2 => Err(DeviceError::TenantFull(full)),
            _ => Ok(()),
        }
    }

    async fn list_now(&self, tenant: &str, user: &str) -> Result<Vec<Device>, DeviceError> {
        let [hash, _] = keys::devices(tenant, user);
        let values: Vec<String> = self.link.query_within(::redis::cmd("HVALS").arg(hash).clone(), self.timeout).await?;
        let mut devices = values
            .iter()
            .map(|v| serde_json::from_str::<Device>(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| super::malformed(format!("a device: {e}")))?;
        devices.sort_by_key(|d| d.registered_at);
        Ok(devices)
    }

    async fn preferences_now(&self, tenant: &str, user: &str) -> Result<Preferences, DeviceError> {
        let [key, ..] = keys::push_state(tenant, user);
        let json: Option<String> = self.link.query_within(::redis::cmd("GET").arg(key).clone(), self.timeout).await?;
        let Some(json) = json else { return Ok(Preferences::default()) };
        Ok(serde_json::from_str(&json).map_err(|e| super::malformed(format!("push preferences: {e}")))?)
    }

    async fn take_read_now(&self, tenant: &str, user: &str, epoch: &str, acked: u64) -> Result<Vec<Sent>, DeviceError> {
        let [.., sent] = keys::push_state(tenant, user);
        let mut cmd = eval(DEVICES_SENT_TAKE, &[sent]);
        cmd.arg(epoch).arg(acked);
        let taken: Vec<String> = self.link.query_within(cmd, self.timeout).await?;
        let parsed = taken.iter().map(|json| serde_json::from_str(json)).collect::<Result<Vec<Sent>, _>>();
        Ok(parsed.map_err(|e| super::malformed(format!("a sent push: {e}")))?)
    }
}

impl Devices for RedisDevices {
    fn register<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        device: &'a Device,
        limits: DeviceLimits,
    ) -> BoxFuture<'a, Result<(), DeviceError>> {
        Box::pin(self.register_now(tenant, user, device, limits))
    }

    fn list<'a>(&'a self, tenant: &'a str, user: &'a str) -> BoxFuture<'a, Result<Vec<Device>, DeviceError>> {
        Box::pin(self.list_now(tenant, user))
    }

    fn remove<'a>(&'a self, tenant: &'a str, user: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, DeviceError>> {
        Box::pin(async move {
            let mut cmd = eval(DEVICES_REMOVE, &keys::devices(tenant, user));
            cmd.arg(id);
            let removed: i64 = self.link.query_within(cmd, self.timeout).await?;
            Ok(removed == 1)
        })
    }

    fn preferences<'a>(&'a self, tenant: &'a str, user: &'a str) -> BoxFuture<'a, Result<Preferences, DeviceError>> {
        Box::pin(self.preferences_now(tenant, user))
    }

    fn set_preferences<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        preferences: &'a Preferences,
    ) -> BoxFuture<'a, Result<(), DeviceError>> {
        Box::pin(async move {
            let [key, ..] = keys::push_state(tenant, user);
            let json = serde_json::to_string(preferences).expect("preferences serialize");
            let cmd = if *preferences == Preferences::default() {
                ::redis::cmd("DEL").arg(key).clone()
            } else {
                ::redis::cmd("SET").arg(key).arg(json).clone()
            };
            self.link.query_within::<()>(cmd, self.timeout).await?;
            Ok(())
        })
    }

    fn count_push<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        now: u64,
        max: u32,
    ) -> BoxFuture<'a, Result<bool, DeviceError>> {
        Box::pin(async move {
            let [_, recent, _] = keys::push_state(tenant, user);
            let mut cmd = eval(DEVICES_COUNT_PUSH, &[recent]);
            let member = format!("{now}-{:x}", std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), now));
            cmd.arg(now).arg(max).arg(HOUR_MS).arg(member);
            let counted: i64 = self.link.query_within(cmd, self.timeout).await?;
            Ok(counted == 1)
        })
    }

    fn record_sent<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        sent: &'a Sent,
        until: u64,
    ) -> BoxFuture<'a, Result<(), DeviceError>> {
        Box::pin(async move {
            let [.., key] = keys::push_state(tenant, user);
            let mut cmd = eval(DEVICES_SENT_RECORD, &[key]);
            let keep = until.saturating_sub(crate::clock::now_millis()).max(1);
            let json = serde_json::to_string(sent).expect("a sent push serializes");
            cmd.arg(sent.offset).arg(json).arg(keep).arg(MAX_SENT);
            self.link.query_within::<i64>(cmd, self.timeout).await?;
            Ok(())
        })
    }

    fn take_read<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        epoch: &'a str,
        acked: u64,
    ) -> BoxFuture<'a, Result<Vec<Sent>, DeviceError>> {
        Box::pin(self.take_read_now(tenant, user, epoch, acked))
    }

    fn forget<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<(), DeviceError>> {
        Box::pin(async move {
            let pattern = keys::devices_pattern(tenant);
            self.link.clone().unlink_matching(&pattern).await.map_err(BackendError::from)?;
            Ok(())
        })
    }
}
