//! What an event's push to a device shows and when it goes: the publish body's `push`
//! (title, body, icon, deep link, collapse key, lifetime, urgency, and `when` overriding the
//! tenant's rule), validated here, carried on the event to the pipeline that schedules it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether an event to users is pushed to their devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushWhen {
    #[default]
    Never,
    /// At once, to every device of every user the event names.
    Always,
    /// When the delay ends, to each user who has not acked it by then (needs `history.acks`).
    UnreadAfter,
}

/// Longest a push may wait for its reader (`push.delay`).
pub(crate) const MAX_PUSH_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest push services keep a message (`push.ttl`, Web Push's `TTL`).
pub(crate) const MAX_PUSH_TTL: Duration = Duration::from_secs(28 * 24 * 3600);

/// The publish body's `push`: every field optional; the tenant's `push` settings fill in
/// `when`, `delay` and `ttl`, and without a title the device shows the event's name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"when": "unread_after", "delay": "2m", "title": "Order shipped",
    "body": "Order 42 is on its way", "url": "https://shop.example/orders/42", "collapse_key": "order-42"}))]
pub(crate) struct Alert {
    /// `never`, `always` or `unread_after`: overrides the tenant's `push.when`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<PushWhen>,
    /// How long the event may stay unread before it is pushed (`unread_after`): overrides
    /// the tenant's `push.delay`.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "2m")]
    pub delay: Option<Duration>,
    /// At most 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// At most 1,024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// An image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// Where a tap on the notification leads (a deep link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A later push with the same key replaces this one (Web Push `Topic`, APNs
    /// `apns-collapse-id`, FCM `collapse_key`): 1-32 characters of A-Z a-z 0-9 - _.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    /// How long the provider keeps it for a device that is offline: overrides `push.ttl`.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "1h")]
    pub ttl: Option<Duration>,
    /// `very-low`, `low`, `normal` or `high` (Web Push `Urgency`; APNs and FCM priority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<Urgency>,
}

/// How urgent a push is (RFC 8030's `Urgency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::VeryLow => "very-low",
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

const MAX_TITLE: usize = 256;
const MAX_BODY: usize = 1024;
const MAX_URL: usize = 2048;
const MAX_COLLAPSE_KEY: usize = 32;

impl Alert {
    /// Checks the limits; the offending field (under `push.`) and why.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        let long = |text: &Option<String>, max: usize| text.as_ref().is_some_and(|t| t.chars().count() > max);
        if long(&self.title, MAX_TITLE) {
            return Err(("title", format!("at most {MAX_TITLE} characters")));
        }
        if long(&self.body, MAX_BODY) {
            return Err(("body", format!("at most {MAX_BODY} characters")));
        }
        for (name, url) in [("icon", &self.icon), ("url", &self.url)] {
            if url.as_ref().is_some_and(|u| u.len() > MAX_URL || u.chars().any(char::is_control)) {
                return Err((name, format!("at most {MAX_URL} bytes, no control characters")));
            }
        }
        if let Some(key) = &self.collapse_key
            && !((1..=MAX_COLLAPSE_KEY).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(("collapse_key", format!("1-{MAX_COLLAPSE_KEY} characters of A-Z a-z 0-9 - _")));
        }
        if self.delay.is_some_and(|d| d > MAX_PUSH_DELAY) {
            return Err(("delay", "at most 7 days".into()));
        }
        if self.ttl.is_some_and(|t| t > MAX_PUSH_TTL) {
            return Err(("ttl", "at most 28 days".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_field() {
        let alert = |json: &str| serde_json::from_str::<Alert>(json).unwrap().check().map_err(|(field, _)| field);
        assert_eq!(alert(r#"{"title": "hi", "collapse_key": "order-42", "delay": "2m"}"#), Ok(()));
        assert_eq!(alert(r#"{"collapse_key": "a b"}"#), Err("collapse_key"));
        assert_eq!(alert(&format!(r#"{{"title": "{}"}}"#, "x".repeat(257))), Err("title"));
        assert_eq!(alert(r#"{"delay": "8d"}"#), Err("delay"));
        assert!(serde_json::from_str::<Alert>(r#"{"when": "sometimes"}"#).is_err());
    }
}
