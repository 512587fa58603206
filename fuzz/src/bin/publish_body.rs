//! Fuzz target: `notify_host::fuzz::publish_body`.

fn main() {
    afl::fuzz!(|data: &[u8]| notify_host::fuzz::publish_body(data));
}
