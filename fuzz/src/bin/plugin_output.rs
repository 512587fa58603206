//! Fuzz target: `notify_host::fuzz::plugin_output`.

fn main() {
    afl::fuzz!(|data: &[u8]| notify_host::fuzz::plugin_output(data));
}
