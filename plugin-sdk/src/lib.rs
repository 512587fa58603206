//! Write [notify](https://github.com/notify-rs/notify) plugins in plain Rust.
//!
//! A plugin is a WebAssembly component (target `wasm32-wasip2`) that implements one or more
//! hooks for its tenant:
//!
//! | hook | trait | export macro |
//! | --- | --- | --- |
//! | authenticate connections | [`Authenticator`] | [`export_authenticator!`] |
//! | rewrite or drop events | [`Transformer`] | [`export_transformer!`] |
//! | decide who receives events | [`Router`] | [`export_router!`] |
//!
//! A component exports exactly the hooks whose macro it invokes. This SDK builds against
//! `notify:plugin@0.2.0`: a transform can set the event's [`Push`].
//!
//! ```no_run
//! use notify_plugin_sdk::{Route, Router, Event, Clause};
//!
//! struct PlanRouter;
//!
//! impl Router for PlanRouter {
//!     fn route(ev: Event) -> Route {
//!         match ev.attribute("plan") {
//!             Some(plan) => Route::keep().filter(Clause::eq("plan", plan)),
//!             None => Route::keep(),
//!         }
//!     }
//! }
//!
//! notify_plugin_sdk::export_router!(PlanRouter);
//! ```
//!
//! Plugins run sandboxed: no filesystem, no network, no environment. They can log
//! ([`log`]), read their own configuration ([`config`]), and read the clock and random
//! numbers through the standard library. Every call has a deadline and a memory cap; a
//! plugin that traps or overruns fails that one call, per the tenant's failure policy.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod __private {
    #![allow(missing_docs, unsafe_code, clippy::all)]

    wit_bindgen::generate!({
        path: "../wit",
        world: "imports",
        generate_all,
    });

    pub mod auth {
        wit_bindgen::generate!({
            path: "../wit",
            world: "authenticator",
            pub_export_macro: true,
            export_macro_name: "__notify_export_authenticator",
            default_bindings_module: "notify_plugin_sdk::__private::auth",
            with: {
                "notify:plugin/types@0.2.0": crate::__private::notify::plugin::types,
                "notify:plugin/host@0.2.0": crate::__private::notify::plugin::host,
            },
        });
    }

    pub mod transform {
        wit_bindgen::generate!({
            path: "../wit",
            world: "transformer",
            pub_export_macro: true,
            export_macro_name: "__notify_export_transformer",
            default_bindings_module: "notify_plugin_sdk::__private::transform",
            with: {
                "notify:plugin/types@0.2.0": crate::__private::notify::plugin::types,
                "notify:plugin/host@0.2.0": crate::__private::notify::plugin::host,
            },
        });
    }

    pub mod route {
        wit_bindgen::generate!({
            path: "../wit",
            world: "router",
            pub_export_macro: true,
            export_macro_name: "__notify_export_router",
            default_bindings_module: "notify_plugin_sdk::__private::route",
            with: {
                "notify:plugin/types@0.2.0": crate::__private::notify::plugin::types,
                "notify:plugin/host@0.2.0": crate::__private::notify::plugin::host,
            },
        });
    }
}

use __private::notify::plugin::host;
pub use __private::notify::plugin::types::{
    Clause, ConnectRequest, Deny, Event, Identity, Op, Push, PushWhen, RouteDecision as Route, Targets,
    TransformResult as Transform, Urgency,
};

/// Implement this and export it with [`export_authenticator!`] to authenticate connections.
pub trait Authenticator {
    /// Called once per connection attempt, before the WebSocket upgrade. Returning
    /// `Err(Deny)` refuses the connection with the deny's status (401 or 403) and reason.
    fn authenticate(req: ConnectRequest) -> Result<Identity, Deny>;
}

/// Implement this and export it with [`export_transformer!`] to rewrite or drop events.
pub trait Transformer {
    /// Called once per published event, before fan-out.
    fn transform(ev: Event) -> Transform;
}

/// Implement this and export it with [`export_router!`] to decide who receives events.
pub trait Router {
    /// Called once per published event, after `transform`, before fan-out.
    fn route(ev: Event) -> Route;
}

