//! Credentials presented on an open connection. Fresh credentials, before the current ones
//! expire: a WebSocket `refresh` frame, or for an SSE stream a POST naming it. The token is checked as at connect
//! (the tenant's current keys and claim rules, revocations), must name the connection's user,
//! and its grants replace the old ones: channels they leave out are unsubscribed with a frame
//! that says why. A connection that does not refresh is closed when its credentials expire
//! (plus the tenant's leeway) with 4003. Subscription tokens: a backend grants one channel to
//! one user with a token the client presents in `subscribe`; such channels stay when the
//! connection's own grants change.

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
    #[error("the subscription token grants {0:?}, not this channel")]
    OtherChannel(Option<String>),
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
    Ok(verified(app, tenant, user, token).await?.identity)
}

/// [`verify`], with everything the token said.
async fn verified(app: &App, tenant: &Tenant, user: Option<&str>, token: &str) -> Result<Verified, RefreshError> {
    let tenant =
        app.tenants().get(&tenant.id).ok_or(RefreshError::Auth(AuthError::Invalid("the tenant was deleted".into())))?;
    if app.pipeline().plugins.get(&tenant.id, Hook::Auth).is_some() {
        return Err(RefreshError::Plugin);
    }
    if tenant.auth.is_insecure() {
        return Err(RefreshError::Insecure);
    }
    let verified = tenant.auth.authenticate(Some(token), None).await?;
    let Verified { identity, issued_at, token_id, .. } = &verified;
    if user.is_some_and(|u| u != identity.user) {
        return Err(RefreshError::OtherUser);
    }
    let now = crate::clock::now_millis() / 1000;
    if app.control().revocations.refuses(&tenant.id, &identity.user, *issued_at, token_id.as_deref(), now) {
        return Err(RefreshError::Revoked);
    }
    Ok(verified)
}

/// Checks a subscription token `token` for `channel` on `conn`: valid for the tenant as a
/// connection token is, naming the connection's user and, in its `channel` claim, the
/// channel. Accepted, the channel is remembered as granted by a token.
pub(crate) async fn verify_channel(app: &App, conn: &Conn, channel: &str, token: &str) -> Result<(), RefreshError> {
    let granted = verified(app, &conn.tenant, Some(&conn.user), token).await?.channel;
    if granted.as_deref() != Some(channel) {
        return Err(RefreshError::OtherChannel(granted));
    }
    app.hub().grant_channel(conn.id, channel);
    Ok(())
}

/// Puts accepted fresh credentials into effect for `conn`: unsubscribes what `identity`
/// no longer grants and queues `refreshed`.
pub(crate) fn apply(app: &App, conn: &Conn, identity: &Identity) {
    let grants = session::grants(identity, &conn.tenant);
    let subscribed = conn.subscriptions.lock().expect("subscriptions lock").clone();
    let by_token = app.hub().granted_channels(conn.id);
    for name in &subscribed {
        let kept = crate::channel::allowed(grants, name) || by_token.contains(name);
        if !kept && session::remove_subscription(conn, app, name) {
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
