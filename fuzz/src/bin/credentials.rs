//! Fuzz target: `notify_host::fuzz::credentials`.

fn main() {
    afl::fuzz!(|data: &[u8]| notify_host::fuzz::credentials(data));
}
