//! `notify-delta-time`: how long making one Fossil delta takes (`fossil-delta`, as the host
//! makes delta frames) for data that matches and data that does not, at 64 KiB and 1 MiB:
//! what the host's ceiling on diffed data (64 KiB) rests on.
//!
//! ```text
//! notify-delta-time      each size and input: the delta's size and the best of 5 timings
//! ```

use std::time::{Duration, Instant};

/// `n` pseudo-random bytes (xorshift from `seed`).
fn random(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn main() {
    for n in [64 << 10, 1 << 20] {
        let text: Vec<u8> = random(n, 3).iter().map(|b| b'a' + b % 26).collect();
        let mut edited = text.clone();
        edited[n / 3] = b'#';
        let cases = [("unrelated random bytes", random(n, 1), random(n, 2)), ("text, one byte changed", text, edited)];
        for (name, base, next) in cases {
            let mut best = Duration::MAX;
            let mut size = 0;
            for _ in 0..5 {
                let started = Instant::now();
                size = fossil_delta::delta(&next, &base).len();
                best = best.min(started.elapsed());
            }
            println!("{} KiB, {name}: delta {size} B in {:.2} ms", n >> 10, best.as_secs_f64() * 1e3);
        }
    }
}
