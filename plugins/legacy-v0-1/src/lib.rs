//! `legacy-v0-1`: every hook, built against the frozen `notify:plugin@0.1.0`
//! (wit/compat/0.1.0) with wit-bindgen directly, as components uploaded before 0.2.0 were.
//! The host's test suite runs it to prove that such components keep working.
//!
//! - `authenticate`: `?user=NAME&token=legacy` connects as NAME with attribute
//!   `built=v0.1`; any other token is refused with 401 `legacy plugin says no`.
//! - `transform`: adds `"legacy": true` to object payloads (a rewrite; the host keeps the
//!   event's push, which a 0.1.0 plugin cannot see); drops events named `legacy.drop`.
//! - `route`: events with attribute `only` reach only subscribers whose `built` attribute
//!   equals it.

#![allow(unsafe_code, missing_docs)]

wit_bindgen::generate!({
    path: "../../wit/compat/0.1.0",
    world: "plugin-host",
});

use exports::notify::plugin::{auth, route, transform};
use notify::plugin::types::{Clause, ConnectRequest, Deny, Event, Identity, Op, RouteDecision, TransformResult};

struct Legacy;

fn pair<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl auth::Guest for Legacy {
    fn authenticate(req: ConnectRequest) -> Result<Identity, Deny> {
        match (pair(&req.query, "user"), pair(&req.query, "token")) {
            (Some(user), Some("legacy")) => Ok(Identity {
                user: user.into(),
                channels: None,
                attributes: vec![("built".into(), "v0.1".into())],
                expires_at: None,
            }),
            _ => Err(Deny { status: 401, reason: "legacy plugin says no".into() }),
        }
    }
}

impl transform::Guest for Legacy {
    fn transform(mut ev: Event) -> TransformResult {
        if ev.name == "legacy.drop" {
            return TransformResult::Drop;
        }
        let text = String::from_utf8_lossy(&ev.data);
        let Some(rest) = text.trim().strip_prefix('{') else { return TransformResult::Keep };
        let glue = if rest.trim_start().starts_with('}') { "" } else { "," };
        ev.data = format!("{{\"legacy\":true{glue}{rest}").into_bytes();
        TransformResult::Rewrite(ev)
    }
}

impl route::Guest for Legacy {
    fn route(ev: Event) -> RouteDecision {
        let filter = match pair(&ev.attributes, "only") {
            Some(built) => vec![Clause { key: "built".into(), op: Op::Eq, values: vec![built.into()] }],
            None => Vec::new(),
        };
        RouteDecision { drop: false, targets: None, filter }
    }
}

export!(Legacy);
