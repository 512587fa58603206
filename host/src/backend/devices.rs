//! Users' devices for push (`Device`: a Web Push subscription, an FCM or APNs token) and
//! their push state: preferences, the pushes of the last hour (for the hourly cap), the
//! pushes sent and not yet read (to withdraw them when they are). Kept where history is
//! kept: one node's memory, or the cluster's Redis.

use serde::{Deserialize, Serialize};

use super::{BackendError, BoxFuture};
use crate::device::{Device, Preferences};

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

/// A push sent to a user's devices, kept until the user reads its event (or it lapses) so
/// it can be withdrawn then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sent {
    /// The event's place in the user stream.
    pub epoch: String,
    pub offset: u64,
    pub id: String,
    /// The push's collapse key, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Keeps each tenant's users' devices.
///
/// Contract:
/// - `register` of a device whose id the user already has replaces it (and counts nothing);
///   a new one is refused when the user or the tenant is at its limit, checked and counted
///   in one atomic step on every node sharing the store;
/// - `list` gives a user's devices by registration time, the latest last;
/// - `remove` says whether the device was there; the tenant's count follows;
/// - `count_push` counts a push of the user when fewer than `max` were counted in the hour
///   before `now`, in one atomic step on every node; it says whether it counted it;
/// - `take_read` removes and returns the sent pushes of `epoch` at or before `acked`, each
///   to one caller (sent pushes of another epoch are dropped: their events are gone);
/// - tenants never see each other's devices or state.
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

    fn preferences<'a>(&'a self, tenant: &'a str, user: &'a str) -> BoxFuture<'a, Result<Preferences, DeviceError>>;

    fn set_preferences<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        preferences: &'a Preferences,
    ) -> BoxFuture<'a, Result<(), DeviceError>>;

    fn count_push<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        now: u64,
        max: u32,
    ) -> BoxFuture<'a, Result<bool, DeviceError>>;

    /// Keeps `sent` until `until` (Unix ms); the newest [`MAX_SENT`] of a user.
    fn record_sent<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        sent: &'a Sent,
        until: u64,
    ) -> BoxFuture<'a, Result<(), DeviceError>>;

    fn take_read<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        epoch: &'a str,
        acked: u64,
    ) -> BoxFuture<'a, Result<Vec<Sent>, DeviceError>>;

    /// Drops every device of a deleted tenant.
    fn forget<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<(), DeviceError>>;
}

/// Sent pushes kept per user waiting to be read, the newest.
pub(crate) const MAX_SENT: usize = 100;

/// An hour, in milliseconds: the hourly cap's window.
pub(crate) const HOUR_MS: u64 = 3_600_000;
