//! The control plane on this node: applies the control-plane store's state (tenants created
//! through the admin API) to the tenant registry, and changes that state for the API.
//!
//! Tenants from `config.toml` are applied at start and never changed here; a stored tenant
//! with the id of a configured one is ignored (the configuration wins).

use std::sync::Arc;

use crate::app::App;
use crate::backend::control::{ControlState, StoreError, StoredKey, StoredTenant};
use crate::config::TenantConfig;
use crate::tenant::{Key, KeyDigest, Keys, Source, Tenant};

/// Applies the stored state at start (one node only: in cluster mode tenants come from the
/// configuration alone until the store lives in Redis).
pub(crate) async fn load(app: &App) -> Result<(), StoreError> {
    let state = app.control.load().await?;
    if app.clustered() {
        if !state.tenants.is_empty() {
            tracing::warn!("tenants created through the API on one node are not loaded in cluster mode");
        }
        return Ok(());
    }
    apply(app, &state);
    Ok(())
}

/// Makes the registry match `state`: adds stored tenants it lacks, removes API tenants the
/// state no longer has (closing their connections and turning their plugins off).
pub(crate) fn apply(app: &App, state: &ControlState) {
    for (id, stored) in &state.tenants {
        match app.tenants.get(id) {
            Some(t) if t.source == Source::Config => {
                tracing::warn!(tenant = id, "a stored tenant has the id of a configured one; the configuration wins");
            }
            Some(t) => {
                if t.revision != stored.revision {
                    app.tenants.reconfigure(id, tenant_config(&stored.settings, String::new()), stored.revision);
                }
                rekey(app, id, stored);
            }
            None => add(app, id, stored),
        }
    }
    let removed =
        app.tenants.all().into_iter().filter(|t| t.source != Source::Config && !state.tenants.contains_key(&*t.id));
    for tenant in removed {
        remove(app, &tenant);
    }
}

fn add(app: &App, id: &str, stored: &StoredTenant) {
    let Some(keys) = keys(stored) else {
        tracing::error!(tenant = id, "stored tenant has malformed key digests; not loaded");
        return;
    };
    let config = tenant_config(&stored.settings, String::new());
    match app.tenants.add(id, config, keys, Source::Api { created_at: stored.created_at }) {
        Ok(_) => {
            if stored.revision > 0 {
                app.tenants.reconfigure(id, tenant_config(&stored.settings, String::new()), stored.revision);
            }
            tracing::info!(tenant = id, "tenant added");
        }
        Err(e) => tracing::error!(tenant = id, error = %e, "stored tenant not loaded"),
    }
}

/// A stored tenant's keys, or `None` when a digest is malformed.
fn keys(stored: &StoredTenant) -> Option<Keys> {
    let list = |keys: &[StoredKey]| {
        keys.iter()
            .map(|k| Some(Key { digest: KeyDigest::from_hex(&k.sha256)?, expires_at: k.expires_at }))
            .collect::<Option<Vec<_>>>()
    };
    Some(Keys { publish: list(&stored.publish_keys)?, management: list(&stored.management_keys)? })
}

/// Brings a stored tenant's keys into the registry after a rotation.
fn rekey(app: &App, id: &str, stored: &StoredTenant) {
    let Some(keys) = keys(stored) else { return };
    if app.tenants.keys(id).is_some_and(|current| current != keys)
        && let Err(e) = app.tenants.set_keys(id, keys)
    {
        tracing::error!(tenant = id, error = %e, "rotated keys not applied");
    }
}

fn remove(app: &App, tenant: &Arc<Tenant>) {
    app.tenants.remove(&tenant.id);
    let closed = app.hub.close_tenant(tenant);
    tracing::info!(tenant = &*tenant.id, connections = closed, "tenant deleted; its connections are closed");
}

/// The configuration of a tenant with these settings. `publish_key` is only for validation:
/// the registry keeps key digests.
pub(crate) fn tenant_config(settings: &crate::backend::control::TenantSettings, publish_key: String) -> TenantConfig {
    TenantConfig {
        publish_key,
        auth: settings.auth.clone(),
        allowed_origins: settings.allowed_origins.clone(),
        default_channels: settings.default_channels.clone(),
        slow_client: settings.slow_client,
        management_key: None,
        plugins: Default::default(),
        history: settings.history,
        limits: settings.limits,
    }
}

/// Applies `change` to the stored state and the registry, retrying when another change
/// landed in between (the change sees the state it replaces). `change` returns what the
/// caller gets back, or refuses with its own error.
pub(crate) async fn change<T, E: From<StoreError>>(
    app: &App,
    mut change: impl FnMut(&mut ControlState) -> Result<T, E>,
) -> Result<T, E> {
    loop {
        let mut state = app.control.load().await?;
        let expected = state.version;
        let out = change(&mut state)?;
        match app.control.replace(expected, state.clone()).await {
            Ok(version) => {
                state.version = version;
                apply(app, &state);
                return Ok(out);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Applies every change the store reports (made on this node or, with a shared store, on
/// another) until the node drains.
pub(crate) async fn follow(app: Arc<App>) {
    let mut changes = app.control.watch();
    loop {
        tokio::select! {
            () = app.drain.started() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        match app.control.load().await {
            Ok(state) => apply(&app, &state),
            Err(e) => tracing::warn!(error = %e, "control-plane state not reloaded"),
        }
    }
}
