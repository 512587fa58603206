//! The control plane on this node: applies the control-plane store's state (tenants created
//! through the admin API, plugin slots changed through it) to the tenant registry and the
//! plugins, closing a deleted tenant's connections; changes that state for the API; and
//! reports what this node has and runs, for the admin API and the cluster-wide connection
//! quotas.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::app::App;
use crate::backend::control::{Blob, ControlState, NODE_HEALTH, StoreError};
use crate::backend::presence::Member;
use crate::plugin::Running;
use crate::revocation::Revoked;
use crate::session;
use crate::tenant::Tenant;

/// How often a node reports what it runs (and renews its liveness).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How soon a node that could not load a state's plugins tries again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long every node gets to apply a tenant's deletion before its data is removed.
const FORGET_AFTER: Duration = Duration::from_secs(1);

/// Makes the registry and the plugins match `state` (unless a newer state was applied
/// already) and closes the connections of the tenants it removed. Returns `false` when some
/// plugin could not be downloaded: its slot keeps what it ran, and the caller tries again.
/// (A version that does not load is logged; trying again would not help.)
pub(crate) async fn apply(app: &App, state: &ControlState) -> bool {
    // Held across the plugin download so that two states are never applied out of order.
    let mut applied = app.control().applied.lock().await;
    if state.version < applied.version {
        return true;
    }
    for tenant in state.sync(app.tenants()) {
        let closed = app.hub().close_tenant(&tenant);
        tracing::info!(tenant = &*tenant.id, connections = closed, "tenant deleted; its connections are closed");
    }
    let complete = sync_plugins(app, state).await;
    let tenant_app = |t: &str| app.tenants().get(t).map(|t| t.config.pusher.clone());
    let wanting = app.webhooks().sync(&state.webhooks, &state.webhook_pauses, tenant_app);
    follow_for_webhooks(app, wanting);
    start_webhooks(app);
    *applied = Arc::new(state.clone());
    app.control().plugins_changed.notify_one();
    complete
}

/// Records the pauses webhook endpoints ask for (after failing for `webhooks.pause_after`),
/// so that every node pauses them. A request the store refuses is asked again at the
/// endpoint's next failure.
pub(crate) async fn record_webhook_pauses(app: App) {
    let Some(mut requests) = app.webhooks().pause_requests() else { return };
    while let Some(request) = requests.recv().await {
        let (tenant, endpoint) = (request.tenant.to_string(), request.endpoint.to_string());
        // Asked again at each failure until recorded; once this node has applied the pause,
        // a later ask would only write the same state again.
        let endpoints = app.webhooks().endpoints(&tenant);
        if endpoints.iter().any(|e| *e.id == *endpoint && e.pause().is_some()) {
            continue;
        }
        let recorded = change(&app, |state| {
            let exists = app.webhooks().endpoints(&tenant).iter().any(|e| *e.id == *endpoint);
            let paused = state.webhook_pauses.entry(tenant.clone()).or_default();
            if exists && !paused.contains_key(&endpoint) {
                paused.insert(endpoint.clone(), request.pause.clone());
            }
            Ok::<_, StoreError>(())
        })
        .await;
        if let Err(e) = recorded {
            tracing::warn!(tenant, endpoint, error = %e, "a webhook endpoint's pause was not recorded");
        }
    }
}

/// Tells presence which tenants' users and channels to follow now that their webhooks'
/// wanted kinds changed (`(tenant, kinds before, kinds now)`), from the hub's counts.
fn follow_for_webhooks(app: &App, changed: Vec<(Arc<str>, u32, u32)>) {
    for (id, was, is) in changed {
        let Some(tenant) = app.tenants().get(&id) else { continue };
        for member in [Member::User, Member::Channel] {
            match (was & member.bits() != 0, is & member.bits() != 0) {
                (false, true) => {
                    let counts = match member {
                        Member::User => app.hub().user_counts(&tenant),
                        Member::Channel => app.hub().channel_counts(&tenant),
                    };
                    app.presence().follow(&tenant, member, counts);
                }
                (true, false) => app.presence().unfollow(&tenant, member),
                _ => {}
            }
        }
    }
}

/// Runs the sending tasks of webhook endpoints that have none yet.
pub(crate) fn start_webhooks(app: &App) {
    for endpoint in app.webhooks().tasks() {
        app.lifecycle().spawn("webhook endpoint", endpoint);
    }
}