/// Exports `$t: Authenticator` as this component's `authenticate` hook.
#[macro_export]
macro_rules! export_authenticator {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __NotifyAuthenticator;
        impl $crate::__private::auth::exports::notify::plugin::auth::Guest for __NotifyAuthenticator {
            fn authenticate(req: $crate::ConnectRequest) -> Result<$crate::Identity, $crate::Deny> {
                <$t as $crate::Authenticator>::authenticate(req)
            }
        }
        $crate::__private::auth::__notify_export_authenticator!(__NotifyAuthenticator with_types_in $crate::__private::auth);
    };
}

/// Exports `$t: Transformer` as this component's `transform` hook.
#[macro_export]
macro_rules! export_transformer {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __NotifyTransformer;
        impl $crate::__private::transform::exports::notify::plugin::transform::Guest for __NotifyTransformer {
            fn transform(ev: $crate::Event) -> $crate::Transform {
                <$t as $crate::Transformer>::transform(ev)
            }
        }
        $crate::__private::transform::__notify_export_transformer!(__NotifyTransformer with_types_in $crate::__private::transform);
    };
}

/// Exports `$t: Router` as this component's `route` hook.
#[macro_export]
macro_rules! export_router {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __NotifyRouter;
        impl $crate::__private::route::exports::notify::plugin::route::Guest for __NotifyRouter {
            fn route(ev: $crate::Event) -> $crate::Route {
                <$t as $crate::Router>::route(ev)
            }
        }
        $crate::__private::route::__notify_export_router!(__NotifyRouter with_types_in $crate::__private::route);
    };
}

/// Reads a value of this plugin's configuration (given at upload or in the host's
/// config.toml). A plugin version's configuration never changes, so each key is asked of
/// the host once per instance and remembered.
pub fn config(key: &str) -> Option<String> {
    thread_local! {
        static SEEN: std::cell::RefCell<std::collections::BTreeMap<String, Option<String>>> =
            const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
    }
    if let Some(value) = SEEN.with_borrow(|seen| seen.get(key).cloned()) {
        return value;
    }
    let value = host::config(key);
    SEEN.with_borrow_mut(|seen| seen.insert(key.to_owned(), value.clone()));
    value
}

/// Logging into the host's log; each line carries the tenant and plugin.
pub mod log {
    use super::host::{self, Level};

    /// Logs at debug level.
    pub fn debug(message: &str) {
        host::log(Level::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        host::log(Level::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        host::log(Level::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        host::log(Level::Error, message);
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl ConnectRequest {
    /// The first value of header `name` (names are lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        lookup(&self.headers, &name.to_ascii_lowercase())
    }

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        lookup(&self.query, name)
    }

    /// The token from `?token=` or an `Authorization: Bearer` header.
    pub fn bearer_token(&self) -> Option<&str> {
        self.query_param("token").or_else(|| {
            let value = self.header("authorization")?;
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
    }
}

impl Identity {
    /// An identity for `user` with the tenant's default channels and no attributes.
    pub fn new(user: impl Into<String>) -> Self {
        Self { user: user.into(), channels: None, attributes: Vec::new(), expires_at: None }
    }

    /// Restricts subscriptions to these channel patterns (`news`, `orders.*`, `*`).
    pub fn with_channels<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.channels = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Adds a subscriber attribute that route filters can match.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// Ends the connection at this Unix time (seconds).
    pub fn expiring_at(mut self, unix_secs: u64) -> Self {
        self.expires_at = Some(unix_secs);
        self
    }
}

impl Deny {
    /// Refuses with 401 Unauthorized.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self { status: 401, reason: reason.into() }
    }

    /// Refuses with 403 Forbidden.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self { status: 403, reason: reason.into() }
    }
}

impl Event {
    /// The value of event attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        lookup(&self.attributes, key)
    }

    /// The payload parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.data)
    }

    /// Replaces the payload with `value`.
    pub fn set_json(&mut self, value: &serde_json::Value) {
        self.data = serde_json::to_vec(value).expect("JSON values serialise");
    }

    /// This event with `push` as its push to the addressed users' devices (return it in
    /// [`Transform::Rewrite`]).
    pub fn with_push(mut self, push: Push) -> Self {
        self.push = Some(push);
        self
    }
}

impl Push {
    /// A push titled `title`, sent by the tenant's rule (`push.when`) unless [`Push::always`],
    /// [`Push::unread_after`] or [`Push::never`] says otherwise.
    pub fn titled(title: impl Into<String>) -> Self {
        Self {
            when: None,
            delay_ms: None,
            title: Some(title.into()),
            body: None,
            icon: None,
            url: None,
            collapse_key: None,
            ttl_ms: None,
            urgency: None,
        }
    }

