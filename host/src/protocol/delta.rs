//! Delta updates (docs/PROTOCOL.md, "Delta updates"): a channel event's frame as the
//! difference from the channel's previous event, for subscribers who hold that one. The
//! difference is a Fossil delta of the `data` JSON (whose last field is the delta format's
//! checksum of the full `data`), base64 in the frame; it is made once per event per channel
//! and shared like any frame.

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::frame;

/// How every event frame starts; the id's JSON string follows.
const START: &[u8] = br#"{"type":"event","id":"#;
/// The key before the data, the event frame's last field. The first match after the id is
/// it: the fields between are scalars, and a JSON string cannot hold an unescaped quote.
const DATA_KEY: &[u8] = br#","data":"#;

/// Largest `data`, of the base or the next event, that a delta is made for: making one takes
/// time that grows faster than the size on data that does not match (2 ms for 64 KiB of
/// random bytes, half a second for 1 MiB: BENCHMARKS.md, `notify-delta-time`), under the
/// channel's lock. Larger events go whole.
pub(crate) const MAX_DATA: usize = 64 * 1024;

/// An event frame and where its parts lie in it: the base of the next event's delta.
#[derive(Debug)]
pub(crate) struct Base {
    frame: Bytes,
    /// The id's JSON string, quotes included.
    id: Range<usize>,
    /// The payload up to the data key: everything but the data.
    head: Range<usize>,
    data: Range<usize>,
}

impl Base {
    /// Finds the parts of an event frame made by `Event::encode_for`; None
    /// for anything else.
    pub(crate) fn of(frame: &Bytes) -> Option<Self> {
        let payload = frame::payload(frame);
        let at = frame.len() - payload.len();
        if !payload.starts_with(START) || payload.last() != Some(&b'}') {
            return None;
        }
        let id_end = string_end(payload, START.len())?;
        let key = id_end + find(&payload[id_end..], DATA_KEY)?;
        Some(Self {
            frame: frame.clone(),
            id: at + START.len()..at + id_end,
            head: at..at + key,
            data: at + key + DATA_KEY.len()..frame.len() - 1,
        })
    }

    /// The full frame.
    pub(crate) fn frame(&self) -> &Bytes {
        &self.frame
    }

    fn data(&self) -> &[u8] {
        &self.frame[self.data.clone()]
    }

