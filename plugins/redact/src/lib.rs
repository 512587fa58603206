//! `redact`: removes the `data` fields named in its config (at any depth) and stamps the
//! payload.
//!
//! Config:
//! - `fields`: comma-separated field names to remove (e.g. `ssn,card_number`).
//! - `stamp` (optional): name of the field set to `true` on every object payload
//!   (default `redacted`).
//! - `drop_event` (optional): an event name that is dropped altogether.
//!
//! The payload's top level is parsed; nested objects and arrays are parsed only when their
//! text mentions a field name, and copied as they came otherwise.

use std::collections::BTreeMap;

use notify_plugin_sdk::{Event, Transform, Transformer, config};
use serde_json::value::RawValue;

struct Redact;

/// Whether `text` may hold one of `names` as a key: it contains one of them, or an escape
/// that could spell one.
fn mentions(text: &str, names: &[&str]) -> bool {
    text.contains('\\') || names.iter().any(|n| text.contains(n))
}

fn push_key(out: &mut String, key: &str) {
    out.push_str(&serde_json::to_string(key).expect("strings serialise"));
    out.push(':');
}

/// Writes `value` to `out` without the object fields in `fields`, at any depth, and with
/// `stamp` set to `true` when `value` is an object. Nested values that cannot hold a field
/// are copied without being parsed.
fn redact(value: &RawValue, fields: &[&str], stamp: Option<&str>, out: &mut String) -> serde_json::Result<()> {
    let text = value.get().trim();
    let nested = stamp.is_none();
    match text.as_bytes().first() {
        Some(b'{' | b'[') if nested && !mentions(text, fields) => out.push_str(text),
        Some(b'{') => {
            let map: BTreeMap<String, &RawValue> = serde_json::from_str(text)?;
            out.push('{');
            let kept = map.iter().filter(|(k, _)| !fields.contains(&k.as_str()) && stamp != Some(k.as_str()));
            let stamped = stamp.map(|s| (s, None));
            let entries = kept.map(|(k, v)| (k.as_str(), Some(*v))).chain(stamped);
            for (i, (key, inner)) in entries.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_key(out, key);
                match inner {
                    Some(inner) => redact(inner, fields, None, out)?,
                    None => out.push_str("true"),
                }
            }
            out.push('}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                redact(item, fields, None, out)?;
            }
            out.push(']');
        }
        _ => out.push_str(text),
    }
    Ok(())
}

impl Transformer for Redact {
    fn transform(mut ev: Event) -> Transform {
        if config("drop_event").is_some_and(|name| name == ev.name) {
            return Transform::Drop;
        }
        let fields = config("fields").unwrap_or_default();
        let fields: Vec<&str> = fields.split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
        let stamp = config("stamp").unwrap_or_else(|| "redacted".into());
        let mut out = String::with_capacity(ev.data.len() + stamp.len() + 8);
        let Ok(data) = serde_json::from_slice::<&RawValue>(&ev.data) else { return Transform::Keep };
        if redact(data, &fields, Some(&stamp), &mut out).is_err() {
            return Transform::Keep;
        }
        ev.data = out.into_bytes();
        Transform::Rewrite(ev)
    }
}

notify_plugin_sdk::export_transformer!(Redact);