/// Downloads the plugin versions this node has not compiled, then swaps the slots.
async fn sync_plugins(app: &App, state: &ControlState) -> bool {
    let mut blobs = HashMap::new();
    let mut complete = true;
    for hash in app.pipeline().plugins.missing(&state.plugins) {
        match app.control().store.blob(&hash).await {
            Ok(Some(bytes)) => drop(blobs.insert(hash, bytes.into())),
            Ok(None) => tracing::warn!(hash, "a plugin the control-plane state names has no bytes in the store"),
            Err(e) => {
                tracing::warn!(hash, error = %e, "plugin not downloaded");
                complete = false;
            }
        }
    }
    for e in app.pipeline().plugins.sync(app.tenants(), &state.plugins, &blobs).await {
        tracing::error!(error = %e, "plugin version not loaded; the slot keeps what it ran");
    }
    complete
}

/// Applies `change` to the stored state, then to this node, retrying when another change
/// landed in between (the change sees the state it replaces). `change` returns what the
/// caller gets back, or refuses with its own error.
pub(crate) async fn change<T, E: From<StoreError>>(
    app: &App,
    change: impl FnMut(&mut ControlState) -> Result<T, E>,
) -> Result<T, E> {
    change_with(app, Vec::new(), change).await
}

/// [`change`], storing `blobs` (plugin bytes the new state names) in the same step.
pub(crate) async fn change_with<T, E: From<StoreError>>(
    app: &App,
    blobs: Vec<Blob>,
    mut change: impl FnMut(&mut ControlState) -> Result<T, E>,
) -> Result<T, E> {
    loop {
        let mut state = app.control().store.load().await?;
        let applied = app.control().applied.lock().await.version;
        if state.version < applied {
            return Err(StoreError::Lost { stored: state.version, applied }.into());
        }
        let expected = state.version;
        let out = change(&mut state)?;
        match app.control().store.replace(expected, state.clone(), blobs.clone()).await {
            Ok(version) => {
                state.version = version;
                apply(app, &state).await;
                return Ok(out);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Drops what the backends keep of a deleted tenant: its history, presence and ingest
/// streams. Runs on the node that deleted it, once the other nodes had [`FORGET_AFTER`] to
/// stop using them (at once when the node drains); skipped if a tenant of that id exists
/// again by then.
pub(crate) async fn forget(app: App, tenant: Arc<Tenant>) {
    tokio::select! {
        () = tokio::time::sleep(FORGET_AFTER) => {}
        () = app.lifecycle().drain.started() => {}
    }
    if app.tenants().get(&tenant.id).is_some() {
        tracing::info!(tenant = &*tenant.id, "tenant created again; the deleted one's data is kept");
        return;
    }
    let (history, presence, streams, devices) = tokio::join!(
        app.history().forget(&tenant),
        app.presence().forget(&tenant),
        app.pipeline().broker.forget(&tenant),
        app.pipeline().push.devices.forget(&tenant.id)
    );
    let failed = [
        history.err().map(|e| e.to_string()),
        presence.err().map(|e| e.to_string()),
        streams.err().map(|e| e.to_string()),
        devices.err().map(|e| e.to_string()),
    ];
    match failed.into_iter().flatten().next() {
        None => tracing::info!(
            tenant = &*tenant.id,
            "deleted tenant's history, presence, ingest streams and devices removed"
        ),
        Some(e) => tracing::warn!(
            tenant = &*tenant.id,
            error = e,
            "deleted tenant's data not fully removed; it expires with its TTLs"
        ),
    }
}

/// What one node asks every node to do.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Command {
    /// Close every connection of a user (4005), and refuse tokens issued before a time.
    Disconnect { tenant: String, user: String, reason: Option<String>, revoked: Option<Revoked> },
    /// Answer, to request `reply_to`, who is subscribed to a channel on this node.
    ChannelPresence { tenant: String, channel: String, reply_to: String },
    /// Subscribe every connection of a user to channels (a no-op where already subscribed).
    Subscribe { tenant: String, user: String, channels: Vec<String> },
    /// Unsubscribe every connection of a user from a channel.
    Unsubscribe { tenant: String, user: String, channel: String },
    /// Close every connection subscribed to a channel (a Pusher user's: its connections
    /// signed in as the user).
    CloseSubscribers { tenant: String, channel: String },
    /// Answer, to request `reply_to`, the channels with subscribers on this node whose
    /// names start with `prefix`, with their subscription counts.
    Channels { tenant: String, prefix: String, reply_to: String },
}

/// One node's answer to [`Command::Channels`], and the merged answers.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChannelCounts {
    pub channels: BTreeMap<String, u64>,
    pub truncated: bool,
}

/// Most channels a [`Command::Channels`] answer lists (per node, and merged).
pub(crate) const MAX_CHANNELS_LISTED: usize = 10_000;

/// One node's answer to [`Command::ChannelPresence`], and the merged answers.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChannelUsers {
    pub users: BTreeMap<String, u64>,
    pub truncated: bool,
}

/// Most users a channel presence answer lists (per node, and merged).
pub(crate) const MAX_PRESENCE_USERS: usize = 1000;

/// Carries out `command` on this node at once, then on every other node (a revocation is
/// also stored for nodes that start later).
pub(crate) async fn send(app: &App, command: Command) -> Result<(), StoreError> {
    if let Command::Disconnect { tenant, user, revoked: Some(revoked), .. } = &command {
        app.control().store.revoke(tenant, user, revoked.clone()).await?;
    }
    obey(app, &command);
    app.control().store.command(serde_json::to_string(&command)?).await
}

/// Asks every live node (this one included) who is subscribed to `channel`, and merges the
/// answers that come within `wait`. Also returns how many nodes answered and are live.
pub(crate) async fn channel_presence(
    app: &App,
    tenant: &Tenant,
    channel: &str,
    wait: Duration,
) -> Result<(ChannelUsers, usize, usize), StoreError> {
    let (tenant_id, channel) = (tenant.id.to_string(), channel.to_owned());
    let (answers, live) =
        gather(app, wait, |reply_to| Command::ChannelPresence { tenant: tenant_id, channel, reply_to }).await?;
    let mut merged = ChannelUsers::default();
    for answer in answers.iter().filter_map(|a| serde_json::from_str::<ChannelUsers>(a).ok()) {
        merged.truncated |= answer.truncated;
        for (user, n) in answer.users {
            merged.truncated |= !crate::hub::count_capped(&mut merged.users, user, n, MAX_PRESENCE_USERS);
        }
    }
    Ok((merged, answers.len(), live))
}

/// Asks every live node (this one included) for its channels starting with `prefix` and
/// their subscription counts, and merges the answers that come within `wait`.
pub(crate) async fn channels(
    app: &App,
    tenant: &Tenant,
    prefix: &str,
    wait: Duration,
) -> Result<ChannelCounts, StoreError> {
    let (tenant_id, prefix) = (tenant.id.to_string(), prefix.to_owned());
    let (answers, _) = gather(app, wait, |reply_to| Command::Channels { tenant: tenant_id, prefix, reply_to }).await?;
    let mut merged = ChannelCounts::default();
    for answer in answers.iter().filter_map(|a| serde_json::from_str::<ChannelCounts>(a).ok()) {
        merged.truncated |= answer.truncated;
        for (channel, n) in answer.channels {
            merged.truncated |= !crate::hub::count_capped(&mut merged.channels, channel, n, MAX_CHANNELS_LISTED);
        }
    }
    Ok(merged)
}

/// Sends the command `ask` makes for a reply key to every node, and collects the answers
/// that come within `wait` (until every live node answered); with how many nodes are live.
async fn gather(
    app: &App,
    wait: Duration,
    ask: impl FnOnce(String) -> Command,
) -> Result<(Vec<String>, usize), StoreError> {
    let live = app.control().store.reports(Vec::new()).await?.len().max(1);
    let reply_to = format!("{}-{}", app.node_id(), app.ids().next_id());
    app.control().store.command(serde_json::to_string(&ask(reply_to.clone()))?).await?;
    let until = tokio::time::Instant::now() + wait;
    let mut answers = app.control().store.replies(&reply_to).await?;
    while answers.len() < live && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        answers = app.control().store.replies(&reply_to).await?;
    }
    Ok((answers, live))
}

