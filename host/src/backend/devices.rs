//! Users' devices for push (`Device`: a Web Push subscription, an FCM or APNs token), kept
//! where history is kept: one node's memory, or the cluster's Redis.

use super::{BackendError, BoxFuture};
use crate::device::Device;

/// Why a device could not be registered or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceError {
    #[error("device store unavailable: {0}")]
    Unavailable(#[from] BackendError),
    #[error("the user has {0} devices, the most the tenant allows; remove one first")]
    UserFull(usize),
    #[error("the tenant has {0} devices, the most its limits allow")]
    TenantFull(usize),
}

/// How many devices a registration may make.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeviceLimits {
    pub per_user: usize,
    /// Over the whole tenant; 0: no limit.
    pub per_tenant: usize,
}

/// Keeps each tenant's users' devices.
///
/// Contract:
/// - `register` of a device whose id the user already has replaces it (and counts nothing);
///   a new one is refused when the user or the tenant is at its limit, checked and counted
///   in one atomic step on every node sharing the store;
/// - `list` gives a user's devices by registration time, the latest last;
/// - `remove` says whether the device was there; the tenant's count follows;
/// - tenants never see each other's devices.
pub(crate) trait Devices: Send + Sync + 'static {
    fn register<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        device: &'a Device,
        limits: DeviceLimits,
    ) -> BoxFuture<'a, Result<(), DeviceError>>;

    fn list<'a>(&'a self, tenant: &'a str, user: &'a str) -> BoxFuture<'a, Result<Vec<Device>, DeviceError>>;

    fn remove<'a>(&'a self, tenant: &'a str, user: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, DeviceError>>;

    /// Drops every device of a deleted tenant.
    fn forget<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<(), DeviceError>>;
}
