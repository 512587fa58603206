//! The plugin calls the rest of the host makes: `authenticate` during a WebSocket handshake,
//! and `transform` then `route` once per published event. Calls run in the calling task,
//! with no hand-off to another thread; a plugin that runs for longer than an epoch tick
//! yields to the runtime at every tick, so one running to its deadline does not hold an
//! async worker that serves other tenants' connections.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::value::RawValue;

use super::LoadedPlugin;
use super::bindings::types;
use crate::auth::Identity;
use crate::channel;
use crate::config::FailurePolicy;
use crate::event::Event;
use crate::event::{MAX_EVENT_NAME, check_attributes};
use crate::segment::{Clause, Filter, Op};

/// What the auth plugin decided.
pub(crate) enum AuthOutcome {
    Allow(Identity, Vec<(String, String)>),
    Deny {
        status: u16,
        reason: String,
    },
    /// The call failed or returned an unusable identity: the connection is refused (auth
    /// fails closed).
    Failed(String),
}

/// Runs the tenant's auth plugin on a connection attempt.
pub(crate) async fn authenticate(plugin: Arc<LoadedPlugin>, req: types::ConnectRequest<'_>) -> AuthOutcome {
    match plugin.authenticate(req).await {
        Err(e) => AuthOutcome::Failed(e.to_string()),
        Ok(Err(deny)) => {
            let status = if deny.status == 401 { 401 } else { 403 };
            AuthOutcome::Deny { status, reason: deny.reason.chars().take(512).collect() }
        }
        Ok(Ok(id)) => match identity(id) {
            Ok((identity, attributes)) => AuthOutcome::Allow(identity, attributes),
            Err(why) => {
                let what = format!("an invalid identity: {why}");
                plugin.unusable(&what);
                AuthOutcome::Failed(format!("plugin returned {what}"))
            }
        },
    }
}

pub(crate) fn identity(id: types::Identity) -> Result<(Identity, Vec<(String, String)>), String> {
    if !channel::valid_name(&id.user) {
        return Err(format!("user {:?} is not a valid user id", id.user));
    }
    if let Some(bad) = id.channels.iter().flatten().find(|p| !channel::valid_pattern(p)) {
        return Err(format!("channel pattern {bad:?} is not valid"));
    }
    check_attributes(id.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|(_, why)| why)?;
    Ok((Identity { user: id.user, channels: id.channels, expires_at: id.expires_at }, id.attributes))
}

/// An event a plugin dropped: its id, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub id: String,
    pub reason: String,
}

/// Runs `transform` then `route` (each if installed) over `events`, once per event; the
/// events to deliver, and those a plugin dropped.
pub(crate) async fn process_events(
    transform: Option<Arc<LoadedPlugin>>,
    route: Option<Arc<LoadedPlugin>>,
    events: Vec<Event>,
) -> (Vec<Event>, Vec<Refusal>) {
    if transform.is_none() && route.is_none() {
        return (events, Vec::new());
    }
    let mut kept = Vec::with_capacity(events.len());
    let mut refused = Vec::new();
    for ev in events {
        let id = ev.id.clone();
        let ev = match &transform {
            Some(p) => apply_transform(p, ev).await,
            None => Ok(ev),
        };
        let ev = match (&route, ev) {
            (Some(p), Ok(ev)) => apply_route(p, ev).await,
            (_, ev) => ev,
        };
        match ev {
            Ok(ev) => kept.push(ev),
            Err(reason) => refused.push(Refusal { id, reason }),
        }
    }
    (kept, refused)
}

/// An event's string lists as the plugin ABI borrows them: lent, not copied, so a call
/// allocates nothing for an event that names no users, channels or attributes.
struct Lists<'a> {
    attributes: Vec<(&'a str, &'a str)>,
    users: Vec<&'a str>,
    channels: Vec<&'a str>,
}

impl<'a> Lists<'a> {
    fn of(ev: &'a Event) -> Self {
        Self {
            attributes: ev.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            users: ev.users.iter().map(String::as_str).collect(),
            channels: ev.channels.iter().map(String::as_str).collect(),
        }
    }

    fn event(&'a self, ev: &'a Event) -> types::EventParam<'a> {
        types::EventParam {
            id: &ev.id,
            name: &ev.name,
            data: ev.data.get().as_bytes(),
            attributes: &self.attributes,
            users: &self.users,
            channels: &self.channels,
            broadcast: ev.broadcast,
            push: ev.alert.as_deref().map(super::push::lend),
        }
    }
}

/// Calls the hook through `once` and applies its decision to `ev`: `ev` to deliver, or why
/// it is not delivered. A failed call is made once more under the `retry` policy (not when
/// the breaker has just disabled the version); if it still fails, the policy decides.
async fn decide(
    plugin: &LoadedPlugin,
    mut ev: Event,
    once: impl AsyncFn(&LoadedPlugin, &mut Event) -> Result<bool, String>,
) -> Result<Event, String> {
    let mut outcome = once(plugin, &mut ev).await;
    let retried = outcome.is_err() && plugin.on_failure == FailurePolicy::Retry && !plugin.is_disabled();
    if retried {
        plugin.metrics().retries.fetch_add(1, Relaxed);
        outcome = once(plugin, &mut ev).await;
    }
    match outcome {
        Ok(true) => Ok(ev),
        Ok(false) => Err(format!("plugin_refused: the {} plugin dropped it", plugin.hook.as_str())),
        Err(why) => on_failure(plugin, ev, &why, retried),
    }
}