fn obey(app: &App, command: &Command) {
    match command {
        Command::Disconnect { tenant, user, reason, revoked } => {
            if let Some(revoked) = revoked {
                app.control().revocations.revoke(tenant, user, revoked.clone());
            }
            if let Some(tenant) = app.tenants().get(tenant) {
                let closed = app.hub().disconnect_user(&tenant, user, reason.as_deref());
                tracing::info!(tenant = &*tenant.id, user, connections = closed, "user disconnected");
            }
        }
        Command::ChannelPresence { tenant, channel, reply_to } => {
            let Some(tenant) = app.tenants().get(tenant) else { return };
            let (users, truncated) = app.hub().channel_users(&tenant, channel, MAX_PRESENCE_USERS);
            let users = users.into_iter().map(|(u, n)| (u.into_string(), n)).collect();
            answer(app, reply_to, &ChannelUsers { users, truncated });
        }
        Command::CloseSubscribers { tenant, channel } => {
            let Some(tenant) = app.tenants().get(tenant) else { return };
            for conn in app.hub().channel_conns(&tenant, channel).iter().filter(|c| c.outbox.killed().is_none()) {
                conn.outbox.kill(crate::fanout::Kill::Disconnected);
            }
        }
        Command::Channels { tenant, prefix, reply_to } => {
            let Some(tenant) = app.tenants().get(tenant) else { return };
            let mut counts = ChannelCounts::default();
            for (channel, n) in app.hub().channel_counts(&tenant).into_iter().filter(|(c, _)| c.starts_with(&**prefix))
            {
                let added = crate::hub::count_capped(
                    &mut counts.channels,
                    channel.into_string(),
                    n.into(),
                    MAX_CHANNELS_LISTED,
                );
                counts.truncated |= !added;
            }
            answer(app, reply_to, &counts);
        }
        Command::Subscribe { tenant, user, channels } => {
            let Some(tenant) = app.tenants().get(tenant) else { return };
            for conn in app.hub().user_conns(&tenant, user) {
                // The node that took the request obeys at once and again when its own
                // command comes back: the second time finds the subscription there.
                for channel in channels.iter().filter(|c| !conn.subscribed_to(c)) {
                    let action = session::subscribe(&conn, app, None, channel.clone(), None, false);
                    let app = app.clone();
                    let conn = conn.clone();
                    tokio::spawn(async move { session::act(action, &conn, &app).await });
                }
            }
        }
        Command::Unsubscribe { tenant, user, channel } => {
            let Some(tenant) = app.tenants().get(tenant) else { return };
            for conn in app.hub().user_conns(&tenant, user).iter().filter(|c| c.subscribed_to(channel)) {
                conn.outbox.push_control(session::unsubscribe(conn, app, channel));
            }
        }
    }
}

