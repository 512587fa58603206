//! Fuzz target: `notify_host::fuzz::client_frames`.

fn main() {
    afl::fuzz!(|data: &[u8]| notify_host::fuzz::client_frames(data));
}