    /// Pushed at once to every device of the addressed users.
    pub fn always(mut self) -> Self {
        self.when = Some(PushWhen::Always);
        self
    }

    /// Pushed to each addressed user who has not read (acked) the event within `delay`.
    pub fn unread_after(mut self, delay: std::time::Duration) -> Self {
        self.when = Some(PushWhen::UnreadAfter);
        self.delay_ms = Some(millis(delay));
        self
    }

    /// Not pushed, whatever the publisher or the tenant's rule said.
    pub fn never(mut self) -> Self {
        self.when = Some(PushWhen::Never);
        self
    }

    /// The text under the title (at most 1,024 characters).
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Where a tap on the notification leads.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// An image URL.
    pub fn icon(mut self, icon: impl Into<String>) -> Self {
        self.icon = Some(icon.into());
        self
    }

    /// A later push with the same key replaces this one (1-32 characters of `A-Z a-z 0-9 - _`).
    pub fn collapse_key(mut self, key: impl Into<String>) -> Self {
        self.collapse_key = Some(key.into());
        self
    }

    /// How long the provider keeps it for a device that is offline.
    pub fn ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl_ms = Some(millis(ttl));
        self
    }

    /// How urgent it is.
    pub fn urgency(mut self, urgency: Urgency) -> Self {
        self.urgency = Some(urgency);
        self
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Clause {
    fn new<S: Into<String>>(key: impl Into<String>, op: Op, values: impl IntoIterator<Item = S>) -> Self {
        Self { key: key.into(), op, values: values.into_iter().map(Into::into).collect() }
    }

    /// The subscriber's attribute `key` equals `value`.
    pub fn eq(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(key, Op::Eq, [value.into()])
    }

    /// The subscriber's attribute `key` is missing or differs from `value`.
    pub fn ne(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(key, Op::Ne, [value.into()])
    }

    /// The subscriber's attribute `key` equals one of `values`.
    pub fn any_of<S: Into<String>>(key: impl Into<String>, values: impl IntoIterator<Item = S>) -> Self {
        Self::new(key, Op::In, values)
    }

    /// The subscriber's attribute `key` is missing or equals none of `values`.
    pub fn none_of<S: Into<String>>(key: impl Into<String>, values: impl IntoIterator<Item = S>) -> Self {
        Self::new(key, Op::NotIn, values)
    }

    /// The subscriber has attribute `key`.
    pub fn exists(key: impl Into<String>) -> Self {
        Self::new(key, Op::Exists, Vec::<String>::new())
    }
}

impl Route {
    /// Deliver to the event's own targets, to everyone there.
    pub fn keep() -> Self {
        Self { drop: false, targets: None, filter: Vec::new() }
    }

    /// Deliver nothing.
    pub fn drop_event() -> Self {
        Self { drop: true, targets: None, filter: Vec::new() }
    }

    /// Deliver to these targets instead of the event's own.
    pub fn to(targets: Targets) -> Self {
        Self { drop: false, targets: Some(targets), filter: Vec::new() }
    }

    /// Also require `clause` of every recipient (clauses are ANDed).
    pub fn filter(mut self, clause: Clause) -> Self {
        self.filter.push(clause);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        let id = Identity::new("ann").with_channels(["news"]).with_attribute("plan", "pro").expiring_at(9);
        assert_eq!(id.channels.as_deref(), Some(&["news".to_string()][..]));
        assert_eq!(id.attributes, vec![("plan".into(), "pro".into())]);
        let r = Route::keep().filter(Clause::any_of("plan", ["pro", "team"]));
        assert_eq!(r.filter[0].values, vec!["pro".to_string(), "team".to_string()]);
        let req = ConnectRequest {
            tenant: "t".into(),
            path: "/".into(),
            headers: vec![("authorization".into(), "Bearer abc".into())],
            query: vec![],
            remote_addr: "127.0.0.1:1".into(),
        };
        assert_eq!(req.bearer_token(), Some("abc"));
        assert_eq!(req.header("Authorization"), Some("Bearer abc"));
        let push = Push::titled("Shipped").body("Order 42").unread_after(std::time::Duration::from_secs(90));
        assert_eq!(
            (push.when, push.delay_ms, push.body.as_deref()),
            (Some(PushWhen::UnreadAfter), Some(90_000), Some("Order 42"))
        );
    }
}
