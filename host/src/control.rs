//! The control plane on this node: applies the control-plane store's state (tenants created
//! through the admin API) to the tenant registry, closing a deleted tenant's connections,
//! and changes that state for the API.

use std::sync::Arc;

use crate::app::App;
use crate::backend::control::{ControlState, StoreError};

/// Makes the registry match `state` (`ControlState::sync`) and closes the connections of the
/// tenants it removed.
pub(crate) fn apply(app: &App, state: &ControlState) {
    for tenant in state.sync(&app.tenants) {
        let closed = app.hub.close_tenant(&tenant);
        tracing::info!(tenant = &*tenant.id, connections = closed, "tenant deleted; its connections are closed");
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
    // Whatever changed before this watcher existed is applied first.
    changes.mark_changed();
    loop {
        tokio::select! {
            () = app.drain.started() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        match app.control.load().await {
            Ok(state) => {
                apply(&app, &state);
                app.control_loaded.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "control-plane state not reloaded"),
        }
    }
}
