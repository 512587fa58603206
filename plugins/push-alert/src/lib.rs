//! `push-alert`: builds the push to the addressed users' devices from the event's payload.
//!
//! Config (every key optional):
//! - `title_field`, `body_field`, `url_field`: the payload fields the title, the text and
//!   the link come from (default `title`, `body`, `url`).
//! - `unread_after_ms`: push only to users who have not read (acked) the event by then;
//!   without it the publisher's or the tenant's rule decides when.
//!
//! The event's name is the collapse key, so a later event of the same name replaces the
//! notification. An event whose payload has no title keeps the publisher's push.

use std::time::Duration;

use notify_plugin_sdk::{Event, Push, Transform, Transformer, config};

struct PushAlert;

fn text(data: &serde_json::Value, key: &str, default: &str) -> Option<String> {
    let field = config(key).unwrap_or_else(|| default.into());
    data.get(&field)?.as_str().map(str::to_owned)
}

impl Transformer for PushAlert {
    fn transform(ev: Event) -> Transform {
        let Ok(data) = ev.json() else { return Transform::Keep };
        let Some(title) = text(&data, "title_field", "title") else { return Transform::Keep };
        let mut push = Push::titled(title).collapse_key(ev.name.replace(['.', ':'], "-"));
        if let Some(body) = text(&data, "body_field", "body") {
            push = push.body(body);
        }
        if let Some(url) = text(&data, "url_field", "url") {
            push = push.url(url);
        }
        if let Some(ms) = config("unread_after_ms").and_then(|ms| ms.parse().ok()) {
            push = push.unread_after(Duration::from_millis(ms));
        }
        Transform::Rewrite(ev.with_push(push))
    }
}

notify_plugin_sdk::export_transformer!(PushAlert);
