//! The plugin calls the rest of the host makes: `authenticate` during a WebSocket handshake,
//! and `transform` then `route` once per published event. Calls run in the calling task,
//! with no hand-off to another thread; a plugin that runs for longer than an epoch tick
//! yields to the runtime at every tick, so one running to its deadline does not hold an
//! async worker that serves other tenants' connections.

use std::sync::Arc;

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

/// The event as the policy leaves it after a failed call, or why it was dropped.
fn on_failure(plugin: &LoadedPlugin, ev: Event, why: &str) -> Result<Event, String> {
    tracing::debug!(tenant = &*plugin.tenant, hook = plugin.hook.as_str(), event = %ev.id, "{why}");
    match plugin.on_failure {
        FailurePolicy::Skip => Ok(ev),
        FailurePolicy::Drop => {
            Err(format!("plugin_failed: the {} plugin failed ({why}) and its policy is drop", plugin.hook.as_str()))
        }
    }
}

/// Why an event was dropped by a plugin's own decision.
fn dropped(plugin: &LoadedPlugin) -> String {
    format!("plugin_refused: the {} plugin dropped it", plugin.hook.as_str())
}

async fn apply_transform(plugin: &LoadedPlugin, mut ev: Event) -> Result<Event, String> {
    let lists = Lists::of(&ev);
    match plugin.transform(lists.event(&ev)).await {
        Err(e) => on_failure(plugin, ev, &e.to_string()),
        Ok(types::TransformResult::Keep) => Ok(ev),
        Ok(types::TransformResult::Drop) => Err(dropped(plugin)),
        Ok(types::TransformResult::Rewrite(new)) => match rewrite(&mut ev, new) {
            Ok(()) => Ok(ev),
            Err(why) => {
                let what = format!("an unusable rewrite: {why}");
                plugin.unusable(&what);
                on_failure(plugin, ev, &what)
            }
        },
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

async fn apply_route(plugin: &LoadedPlugin, mut ev: Event) -> Result<Event, String> {
    let lists = Lists::of(&ev);
    let decision = match plugin.route(lists.event(&ev)).await {
        Err(e) => return on_failure(plugin, ev, &e.to_string()),
        Ok(d) => d,
    };
    match route(&mut ev, decision) {
        Ok(true) => Ok(ev),
        Ok(false) => Err(dropped(plugin)),
        Err(why) => {
            plugin.unusable(&why);
            on_failure(plugin, ev, &why)
        }
    }
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
