//! One push waiting for its time, as stored (an `Escalation`'s body): the event to one user,
//! what the notification shows, and whether it goes only if unread; or the withdrawal of a
//! push the user has read since. Also what a device receives: the notification's JSON, made
//! to fit one push message, or the withdrawal's.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::alert::Alert;
use crate::alert::PushWhen;
use crate::event::Event;

/// An event to one user, to push when due.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Job {
    pub tenant: String,
    pub user: String,
    /// The event's id: the read check looks for it among the user's unread events.
    pub id: String,
    pub event: String,
    pub ts: u64,
    pub data: Box<RawValue>,
    /// `always` or `unread_after`.
    pub when: PushWhen,
    #[serde(default)]
    pub alert: Alert,
    #[serde(default)]
    pub kind: Kind,
}

/// What a job sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// The event's notification.
    #[default]
    Notify,
    /// Tells the devices that the event was read: its notification can go.
    Withdraw,
}

impl Job {
    pub(crate) fn new(tenant: &str, user: &str, event: &Event, when: PushWhen) -> Self {
        Self {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            id: event.id.clone(),
            event: event.name.clone(),
            ts: event.ts,
            data: event.data.clone(),
            when,
            alert: event.alert.as_deref().cloned().unwrap_or_default(),
            kind: Kind::Notify,
        }
    }

    /// The withdrawal of the push of event `id` (with collapse key `tag`) to `user`.
    pub(crate) fn withdrawal(tenant: &str, user: &str, id: &str, tag: Option<String>) -> Self {
        let alert = Alert { collapse_key: tag, ..Alert::default() };
        Self {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            id: id.to_owned(),
            event: String::new(),
            ts: crate::clock::now_millis(),
            data: RawValue::from_string("null".into()).expect("null is JSON"),
            when: PushWhen::Always,
            alert,
            kind: Kind::Withdraw,
        }
    }

    /// The escalation's id: one per tenant, event, user and kind.
    pub(crate) fn key(&self) -> String {
        let suffix = if self.kind == Kind::Withdraw { ":w" } else { "" };
        format!("{}:{}:{}{suffix}", self.tenant, self.id, self.user)
    }

    /// What the device gets (docs/PUSH.md): the notification and the event, within `max`
    /// bytes; without the event's data when it does not fit (`truncated: true`).
    pub(crate) fn payload(&self, max: usize) -> Vec<u8> {
        if self.kind == Kind::Withdraw {
            let json = serde_json::json!({"type": "withdraw", "id": self.id, "tag": self.alert.collapse_key});
            return serde_json::to_vec(&json).expect("JSON values serialize");
        }
        let full = self.notification(Some(&self.data));
        if full.len() <= max {
            return full;
        }
        self.notification(None)
    }

    fn notification(&self, data: Option<&RawValue>) -> Vec<u8> {
        let a = &self.alert;
        let json = serde_json::json!({
            "type": "notification",
            "id": self.id,
            "event": self.event,
            "ts": self.ts,
            "title": a.title.as_deref().unwrap_or(&self.event),
            "body": a.body,
            "icon": a.icon,
            "url": a.url,
            "tag": a.collapse_key,
            "data": data,
            "truncated": data.is_none(),
        });
        serde_json::to_vec(&json).expect("JSON values serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_too_large_for_one_message_goes_without_the_data() {
        let mut event = Event::sample("order.shipped", &["ann"], &[]);
        event.data = RawValue::from_string(format!("{{\"note\": \"{}\"}}", "x".repeat(5000))).unwrap();
        let job = Job::new("t", "ann", &event, PushWhen::Always);
        let small: serde_json::Value = serde_json::from_slice(&job.payload(3993)).unwrap();
        assert_eq!(small["data"], serde_json::Value::Null);
        assert_eq!(small["truncated"], true);
        assert_eq!(small["title"], "order.shipped", "the event's name without a title");
        let whole: serde_json::Value = serde_json::from_slice(&job.payload(10_000)).unwrap();
        assert_eq!(whole["data"]["note"].as_str().map(str::len), Some(5000));
        let round: Job = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(round.key(), format!("t:{}:ann", event.id));
    }
}