/// The event as the policy leaves it after a failed call (made twice if `retried`), or why
/// it was dropped.
fn on_failure(plugin: &LoadedPlugin, ev: Event, why: &str, retried: bool) -> Result<Event, String> {
    tracing::debug!(tenant = &*plugin.tenant, hook = plugin.hook.as_str(), event = %ev.id, "{why}");
    let hook = plugin.hook.as_str();
    match plugin.on_failure {
        FailurePolicy::Skip => {
            plugin.metrics().unprocessed.fetch_add(1, Relaxed);
            Ok(ev)
        }
        FailurePolicy::Retry if retried => {
            plugin.metrics().dropped.fetch_add(1, Relaxed);
            Err(format!("plugin_failed: the {hook} plugin failed twice (the last: {why}) and its policy is retry"))
        }
        FailurePolicy::Retry => {
            plugin.metrics().dropped.fetch_add(1, Relaxed);
            Err(format!(
                "plugin_failed: the {hook} plugin failed ({why}) and was disabled by its breaker, so not retried"
            ))
        }
        FailurePolicy::Drop => {
            plugin.metrics().dropped.fetch_add(1, Relaxed);
            Err(format!("plugin_failed: the {hook} plugin failed ({why}) and its policy is drop"))
        }
    }
}

async fn apply_transform(plugin: &LoadedPlugin, ev: Event) -> Result<Event, String> {
    decide(plugin, ev, transform_once).await
}

/// One transform call applied to `ev`: whether `ev` is still delivered, or why the call
/// failed (then `ev` is unchanged).
async fn transform_once(plugin: &LoadedPlugin, ev: &mut Event) -> Result<bool, String> {
    let result = {
        let lists = Lists::of(ev);
        plugin.transform(lists.event(ev)).await
    };
    match result.map_err(|e| e.to_string())? {
        types::TransformResult::Keep => Ok(true),
        types::TransformResult::Drop => Ok(false),
        types::TransformResult::Rewrite(new) => rewrite(ev, new).map(|()| true).map_err(|why| {
            let what = format!("an unusable rewrite: {why}");
            plugin.unusable(&what);
            what
        }),
    }
}

pub(crate) fn rewrite(ev: &mut Event, new: types::EventResult) -> Result<(), String> {
    if new.name.is_empty() || new.name.len() > MAX_EVENT_NAME || new.name.chars().any(char::is_control) {
        return Err("invalid event name".into());
    }
    check_attributes(new.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|(_, why)| why)?;
    let text = String::from_utf8(new.data).map_err(|_| "data is not UTF-8".to_string())?;
    let data = RawValue::from_string(text).map_err(|e| format!("data is not JSON: {e}"))?;
    let alert = new.push.map(super::push::take).transpose()?;
    ev.name = new.name;
    ev.data = data;
    ev.attributes = new.attributes;
    ev.alert = alert.map(Box::new);
    Ok(())
}

async fn apply_route(plugin: &LoadedPlugin, ev: Event) -> Result<Event, String> {
    decide(plugin, ev, route_once).await
}

/// One route call applied to `ev`, as [`transform_once`].
async fn route_once(plugin: &LoadedPlugin, ev: &mut Event) -> Result<bool, String> {
    let decision = {
        let lists = Lists::of(ev);
        plugin.route(lists.event(ev)).await
    };
    route(ev, decision.map_err(|e| e.to_string())?).inspect_err(|why| plugin.unusable(why))
}

/// Applies `decision` to `ev`: whether it is still delivered, or why the decision is unusable
/// (then `ev` is unchanged).
pub(crate) fn route(ev: &mut Event, decision: types::RouteDecision) -> Result<bool, String> {
    if decision.drop {
        return Ok(false);
    }
    if let Some(t) = decision.targets {
        if let Some(bad) = t.users.iter().chain(&t.channels).find(|n| !channel::valid_name(n)) {
            return Err(format!("route returned invalid target {bad:?}"));
        }
        ev.users = t.users;
        ev.channels = t.channels;
        ev.broadcast = t.broadcast;
    }
    if !decision.filter.is_empty() {
        let clauses = decision.filter.into_iter().map(clause).collect();
        ev.filter = Some(Arc::new(Filter { clauses }));
    }
    Ok(true)
}

fn clause(c: types::Clause) -> Clause {
    let op = match c.op {
        types::Op::Eq => Op::Eq,
        types::Op::Ne => Op::Ne,
        types::Op::In => Op::In,
        types::Op::NotIn => Op::NotIn,
        types::Op::Exists => Op::Exists,
    };
    Clause { key: c.key.into(), op, values: c.values.into_iter().map(String::into_boxed_str).collect() }
}
