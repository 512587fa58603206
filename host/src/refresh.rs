//! Fresh credentials for an open connection, before the current ones expire: a WebSocket
//! `refresh` frame, or for an SSE stream a POST naming it. The token is checked as at connect
//! (the tenant's current keys and claim rules, revocations), must name the connection's user,
//! and its grants replace the old ones: channels they leave out are unsubscribed with a frame
//! that says why. A connection that does not refresh is closed when its credentials expire
//! (plus the tenant's leeway) with 4003.

use std::time::Instant;

use crate::app::App;
use crate::auth::{AuthError, Identity, Verified};
use crate::hook::Hook;
use crate::hub::Conn;
use crate::protocol;
use crate::session;
use crate::tenant::Tenant;

/// Why fresh credentials were refused; the connection keeps its current ones until they
/// expire.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RefreshError {
    #[error("this tenant authenticates with a plugin: reconnect with new credentials")]
    Plugin,
    #[error("this tenant's connections have no expiring credentials to refresh")]
    Insecure,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the token names another user than the connection's")]
    OtherUser,
    #[error("these credentials were revoked; sign in again")]
    Revoked,
}

/// Checks `token` as fresh credentials for a connection of `tenant` (and of `user`, when
/// known); the identity it gives. The tenant's current settings apply, not those the
/// connection started with.
pub(crate) async fn verify(
    app: &App,
    tenant: &Tenant,
    user: Option<&str>,
    token: &str,
) -> Result<Identity, RefreshError> {
    let tenant =
        app.tenants().get(&tenant.id).ok_or(RefreshError::Auth(AuthError::Invalid("the tenant was deleted".into())))?;
    if app.pipeline().plugins.get(&tenant.id, Hook::Auth).is_some() {
        return Err(RefreshError::Plugin);
    }
    if tenant.auth.is_insecure() {
        return Err(RefreshError::Insecure);
    }
    let Verified { identity, issued_at, token_id } = tenant.auth.authenticate(Some(token), None).await?;
    if user.is_some_and(|u| u != identity.user) {
        return Err(RefreshError::OtherUser);
    }
    let now = crate::clock::now_millis() / 1000;
    if app.control().revocations.refuses(&tenant.id, &identity.user, issued_at, token_id.as_deref(), now) {
        return Err(RefreshError::Revoked);
    }
    Ok(identity)
}

/// Puts accepted fresh credentials into effect for `conn`: unsubscribes what `identity`
/// no longer grants and queues `refreshed`.
pub(crate) fn apply(app: &App, conn: &Conn, identity: &Identity) {
    let grants = session::grants(identity, &conn.tenant);
    let subscribed = conn.subscriptions.lock().expect("subscriptions lock").clone();
    for name in subscribed.iter().filter(|name| !crate::channel::allowed(grants, name)) {
        if session::remove_subscription(conn, app, name) {
            let reason = "not granted by the refreshed credentials";
            conn.outbox.push_control(protocol::unsubscribed_because(name, reason));
        }
    }
    conn.outbox.push_control(protocol::refreshed(identity.expires_at));
}

/// When a connection with `identity` is closed unless it refreshes: its expiry plus the
/// tenant's leeway.
pub(crate) fn deadline(identity: &Identity, tenant: &Tenant) -> Option<Instant> {
    let leeway = tenant.auth.leeway();
    identity.expires_at.map(|at| crate::clock::unix_to_instant(at) + leeway)
}
