//! Ingest: the publish body schema and its validation, shared by every way of publishing.

pub(crate) mod pipeline;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::alert::Alert;
use crate::channel;
use crate::clock::{IdGenerator, now_millis};
use crate::event::{Event, MAX_EVENT_NAME, MAX_TARGETS, check_attributes};

/// A publish request body as publishers send it. At least one target (a user, a channel, or
/// `broadcast: true`); at most 1,000 users and channels together.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Publish, example = json!({"users": ["alice"], "channels": ["news"], "event": "order.updated",
    "data": {"order": 42, "status": "shipped"}, "attributes": {"plan": "pro"}, "idempotency_key": "order-42-shipped"}))]
pub(crate) struct PublishBody {
    /// User ids (1-128 characters of A-Z a-z 0-9 _ - . : @).
    #[serde(default)]
    #[schema(max_items = 1000)]
    users: Vec<String>,
    /// Channel names (as user ids).
    #[serde(default)]
    #[schema(max_items = 1000)]
    channels: Vec<String>,
    /// Deliver to every connection of the tenant.
    #[serde(default)]
    broadcast: bool,
    /// The event's name: 1-128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128)]
    event: String,
    /// Any JSON, passed to clients verbatim (unless the tenant's transform plugin rewrites it).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    data: Option<Box<RawValue>>,
    /// Read by the tenant's plugins, not sent to clients: at most 32, keys 1-64 bytes, values
    /// up to 256 bytes.
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// Of the events of a tenant carrying one key within `server.idempotency_window`, only
    /// the first is published: 1-128 characters of A-Z a-z 0-9 - _ . : @ / + =.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:@/+=-]{1,128}$")]
    idempotency_key: Option<String>,
    /// The event is the next version of a document its channels carry: subscribers who
    /// asked for delta updates and hold the channel's previous event get the difference from
    /// it (docs/PROTOCOL.md, "Delta updates").
    #[serde(default)]
    delta: bool,
    /// Push to the users' devices (docs/PUSH.md): when (overriding the tenant's rule) and
    /// what the notification shows.
    #[serde(default)]
    push: Option<Alert>,
}

/// A publish body that failed validation, naming the offending field (`users[2]`,
/// `[3].event` in batches).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub(crate) struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// Parses and validates one publish body.
pub(crate) fn parse_one(ids: &IdGenerator, body: &[u8]) -> Result<Event, FieldError> {
    let received_at = Instant::now();
    let parsed: PublishBody = deserialize(body)?;
    validate(ids, parsed, "", received_at)
}

/// Parses and validates a batch body (a JSON array of publish bodies).
pub(crate) fn parse_batch(ids: &IdGenerator, body: &[u8], max_events: usize) -> Result<Vec<Event>, FieldError> {
    let received_at = Instant::now();
    let parsed: Vec<PublishBody> = deserialize(body)?;
    if parsed.is_empty() {
        return Err(field_error("[]", "a batch needs at least one event"));
    }
    if parsed.len() > max_events {
        return Err(field_error("[]", format!("a batch holds at most {max_events} events")));
    }
    parsed.into_iter().enumerate().map(|(i, p)| validate(ids, p, &format!("[{i}]."), received_at)).collect()
}

/// Deserializes a JSON body; an error names the offending field (`body` for bad JSON).
pub(crate) fn deserialize<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        let missing = named_in_message(&inner).filter(|_| inner.starts_with("missing field"));
        let syntax = e.inner().is_syntax() || e.inner().is_eof();
        let path = if syntax { String::new() } else { path };
        let field = match (path.as_str(), missing) {
            ("." | "", Some(name)) => name,
            ("." | "", None) => "body".into(),
            (path, Some(name)) => format!("{path}.{name}"),
            (path, None) => path.into(),
        };
        field_error(field, inner)
    })?;
    Ok(value)
}

/// The field serde names in a "missing field `x`" message.
fn named_in_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

