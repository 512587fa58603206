//! The events the generator publishes and how a receiver reads them back: each payload
//! carries its send time (`sent_us`) and its number (`n`), found in the frame without parsing
//! it, so the generator costs far less per delivery than the servers it measures.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};

use crate::connect::{split_http_url, tcp};

pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Broadcast event number `n`, stamped now.
pub(crate) fn broadcast(n: usize, attributes: &Map<String, Value>, pad: &str) -> Value {
    json!({"broadcast": true, "event": "bench", "attributes": attributes,
           "data": {"sent_us": now_us(), "n": n, "pad": pad}})
}

/// Version `n` of a document of about `size` bytes on `channel`, stamped now in its event
/// name (a delta frame carries no data to stamp); `n` is the one field of the document that
/// changes. With `delta`, sent as a delta to the subscribers who asked.
pub(crate) fn version(channel: &str, n: usize, size: usize, delta: bool) -> Value {
    let rows: Vec<Value> = (0..size / 32).map(|i| json!({"row": i, "label": format!("item {i:05}")})).collect();
    json!({"channels": [channel], "event": format!("bench sent_us={} n={n}", now_us()), "delta": delta,
           "data": {"n": n, "rows": rows}})
}

/// Event number `n` for `user` alone, stamped now.
pub(crate) fn targeted(user: &str, n: usize, pad: &str) -> Value {
    json!({"users": [user], "event": "bench", "data": {"sent_us": now_us(), "n": n, "pad": pad}})
}

/// The unsigned number after `"key":` in a frame.
pub(crate) fn number(frame: &str, key: &str) -> Option<u64> {
    let rest = &frame[frame.find(key)? + key.len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// The send time and number a generator's event carries, in its data (as JSON, or as the
/// JSON string a Pusher frame carries) or (a document version) its event name, if the frame
/// is one.
pub(crate) fn stamp(frame: &str) -> Option<(u64, u64)> {
    let data = || Some((number(frame, "\"sent_us\":")?, number(frame, "\"n\":")?));
    let pusher = || Some((number(frame, "\\\"sent_us\\\":")?, number(frame, "\\\"n\\\":")?));
    data().or_else(pusher).or_else(|| Some((number(frame, " sent_us=")?, number(frame, " n=")?)))
}

/// The value at fraction `p` of sorted samples (0 when there are none).
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `p50 … p90 … p99 … max …` of unsorted latency samples, sorting them.
pub(crate) fn summary(latencies: &mut [u64]) -> String {
    latencies.sort_unstable();
    format!(
        "latency us p50 {} p90 {} p99 {} max {}",
        percentile(latencies, 0.5),
        percentile(latencies, 0.9),
        percentile(latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    )
}

/// A keep-alive HTTP/1.1 client for one publish URL.
pub(crate) struct Publisher {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: String,
    auth: String,
}

impl Publisher {
    pub(crate) async fn connect(url: &str, key: &str) -> anyhow::Result<Self> {
        let (host, path) = split_http_url(url, "--publish")?;
        let stream = tcp(host, None).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { sender, path, auth: format!("Bearer {key}") })
    }

    pub(crate) async fn send(&mut self, body: &Value) -> anyhow::Result<()> {
        let req = hyper::Request::post(&self.path)
            .header("authorization", &self.auth)
            .header("host", "bench")
            .body(Full::new(Bytes::from(body.to_string())))?;
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        // notify and the floor answer 202; Nchan 201 (delivered) or 202 (queued).
        anyhow::ensure!(
            status == 202 || status == 201,
            "publish returned {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }
}
