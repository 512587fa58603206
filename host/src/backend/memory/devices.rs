//! Devices in this node's memory.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::backend::BoxFuture;
use crate::backend::devices::{DeviceError, DeviceLimits, Devices};
use crate::device::Device;

#[derive(Default)]
pub(crate) struct MemoryDevices {
    /// Held for one registration's check and insert, never across an await.
    tenants: Mutex<HashMap<String, TenantDevices>>,
}

#[derive(Default)]
struct TenantDevices {
    users: HashMap<String, Vec<Device>>,
    count: usize,
}

impl MemoryDevices {
    fn register_now(&self, tenant: &str, user: &str, device: &Device, limits: DeviceLimits) -> Result<(), DeviceError> {
        let mut tenants = self.tenants.lock().expect("devices lock");
        let t = tenants.entry(tenant.to_owned()).or_default();
        let count = t.count;
        let devices = t.users.entry(user.to_owned()).or_default();
        if let Some(i) = devices.iter().position(|d| d.id == device.id) {
            devices.remove(i);
            devices.push(device.clone());
            return Ok(());
        }
        if devices.len() >= limits.per_user {
            return Err(DeviceError::UserFull(devices.len()));
        }
        if limits.per_tenant > 0 && count >= limits.per_tenant {
            return Err(DeviceError::TenantFull(count));
        }
        devices.push(device.clone());
        t.count += 1;
        Ok(())
    }

    fn remove_now(&self, tenant: &str, user: &str, id: &str) -> bool {
        let mut tenants = self.tenants.lock().expect("devices lock");
        let Some(t) = tenants.get_mut(tenant) else { return false };
        let Some(devices) = t.users.get_mut(user) else { return false };
        let before = devices.len();
        devices.retain(|d| d.id != id);
        let removed = devices.len() < before;
        if devices.is_empty() {
            t.users.remove(user);
        }
        t.count -= usize::from(removed);
        removed
    }
}

impl Devices for MemoryDevices {
    fn register<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        device: &'a Device,
        limits: DeviceLimits,
    ) -> BoxFuture<'a, Result<(), DeviceError>> {
        let result = self.register_now(tenant, user, device, limits);
        Box::pin(async move { result })
    }

    fn list<'a>(&'a self, tenant: &'a str, user: &'a str) -> BoxFuture<'a, Result<Vec<Device>, DeviceError>> {
        let tenants = self.tenants.lock().expect("devices lock");
        let devices = tenants.get(tenant).and_then(|t| t.users.get(user)).cloned().unwrap_or_default();
        Box::pin(async move { Ok(devices) })
    }

    fn remove<'a>(&'a self, tenant: &'a str, user: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, DeviceError>> {
        let removed = self.remove_now(tenant, user, id);
        Box::pin(async move { Ok(removed) })
    }

    fn forget<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<(), DeviceError>> {
        self.tenants.lock().expect("devices lock").remove(tenant);
        Box::pin(async { Ok(()) })
    }
}