fn validate(ids: &IdGenerator, p: PublishBody, prefix: &str, received_at: Instant) -> Result<Event, FieldError> {
    let f = |name: &str| format!("{prefix}{name}");
    if p.event.is_empty() || p.event.len() > MAX_EVENT_NAME || p.event.chars().any(char::is_control) {
        return Err(field_error(
            f("event"),
            format!("must be 1-{MAX_EVENT_NAME} characters without control characters"),
        ));
    }
    if p.users.is_empty() && p.channels.is_empty() && !p.broadcast {
        return Err(field_error(f("users"), "no target: give users, channels, or broadcast: true"));
    }
    if p.users.len() + p.channels.len() > MAX_TARGETS {
        return Err(field_error(f("users"), format!("at most {MAX_TARGETS} users and channels per event")));
    }
    for (list, name) in [(&p.users, "users"), (&p.channels, "channels")] {
        if let Some(i) = list.iter().position(|n| !channel::valid_name(n)) {
            return Err(field_error(f(&format!("{name}[{i}]")), "must be 1-128 characters of A-Z a-z 0-9 _ - . : @"));
        }
    }
    if let Err((i, message)) = check_attributes(p.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        let key = p.attributes.keys().nth(i).map_or(String::new(), |k| format!(".{k}"));
        return Err(field_error(f(&format!("attributes{key}")), message));
    }
    if let Some(key) = &p.idempotency_key
        && !valid_idempotency_key(key)
    {
        return Err(field_error(
            f("idempotency_key"),
            format!("must be 1-{MAX_IDEMPOTENCY_KEY} characters of A-Z a-z 0-9 and - _ . : @ / + ="),
        ));
    }
    if let Some(Err((name, message))) = p.push.as_ref().map(Alert::check) {
        return Err(field_error(f(&format!("push.{name}")), message));
    }
    let mut users = p.users;
    users.sort_unstable();
    users.dedup();
    let mut channels = p.channels;
    channels.sort_unstable();
    channels.dedup();
    let data = p.data.unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON"));
    Ok(Event {
        id: ids.next_id(),
        name: p.event,
        data,
        ts: now_millis(),
        users,
        channels,
        broadcast: p.broadcast,
        attributes: p.attributes.into_iter().collect(),
        filter: None,
        received_at,
        idempotency_key: p.idempotency_key.map(String::into_boxed_str),
        delta: p.delta,
        except: None,
        sender: None,
        alert: p.push.map(Box::new),
    })
}

/// Longest `idempotency_key`.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// UUIDs, hashes, base64 and `order:42`-style keys.
fn valid_idempotency_key(key: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@/+=".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> FieldError {
        parse_one(&IdGenerator::default(), body.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err(r#"{"users":["a"]}"#).field, "event");
        assert_eq!(err(r#"{"event":"e","users":"a"}"#).field, "users");
        assert_eq!(err(r#"{"event":"e","users":["a", 5]}"#).field, "users[1]");
        assert_eq!(err(r#"{"event":"e","users":["ok","bad name"]}"#).field, "users[1]");
        assert_eq!(err(r#"{"event":"e"}"#).field, "users");
        assert_eq!(err(r#"{"event":"e","users":["a"],"colour":1}"#).field, "colour");
        assert_eq!(err(r#"{"event":"e","broadcast":"yes"}"#).field, "broadcast");
        assert_eq!(err("{not json").field, "body");
        let e = parse_batch(&IdGenerator::default(), br#"[{"users":["u"]}]"#, 10);
        assert_eq!(e.unwrap_err().field, "[0].event");
        assert_eq!(err(r#"{"event":"","broadcast":true}"#).field, "event");
        assert_eq!(err(r#"{"event":"e","broadcast":true,"idempotency_key":"a b"}"#).field, "idempotency_key");
        assert_eq!(err(r#"{"event":"e","broadcast":true,"idempotency_key":""}"#).field, "idempotency_key");
    }

    #[test]
    fn batch_errors_carry_the_index() {
        let body = r#"[{"event":"a","users":["u"]},{"event":"b","channels":["bad name"]}]"#;
        let e = parse_batch(&IdGenerator::default(), body.as_bytes(), 10).unwrap_err();
        assert_eq!(e.field, "[1].channels[0]");
    }

    #[test]
    fn data_is_kept_verbatim() {
        let body = r#"{"event":"e","users":["u"],"data":{"a": [1, 2.50]}}"#;
        let ev = parse_one(&IdGenerator::default(), body.as_bytes()).unwrap();
        assert_eq!(ev.data.get(), r#"{"a": [1, 2.50]}"#);
    }
}