    /// `next`'s frame as a delta from this event: its fields, `base` (this event's id) and
    /// `delta` in place of `data`. None when that is not smaller than the full frame, or
    /// either data is larger than [`MAX_DATA`].
    pub(crate) fn delta_to(&self, next: &Base) -> Option<Bytes> {
        if self.data.len() > MAX_DATA || next.data.len() > MAX_DATA {
            return None;
        }
        let delta = fossil_delta::delta(next.data(), self.data());
        let mut json = Vec::with_capacity(next.head.len() + self.id.len() + delta.len() * 4 / 3 + 32);
        json.extend_from_slice(&next.frame[next.head.clone()]);
        json.extend_from_slice(br#","base":"#);
        json.extend_from_slice(&self.frame[self.id.clone()]);
        json.extend_from_slice(br#","delta":""#);
        json.extend_from_slice(STANDARD.encode(&delta).as_bytes());
        json.extend_from_slice(br#""}"#);
        (json.len() < next.frame.len() - next.head.start).then(|| frame::text(&json))
    }
}

/// Where the JSON string opening at `open` ends (just past its closing quote).
fn string_end(json: &[u8], open: usize) -> Option<usize> {
    if json.get(open) != Some(&b'"') {
        return None;
    }
    let mut i = open + 1;
    while let Some(&b) = json.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn frame(id: &str, data: &str) -> Bytes {
        let json = format!(
            r#"{{"type":"event","id":{},"event":"e,\"data\":","ts":1,"channel":"c","epoch":"x","offset":3,"data":{data}}}"#,
            serde_json::to_string(id).unwrap()
        );
        frame::text(json.as_bytes())
    }

    /// What a client does with a delta frame: the full data from the base's.
    fn apply(base_data: &[u8], delta_frame: &Bytes) -> (Value, Vec<u8>) {
        let frame: Value = serde_json::from_slice(frame::payload(delta_frame)).unwrap();
        let delta = STANDARD.decode(frame["delta"].as_str().unwrap()).unwrap();
        (frame, fossil_delta::apply(base_data, delta).unwrap())
    }

    fn document(score: u32) -> String {
        let rows: Vec<String> = (0..40).map(|i| format!(r#"{{"player":"p{i}","points":{}}}"#, i * 7)).collect();
        format!(r#"{{"score":{score},"note":"caf\u00e9 ☕","rows":[{}]}}"#, rows.join(","))
    }

    #[test]
    fn finds_the_parts_of_an_event_frame() {
        let f = frame("a\"b\\", "{\"k\":[1,2]}");
        let base = Base::of(&f).unwrap();
        assert_eq!(&f[base.id.clone()], br#""a\"b\\""#);
        assert_eq!(base.data(), br#"{"k":[1,2]}"#);
        assert!(f[base.head.clone()].ends_with(br#""offset":3"#), "the data key is the last field");
        assert!(Base::of(&frame::text(br#"{"type":"welcome"}"#)).is_none());
        assert!(Base::of(&frame::text(br#"{"type":"event","id":"unterminated"#)).is_none());
    }

    #[test]
    fn a_delta_frame_rebuilds_the_next_event_and_keeps_its_fields() {
        let (one, two) = (document(1), document(2));
        let (a, b) = (Base::of(&frame("e1", &one)).unwrap(), Base::of(&frame("e2", &two)).unwrap());
        let delta = a.delta_to(&b).expect("one field changed: the delta is smaller");
        assert!(delta.len() * 5 < b.frame().len(), "{} against {}", delta.len(), b.frame().len());
        let (fields, data) = apply(one.as_bytes(), &delta);
        assert_eq!(data, two.as_bytes());
        assert_eq!((&fields["id"], &fields["base"], &fields["offset"]), (&"e2".into(), &"e1".into(), &3.into()));
        assert!(fields.get("data").is_none());
    }

    #[test]
    fn unrelated_and_oversized_payloads_go_whole() {
        let (a, b) = (Base::of(&frame("e1", r#"{"a":1}"#)).unwrap(), Base::of(&frame("e2", r#"[true]"#)).unwrap());
        assert!(a.delta_to(&b).is_none());
        let large = |end: &str| format!(r#"["{}{end}"]"#, "x".repeat(MAX_DATA));
        let (a, b) = (Base::of(&frame("e1", &large("a"))).unwrap(), Base::of(&frame("e2", &large("b"))).unwrap());
        assert!(a.delta_to(&b).is_none(), "one byte changed, but too large to diff");
    }

    #[test]
    fn deltas_round_trip_over_random_edits() {
        // A fixed-seed generator: every run tries the same edits.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut data: Vec<char> = document(0).chars().collect();
        for round in 0..300 {
            let before: String = data.iter().collect();
            for _ in 0..1 + next(4) {
                let at = next(data.len());
                match next(3) {
                    0 => data[at] = ['x', 'é', '☕', '7'][next(4)],
                    1 => data.insert(at, ['y', 'ü', '1'][next(3)]),
                    _ if data.len() > 2 => drop(data.remove(at)),
                    _ => {}
                }
            }
            let after: String = data.iter().collect();
            let as_string = |s: &str| serde_json::to_string(s).unwrap();
            let a = Base::of(&frame("a", &as_string(&before))).unwrap();
            let b = Base::of(&frame("b", &as_string(&after))).unwrap();
            if let Some(delta) = a.delta_to(&b) {
                let (_, rebuilt) = apply(a.data(), &delta);
                assert_eq!(rebuilt, b.data(), "round {round}");
            }
        }
    }
}
