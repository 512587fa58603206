//! A Server-Sent Events client over a real HTTP/1.1 connection (hyper): it parses the event
//! stream as a browser's `EventSource` does, keeping the last event id.

use std::collections::VecDeque;
use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::STEP;

/// One dispatched SSE event, or a comment line.
#[derive(Debug, Clone)]
pub enum Sse {
    Comment(String),
    Message { id: Option<String>, retry: Option<u64>, data: Value },
}

/// An open event stream.
pub struct SseClient {
    body: Incoming,
    buf: String,
    ready: VecDeque<Sse>,
    /// The `id` of the last dispatched event that had one (what a browser sends back).
    pub last_id: Option<String>,
    pub headers: hyper::HeaderMap,
}

/// A refused stream: the HTTP status and JSON body.
#[derive(Debug)]
pub struct SseRefused {
    pub status: u16,
    pub body: Value,
    pub headers: hyper::HeaderMap,
}

impl SseClient {
    /// Opens `GET path` with `headers`, expecting a stream.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Self> {
        match Self::try_connect(addr, path, headers).await? {
            Ok(c) => Ok(c),
            Err(r) => bail!("SSE refused: {} {}", r.status, r.body),
        }
    }

    /// Opens the stream, returning the HTTP refusal instead of failing on one.
    pub async fn try_connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Result<Self, SseRefused>> {
        let tcp = TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::get(path).header("host", addr.to_string()).header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = tokio::time::timeout(STEP, sender.send_request(req.body(Empty::<Bytes>::new())?)).await??;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        if status != 200 {
            let bytes = res.into_body().collect().await?.to_bytes();
            let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
            return Ok(Err(SseRefused { status, body, headers }));
        }
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        anyhow::ensure!(content_type == "text/event-stream", "content-type {content_type:?}");
        Ok(Ok(Self { body: res.into_body(), buf: String::new(), ready: VecDeque::new(), last_id: None, headers }))
    }

    /// The next event or comment; `None` when the stream ended.
    pub async fn next(&mut self) -> anyhow::Result<Option<Sse>> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            let frame = tokio::time::timeout(STEP, self.body.frame()).await.context("no SSE data in time")?;
            match frame {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.push_str(std::str::from_utf8(&data)?);
                        self.parse()?;
                    }
                }
            }
        }
    }

    /// The next message's JSON, skipping comments.
    pub async fn next_json(&mut self) -> anyhow::Result<Value> {
        loop {
            match self.next().await?.context("stream ended")? {
                Sse::Message { data, .. } => return Ok(data),
                Sse::Comment(_) => {}
            }
        }
    }

    /// The next `event` frame, skipping protocol frames and comments.
    pub async fn next_event(&mut self) -> anyhow::Result<Value> {
        loop {
            let v = self.next_json().await?;
            if v["type"] == "event" {
                return Ok(v);
            }
        }
    }

    /// Reads until the `close` frame and returns its code; the stream must then end.
    pub async fn close_code(&mut self) -> anyhow::Result<u64> {
        loop {
            let v = self.next_json().await?;
            if v["type"] == "close" {
                let code = v["code"].as_u64().context("code")?;
                anyhow::ensure!(self.next().await?.is_none(), "stream went on after close");
                return Ok(code);
            }
        }
    }

    /// Splits complete events (blank-line terminated) off the buffer.
    fn parse(&mut self) -> anyhow::Result<()> {
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let (mut id, mut retry, mut data, mut comment) = (None, None, Vec::new(), None);
            for line in block.lines().filter(|l| !l.is_empty()) {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "" => comment = Some(value.to_owned()),
                    "id" => id = Some(value.to_owned()),
                    "retry" => retry = Some(value.parse()?),
                    "data" => data.push(value),
                    other => bail!("unexpected SSE field {other:?}"),
                }
            }
            if data.is_empty() {
                self.ready.extend(comment.map(Sse::Comment));
                continue;
            }
            if id.is_some() {
                self.last_id.clone_from(&id);
            }
            let data = serde_json::from_str(&data.join("\n"))?;
            self.ready.push_back(Sse::Message { id, retry, data });
        }
        Ok(())
    }
}
