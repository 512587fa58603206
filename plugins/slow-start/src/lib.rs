//! Test plugin: a transform whose first call in an instance spins for about ten million
//! steps (some milliseconds of CPU, as a language runtime sets itself up on first use),
//! unless the payload has a `quick` field; every later call is quick. Each call rewrites the
//! payload to `{"call": n}`, n counting the calls this instance has served. It traps instead
//! when the payload has a `trap` field, or a `trap_on_even` field and n is even (so a retry
//! on a fresh instance, whose n is 1, succeeds). A payload's `spin` (millions of steps)
//! makes any call spin, and its `allocate_mib` makes the call hold that much memory.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use notify_plugin_sdk::{Event, Transform, Transformer};

const SET_UP_STEPS: u64 = 10_000_000;

static CALLS: AtomicU64 = AtomicU64::new(0);

struct SlowStart;

fn spin(steps: u64) {
    let mut x: u64 = 0;
    for _ in 0..steps {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

impl Transformer for SlowStart {
    fn transform(mut ev: Event) -> Transform {
        let data = ev.json().unwrap_or_default();
        let has = |field: &str| data.get(field).is_some();
        let number = |field: &str| data.get(field).and_then(serde_json::Value::as_u64).unwrap_or(0);
        if has("trap") {
            panic!("slow-start: asked to trap");
        }
        let call = CALLS.fetch_add(1, Relaxed) + 1;
        if has("trap_on_even") && call.is_multiple_of(2) {
            panic!("slow-start: asked to trap on an even call");
        }
        if call == 1 && !has("quick") {
            spin(SET_UP_STEPS);
        }
        spin(number("spin") * 1_000_000);
        let mut out = serde_json::json!({ "call": call });
        if has("allocate_mib") {
            let held = std::hint::black_box(vec![1u8; (number("allocate_mib") << 20) as usize]);
            out["held_mib"] = (held.len() >> 20).into();
        }
        ev.set_json(&out);
        Transform::Rewrite(ev)
    }
}

notify_plugin_sdk::export_transformer!(SlowStart);
