//! Test plugin: a transform whose first call in an instance spins for about ten million
//! steps (some milliseconds of CPU, as a language runtime sets itself up on first use); every
//! later call is quick. Each call rewrites the payload to `{"call": n}`, n counting the
//! calls this instance has served; a payload with a `trap` field makes it trap instead.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use notify_plugin_sdk::{Event, Transform, Transformer};

const SET_UP_STEPS: u64 = 10_000_000;

static CALLS: AtomicU64 = AtomicU64::new(0);

struct SlowStart;

impl Transformer for SlowStart {
    fn transform(mut ev: Event) -> Transform {
        if ev.json().is_ok_and(|data| data.get("trap").is_some()) {
            panic!("slow-start: asked to trap");
        }
        let call = CALLS.fetch_add(1, Relaxed) + 1;
        if call == 1 {
            let mut x: u64 = 0;
            for _ in 0..SET_UP_STEPS {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        ev.set_json(&serde_json::json!({ "call": call }));
        Transform::Rewrite(ev)
    }
}

notify_plugin_sdk::export_transformer!(SlowStart);
