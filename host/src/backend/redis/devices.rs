//! Devices in Redis, shared by every node: a hash per user and a count per tenant in the
//! tenant's devices slot, changed by scripts that check the limits and count in one step.

use std::time::Duration;

use super::scripts::{DEVICES_REGISTER, DEVICES_REMOVE, eval};
use super::{Link, keys};
use crate::backend::devices::{DeviceError, DeviceLimits, Devices};
use crate::backend::{BackendError, BoxFuture};
use crate::device::Device;

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

    fn forget<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<(), DeviceError>> {
        Box::pin(async move {
            let pattern = keys::devices_pattern(tenant);
            self.link.clone().unlink_matching(&pattern).await.map_err(BackendError::from)?;
            Ok(())
        })
    }
}
