//! `redact`: removes the `data` fields named in its config (at any depth) and stamps the
//! payload.
//!
//! Config:
//! - `fields`: comma-separated field names to remove (e.g. `ssn,card_number`).
//! - `stamp` (optional): name of the field set to `true` on every object payload
//!   (default `redacted`).
//! - `drop_event` (optional): an event name that is dropped altogether.

use notify_plugin_sdk::{Event, Transform, Transformer, config};
use serde_json::Value;

struct Redact;

fn strip(value: &mut Value, fields: &[&str]) -> usize {
    match value {
        Value::Object(map) => {
            let mut removed = 0;
            for f in fields {
                removed += usize::from(map.remove(*f).is_some());
            }
            removed + map.values_mut().map(|v| strip(v, fields)).sum::<usize>()
        }
        Value::Array(items) => items.iter_mut().map(|v| strip(v, fields)).sum(),
        _ => 0,
    }
}

impl Transformer for Redact {
    fn transform(mut ev: Event) -> Transform {
        if config("drop_event").is_some_and(|name| name == ev.name) {
            return Transform::Drop;
        }
        let Ok(mut data) = ev.json() else { return Transform::Keep };
        let fields = config("fields").unwrap_or_default();
        let fields: Vec<&str> = fields.split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
        strip(&mut data, &fields);
        if let Value::Object(map) = &mut data {
            map.insert(config("stamp").unwrap_or_else(|| "redacted".into()), Value::Bool(true));
        }
        ev.set_json(&data);
        Transform::Rewrite(ev)
    }
}

notify_plugin_sdk::export_transformer!(Redact);
