//! Fuzz target: `notify_host::fuzz::envelope`.

fn main() {
    afl::fuzz!(|data: &[u8]| notify_host::fuzz::envelope(data));
}