/// Stores this node's answer to request `reply_to` (in the background).
fn answer(app: &App, reply_to: &str, answer: &impl serde::Serialize) {
    let answer = serde_json::to_string(answer).expect("answers serialize");
    let (app, reply_to) = (app.clone(), reply_to.to_owned());
    tokio::spawn(async move {
        if let Err(e) = app.control().store.reply(&reply_to, answer).await {
            tracing::debug!(error = %e, "answer to another node not stored");
        }
    });
}

/// Carries out the commands other nodes send until the node drains.
pub(crate) async fn obey_commands(app: App) {
    let mut commands = app.control().store.commands();
    loop {
        let received = tokio::select! {
            () = app.lifecycle().drain.started() => return,
            received = commands.recv() => received,
        };
        match received {
            Ok(json) => match serde_json::from_str::<Command>(&json) {
                Ok(command) => obey(&app, &command),
                Err(e) => tracing::warn!(error = %e, "unreadable command ignored"),
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "commands came faster than this node carried them out");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Loads the stored token revocations (at start; lapsed ones are dropped).
async fn load_revocations(app: &App) {
    match app.control().store.revocations().await {
        Ok(all) => all.into_iter().for_each(|r| app.control().revocations.revoke(&r.tenant, &r.user, r.revoked)),
        Err(e) => tracing::warn!(error = %e, "token revocations not loaded"),
    }
}

/// Loads and applies the stored state once, before the node listens. In cluster mode a
/// Redis that does not answer yet is not fatal: the node starts with its configured tenants,
/// not ready, and `follow` loads the state once Redis answers.
pub(crate) async fn load(app: &App) -> Result<(), StoreError> {
    match app.control().store.load().await {
        Ok(state) => {
            apply(app, &state).await;
            load_revocations(app).await;
            app.control().loaded.store(true, Relaxed);
            Ok(())
        }
        Err(e) if app.shared() => {
            tracing::warn!(error = %e, "control-plane state not loaded yet; the node is not ready until it is");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Applies every change the store reports (made on this node or, with a shared store, on
/// another) until the node drains; retries a state whose plugins could not all be loaded.
pub(crate) async fn follow(app: App) {
    let mut changes = app.control().store.watch();
    // Whatever changed before this watcher existed is applied first.
    changes.mark_changed();
    let mut retry = false;
    loop {
        tokio::select! {
            () = app.lifecycle().drain.started() => return,
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY_EVERY), if retry => {}
        }
        retry = match app.control().store.load().await {
            Ok(state) => {
                let complete = apply(&app, &state).await;
                if !app.control().loaded.load(Relaxed) {
                    load_revocations(&app).await;
                }
                app.control().loaded.store(true, Relaxed);
                !complete
            }
            Err(e) => {
                tracing::warn!(error = %e, "control-plane state not reloaded");
                true
            }
        };
    }
}

/// Reports what this node has and runs every [`REPORT_EVERY`] and after every change it
/// applied, until the node drains; then withdraws the node. Each round also checks the
/// store's version and the tenants' connections on other nodes.
pub(crate) async fn report(app: App) {
    let mut every = tokio::time::interval(REPORT_EVERY);
    loop {
        tokio::select! {
            () = app.lifecycle().drain.started() => break,
            _ = every.tick() => {}
            () = app.control().plugins_changed.notified() => {}
        }
        if let Err(e) = app.control().store.report(app.node_id(), Some(reports(&app))).await {
            tracing::debug!(error = %e, "node report not stored");
        }
        check(&app).await;
        balance(&app).await;
        app.control().revocations.prune(crate::clock::now_millis() / 1000);
    }
    let _ = app.control().store.report(app.node_id(), None).await;
}

/// Compares the store's version with the state applied here. Behind it: an announcement
/// was missed, so the state is loaded and applied. Ahead of it: the store lost its state
/// (Redis restarted without persistence, or flushed), so this node puts its copy back,
/// plugin bytes included; of several nodes doing so the one with the newest copy wins.
async fn check(app: &App) {
    let Ok(stored) = app.control().store.version().await else { return };
    let applied = app.control().applied.lock().await.clone();
    if stored > applied.version {
        if let Ok(state) = app.control().store.load().await {
            apply(app, &state).await;
        }
    } else if stored < applied.version {
        tracing::error!(
            stored,
            applied = applied.version,
            "the control-plane store went back to an older version and lost state; restoring this node's copy"
        );
        let blobs = applied
            .plugin_hashes()
            .into_iter()
            .filter_map(|hash| Some(Blob { hash: hash.to_owned(), bytes: app.pipeline().plugins.bytes(hash)? }))
            .collect();
        match app.control().store.restore((*applied).clone(), blobs).await {
            Ok(true) => tracing::info!(version = applied.version, "control-plane state restored"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "control-plane state not restored"),
        }
    }
}

/// What a node reports for one tenant.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct TenantReport {
    pub connections: usize,
    #[serde(default)]
    pub plugins: Vec<Running>,
}

/// What this node has and runs for one tenant.
pub(crate) fn report_of(app: &App, tenant: &Tenant) -> TenantReport {
    TenantReport { connections: tenant.quota.connections(), plugins: app.pipeline().plugins.running_of(&tenant.id) }
}

/// A node's own state, as the dashboard shows every node's.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct NodeHealth {
    /// The binary's version.
    pub version: String,
    /// When the process started, in Unix milliseconds.
    pub started_at_ms: u64,
    /// Resident memory of the process, where the system tells it.
    pub resident_bytes: Option<u64>,
    /// What `/readyz` answers: `ready`, `draining`, `broker_unavailable`, ...
    pub ready: String,
    /// Whether the Redis broker's connection is up; none with the memory broker.
    pub broker_up: Option<bool>,
}

/// This node's health now.
pub(crate) fn health(app: &App) -> NodeHealth {
    NodeHealth {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: app.started_at_ms(),
        resident_bytes: crate::metrics::resident_bytes(),
        ready: app.readiness().to_owned(),
        broker_up: app.shared().then(|| app.pipeline().broker.healthy()),
    }
}

/// What this node has and runs, as JSON per tenant (tenants with connections or plugins),
/// and its health under [`NODE_HEALTH`].
fn reports(app: &App) -> BTreeMap<String, String> {
    let mut running = app.pipeline().plugins.running();
    let mut reports = BTreeMap::new();
    reports.insert(NODE_HEALTH.to_owned(), serde_json::to_string(&health(app)).expect("node health serializes"));
    for tenant in app.tenants().all() {
        let report = TenantReport {
            connections: tenant.quota.connections(),
            plugins: running.remove(&tenant.id).unwrap_or_default(),
        };
        if report.connections > 0 || !report.plugins.is_empty() {
            let json = serde_json::to_string(&report).expect("node reports serialize");
            reports.insert(tenant.id.to_string(), json);
        }
    }
    reports
}

/// Tells each tenant with a connection limit how many connections it has on the other
/// live nodes. On error the previous figures stay.
async fn balance(app: &App) {
    let limited: Vec<Arc<Tenant>> =
        app.tenants().all().into_iter().filter(|t| t.quota.limits().max_connections > 0).collect();
    if limited.is_empty() {
        return;
    }
    let Ok(nodes) = app.control().store.reports(limited.iter().map(|t| t.id.to_string()).collect()).await else {
        return;
    };
    let others: Vec<_> = nodes.iter().filter(|n| &*n.node != app.node_id()).collect();
    for (i, tenant) in limited.iter().enumerate() {
        let reported = others.iter().filter_map(|n| n.reports.get(i)?.as_deref());
        let parsed = reported.filter_map(|json| serde_json::from_str::<TenantReport>(json).ok());
        tenant.quota.set_elsewhere(parsed.map(|r| r.connections).sum());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::backend::control::StoredTenant;
    use crate::config::Config;
    use crate::hub::Conn;

    async fn app() -> App {
        let config = Config::from_toml("[server]\nadmin_token = \"admin-token-1234\"\n", "test", []).unwrap();
        App::new(config).await.unwrap().0
    }

    /// A tenant whose publish key is its own (keys are unique across tenants).
    fn stored(id: &str) -> StoredTenant {
        let key = json!({ "sha256": format!("{:0>64}", hex(id)) });
        serde_json::from_value(json!({ "settings": {}, "publish_keys": [key], "management_keys": [], "created_at": 0 }))
            .unwrap()
    }

    fn hex(id: &str) -> String {
        id.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn with_tenant(id: &str) -> impl FnMut(&mut ControlState) -> Result<(), StoreError> {
        move |state| {
            state.tenants.insert(id.to_owned(), stored(id));
            Ok(())
        }
    }

    #[tokio::test]
    async fn concurrent_changes_each_land_in_the_store_and_on_this_node() {
        let app = app().await;
        let changes = ["a", "b", "c"].map(|id| change(&app, with_tenant(id)));
        for landed in futures_util::future::join_all(changes).await {
            landed.unwrap();
        }
        let stored = app.control().store.load().await.unwrap();
        assert_eq!((stored.version, stored.tenants.len()), (3, 3));
        assert!(["a", "b", "c"].iter().all(|id| app.tenants().get(id).is_some()));
        assert_eq!(app.control().applied.lock().await.version, 3);
    }

    #[tokio::test]
    async fn an_older_state_is_never_applied_over_a_newer_one() {
        let app = app().await;
        let mut newer = ControlState { version: 2, ..ControlState::default() };
        newer.tenants.insert("x".into(), stored("x"));
        assert!(apply(&app, &newer).await);
        assert!(apply(&app, &ControlState { version: 1, ..ControlState::default() }).await);
        assert!(app.tenants().get("x").is_some(), "version 1 came too late");
    }

    #[tokio::test]
    async fn a_deleted_tenants_connections_are_closed() {
        let app = app().await;
        change(&app, with_tenant("gone")).await.unwrap();
        let tenant = app.tenants().get("gone").unwrap();
        let conn: Arc<Conn> =
            session::conn(app.hub(), tenant, "ann", Vec::new(), (false, crate::protocol::Dialect::Native));
        app.hub().register(&conn);
        change(&app, |state: &mut ControlState| {
            state.tenants.remove("gone");
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
        assert!(app.tenants().get("gone").is_none());
        assert!(conn.outbox.killed().is_some(), "its connection is told to close");
    }
}
