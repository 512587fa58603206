//! `notify-deflate-levels`: what each zlib level and window does to the event frames of
//! `bench/payloads.json` (also `bench/compression.py`'s), compressed as the host compresses them (raw DEFLATE,
//! one message on its own from a reset compressor, sync flush, its tail taken off).
//!
//! ```text
//! notify-deflate-levels sizes                   each level and window: bytes per payload
//! notify-deflate-levels run LEVEL WINDOW COUNT [PAYLOAD]
//!                                               compresses every payload (or the one
//!                                               numbered 0-2, or an empty one: 3) COUNT times
//! ```
//!
//! `run` is for `valgrind --tool=callgrind`: two counts' instructions, subtracted and divided
//! by the compressions they add, give the instructions of one (bench/deflate-levels.sh).

use flate2::{Compress, Compression, FlushCompress};
use serde_json::{Value, json};

const LEVELS: [u32; 5] = [1, 2, 4, 6, 9];
const WINDOWS: [u8; 3] = [10, 12, 15];

/// An event frame's JSON as the host sends it, with `data`.
fn frame(data: Value) -> Vec<u8> {
    let event = json!({"type": "event", "id": "19af1c2e4d1-5635cf27-2a", "event": "bench", "ts": 1_796_613_633_910u64,
                       "user": "alice", "epoch": "9f2c51d04e6a7b13", "offset": 42, "data": data});
    serde_json::to_vec(&event).expect("JSON")
}

/// The payloads of bench/compression.py (bench/payloads.json), each as an event frame.
fn payloads() -> Vec<(String, Vec<u8>)> {
    let all: Vec<Value> = serde_json::from_str(include_str!("../../payloads.json")).expect("JSON");
    all.into_iter().map(|p| (p["name"].as_str().expect("a name").to_owned(), frame(p["data"].clone()))).collect()
}

fn compress(c: &mut Compress, data: &[u8]) -> usize {
    c.reset();
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).expect("deflate takes any input");
    out.len() - 4
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let payloads = payloads();
    match args.first().map(String::as_str) {
        Some("sizes") => {
            println!(
                "level window {}",
                payloads.iter().map(|(name, p)| format!("| {name} ({} B)", p.len())).collect::<String>()
            );
            for level in LEVELS {
                for window in WINDOWS {
                    let mut c = Compress::new_with_window_bits(Compression::new(level), false, window);
                    let sizes: String = payloads.iter().map(|(_, p)| format!("| {} ", compress(&mut c, p))).collect();
                    println!("{level} {window} {sizes}");
                }
            }
        }
        Some("run") => {
            let num = |i: usize| args.get(i).and_then(|a| a.parse::<u32>().ok()).expect("run LEVEL WINDOW COUNT");
            let mut c = Compress::new_with_window_bits(Compression::new(num(1)), false, num(2) as u8);
            let chosen: Vec<&[u8]> = match args.get(4).map(|a| a.parse::<usize>().expect("PAYLOAD is 0-3")) {
                None => payloads.iter().map(|(_, p)| &p[..]).collect(),
                Some(i) => vec![payloads.get(i).map_or(&[][..], |(_, p)| &p[..])],
            };
            let mut total = 0;
            for _ in 0..num(3) {
                for p in &chosen {
                    total += compress(&mut c, p);
                }
            }
            println!("{total}");
        }
        _ => eprintln!("usage: notify-deflate-levels sizes | run LEVEL WINDOW COUNT"),
    }
}
