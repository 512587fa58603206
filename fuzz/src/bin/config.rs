//! Fuzz target: `notify_host::fuzz::config`.

fn main() {
    afl::fuzz!(|data: &[u8]| notify_host::fuzz::config(data));
}
