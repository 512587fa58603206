//! Test harness: real hosts on 127.0.0.1 port 0, real WebSocket clients (tokio-tungstenite and
//! a raw socket client that never answers pings), an SSE client, and a small HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use notify_host::{Config, Server, ShutdownHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod receiver;
mod redis_server;
mod sse;

pub use receiver::{Received, Receiver};
pub use redis_server::{RedisCluster, RedisServer};
pub use sse::{Sse, SseClient, SseRefused};

/// Guard against hangs: no test step waits longer than this for something that must happen.
pub const STEP: Duration = Duration::from_secs(10);

/// The same guard for a step whose work is heavy: compiling a 12-18 MB plugin takes seconds
/// in a debug build, more on a busy machine.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// The demo tenant every test config starts from.
pub const DEMO: &str = r#"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
"#;

/// HS256 secret of the `secure` tenant in [`JWT_TENANT`].
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef";

/// A tenant that requires HS256 or RS256 JWTs.
pub fn jwt_tenant() -> String {
    let public = include_str!("../fixtures/rs256-test-public.pem");
    format!(
        "[tenants.secure]\npublish_key = \"secure-key\"\nallowed_origins = [\"https://app.example.com\"]\n\
         auth = {{ mode = \"jwt\", hs256_secret = \"{JWT_SECRET}\", rs256_public_key = \"\"\"\n{public}\"\"\" }}\n"
    )
}

/// The RS256 private key matching the `secure` tenant's public key.
pub const RS256_PRIVATE: &str = include_str!("../fixtures/rs256-test-private.pem");

/// Every test host listens on a free loopback port and drains quickly; set through the
/// environment overrides, so test configs may have their own `[server]` table.
fn test_overrides() -> [(String, String); 3] {
    [
        ("NOTIFY_SERVER__LISTEN".into(), "127.0.0.1:0".into()),
        ("NOTIFY_SERVER__METRICS_LISTEN".into(), "127.0.0.1:0".into()),
        ("NOTIFY_SERVER__SHUTDOWN_GRACE".into(), "5s".into()),
    ]
}

/// Publishes `{}` to `user` through the host at `addr` with `key`, each event read by
/// `client` (a connection of `user`), until one arrives with `data` equal to `expected`
/// (a change spreading to the publishing node). Fails after 200 tries.
pub async fn publish_until(
    addr: SocketAddr,
    key: &str,
    user: &str,
    client: &mut Client,
    expected: &Value,
) -> anyhow::Result<()> {
    let body = json!({ "users": [user], "event": "e", "data": {} });
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, res) = publish_to(addr, key, &body).await?;
        anyhow::ensure!(status == 202, "publish through {addr}: {status} {res}");
        last = client.next_event().await?["data"].clone();
        if last == *expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("through {addr}: {last}, expected {expected}")
}

/// Starts `N` in-process hosts with `toml` and waits until each is ready.
pub async fn ready_hosts<const N: usize>(toml: &str) -> anyhow::Result<[TestHost; N]> {
    let mut hosts = Vec::with_capacity(N);
    for _ in 0..N {
        let host = TestHost::start(toml).await?;
        host.wait_ready(200).await?;
        hosts.push(host);
    }
    hosts.try_into().map_err(|_| anyhow::anyhow!("started a different number of hosts"))
}

/// Polls `check` until it holds, bounded by [`STEP`] (for state that converges
/// asynchronously: subscriptions, presence, Redis streams).
pub async fn eventually<F, Fut>(check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    eventually_within(STEP, check).await
}

/// [`eventually`] with its own bound.
pub async fn eventually_within<F, Fut>(bound: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    while !check().await? {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "condition not reached within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A host running in this process.
pub struct TestHost {
    pub addr: SocketAddr,
    /// `server.metrics_listen`, where `/metrics` needs no credentials.
    pub metrics: SocketAddr,
    pub shutdown: ShutdownHandle,
    pub task: JoinHandle<()>,
}

impl TestHost {
    /// Starts a host on a free port with `toml`.
    pub async fn start(toml: &str) -> anyhow::Result<Self> {
        let config = Config::from_toml(toml, "test config", test_overrides())?;
        let server = Server::bind(config).await?;
        let addr = server.local_addr();
        let metrics = server.metrics_addr().context("the tests serve metrics")?;
        let shutdown = server.shutdown_handle();
        let task = tokio::spawn(server.run());
        Ok(Self { addr, metrics, shutdown, task })
    }

    /// Polls `/readyz` until it answers `status` (200 ready, 503 draining or broker down).
    pub async fn wait_ready(&self, status: u16) -> anyhow::Result<()> {
        eventually(|| async { Ok(Req::get("/readyz").reply(self.addr).await?.0 == status) })
            .await
            .with_context(|| format!("/readyz never returned {status}"))
    }

    pub fn ws_url(&self, tenant: &str, query: &str) -> String {
        format!("ws://{}/v1/ws/{tenant}?{query}", self.addr)
    }

    /// Connects `user` of the insecure `demo` tenant and reads its welcome frame.
    pub async fn connect_user(&self, user: &str) -> anyhow::Result<Client> {
        Ok(self.join("demo", &format!("user={user}")).await?.0)
    }

    /// Connects to `tenant` with the URL `query` and returns the client and its welcome.
    pub async fn join(&self, tenant: &str, query: &str) -> anyhow::Result<(Client, Value)> {
        let mut c = Client::connect(&self.ws_url(tenant, query), &[]).await?;
        let welcome = c.next_json().await?;
        anyhow::ensure!(welcome["type"] == "welcome", "expected welcome, got {welcome}");
        Ok((c, welcome))
    }

    pub async fn publish(&self, key: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        publish_to(self.addr, key, body).await
    }

    /// Publishes and insists on 202.
    pub async fn publish_ok(&self, body: &Value) -> anyhow::Result<String> {
        let (status, res) = self.publish("demo-key", body).await?;
        anyhow::ensure!(status == 202, "publish returned {status}: {res}");
        Ok(res["id"].as_str().context("id")?.to_owned())
    }

    /// The value of a metric sample line (`name{labels}`) from `/metrics`.
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        metric(self.metrics, sample).await
    }

    /// Polls a metric until `pred` holds (each poll is a real request; bounded by [`STEP`]).
    pub async fn wait_metric(&self, sample: &str, pred: impl Fn(f64) -> bool) -> anyhow::Result<f64> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let v = self.metric(sample).await?;
            if pred(v) {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("metric {sample} stuck at {v}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A WebSocket client (tokio-tungstenite).
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection attempt ended when the host refused the upgrade.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Self> {
        match Self::try_connect(url, headers).await? {
            Ok(c) => Ok(c),
            Err(r) => bail!("upgrade refused: {} {}", r.status, r.body),
        }
    }

    /// Connects, returning the HTTP refusal instead of failing on one.
    pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Result<Self, Refused>> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut()
                .insert(hyper::header::HeaderName::from_bytes(k.as_bytes())?, hyper::header::HeaderValue::from_str(v)?);
        }
        match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req)).await? {
            Ok((ws, _)) => Ok(Ok(Self { ws })),
            Err(WsError::Http(res)) => {
                let body = res.body().as_deref().map(serde_json::from_slice).transpose()?;
                Ok(Err(Refused { status: res.status().as_u16(), body: body.unwrap_or(Value::Null) }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The next text frame as JSON (pings are answered by tungstenite and skipped).
    pub async fn next_json(&mut self) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.next_text().await?)?)
    }

    /// The next text frame as sent.
    pub async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next()).await.context("no frame in time")?;
            match msg.context("connection ended")?? {
                Message::Text(t) => return Ok(t.as_str().to_owned()),
                Message::Close(f) => bail!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// The next `event` frame, skipping protocol replies.
    pub async fn next_event(&mut self) -> anyhow::Result<Value> {
        loop {
            let v = self.next_json().await?;
            if v["type"] == "event" {
                return Ok(v);
            }
        }
    }

    pub async fn send_json(&mut self, v: &Value) -> anyhow::Result<()> {
        self.ws.send(Message::text(v.to_string())).await?;
        Ok(())
    }

    /// Subscribes and waits for the `subscribed` reply (or returns the error frame).
    pub async fn subscribe(&mut self, channel: &str) -> anyhow::Result<Value> {
        self.send_json(&json!({ "type": "subscribe", "channel": channel })).await?;
        self.next_json().await
    }

    /// Reads until the server's close frame and returns its code (skipping other frames).
    pub async fn close_code(&mut self) -> anyhow::Result<u16> {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next()).await.context("no close in time")?;
            match msg {
                Some(Ok(Message::Close(f))) => {
                    // Complete the close handshake, as a well-behaved client does.
                    let _ = self.ws.close(None).await;
                    return Ok(f.map_or(u16::from(CloseCode::Status), |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("connection failed before a close frame: {e}"),
                None => bail!("connection ended without a close frame"),
            }
        }
    }
}

/// `EPOCH:OFFSET` of an event frame, for `user_since` / `broadcast_since`.
pub fn position(ev: &Value) -> anyhow::Result<String> {
    Ok(format!("{}:{}", ev["epoch"].as_str().context("epoch")?, ev["offset"].as_u64().context("offset")?))
}

/// A client that resumes by itself, as a well-behaved application does: on a `reconnect`
/// frame or a close it reconnects with the last positions of its user stream and the
/// broadcast, and it drops repeated events by offset.
pub struct Resuming {
    addr: SocketAddr,
    user: String,
    client: Client,
    /// `(epoch, offset)` of the user stream and of the broadcast.
    positions: [Option<(String, u64)>; 2],
    pub reconnects: u32,
    /// The `recovered` flags of every welcome after the first.
    pub recovered: Vec<bool>,
    /// Attempts the host sent back to retry later (a `reconnect` frame instead of a welcome).
    pub deferred: u32,
}

impl Resuming {
    /// Connects `user` of the insecure `demo` tenant.
    pub async fn connect(addr: SocketAddr, user: &str) -> anyhow::Result<Self> {
        let client = Client::connect(&format!("ws://{addr}/v1/ws/demo?user={user}"), &[]).await?;
        let mut me = Self {
            addr,
            user: user.into(),
            client,
            positions: [None, None],
            reconnects: 0,
            recovered: vec![],
            deferred: 0,
        };
        let w = me.client.next_json().await?;
        me.welcome(&w, false)?;
        Ok(me)
    }

    fn welcome(&mut self, w: &Value, again: bool) -> anyhow::Result<()> {
        anyhow::ensure!(w["type"] == "welcome", "expected welcome, got {w}");
        for (i, name) in ["user", "broadcast"].into_iter().enumerate() {
            let s = &w["streams"][name];
            if again {
                self.recovered.push(s["recovered"] == true);
            }
            if let (Some(epoch), Some(offset), None) = (s["epoch"].as_str(), s["offset"].as_u64(), &self.positions[i]) {
                self.positions[i] = Some((epoch.to_owned(), offset));
            }
        }
        Ok(())
    }

    /// Reconnects after `after` with the positions held, as often as the host sends the
    /// client back to retry later (at most 20 times).
    async fn reconnect(&mut self, mut after: Duration) -> anyhow::Result<()> {
        let mut query = format!("user={}", self.user);
        for (name, p) in ["user_since", "broadcast_since"].iter().zip(&self.positions) {
            if let Some((epoch, offset)) = p {
                query.push_str(&format!("&{name}={epoch}:{offset}"));
            }
        }
        for _ in 0..20 {
            tokio::time::sleep(after).await;
            self.client = Client::connect(&format!("ws://{}/v1/ws/demo?{query}", self.addr), &[]).await?;
            let first = self.client.next_json().await?;
            if first["type"] == "reconnect" {
                self.deferred += 1;
                after = Duration::from_millis(first["retry_after_ms"].as_u64().unwrap_or(0));
                continue;
            }
            self.reconnects += 1;
            return self.welcome(&first, true);
        }
        anyhow::bail!("sent back to retry later 20 times")
    }

    /// The next new event of the user stream or the broadcast.
    pub async fn next_event(&mut self) -> anyhow::Result<Value> {
        self.next(None).await
    }

    /// Reads on until the client has reconnected `n` times in all; an event before that is
    /// an error.
    pub async fn wait_reconnects(&mut self, n: u32) -> anyhow::Result<()> {
        if self.reconnects < n {
            let ev = self.next(Some(n)).await?;
            anyhow::ensure!(ev.is_null(), "event before reconnecting: {ev}");
        }
        Ok(())
    }

    /// The next new event, or `null` once `until` reconnects happened.
    async fn next(&mut self, until: Option<u32>) -> anyhow::Result<Value> {
        let mut wait = Duration::ZERO;
        loop {
            if until.is_some_and(|n| self.reconnects >= n) {
                return Ok(Value::Null);
            }
            let msg = tokio::time::timeout(STEP, self.client.ws.next()).await.context("no frame in time")?;
            let v: Value = match msg {
                Some(Ok(Message::Text(t))) => serde_json::from_str(&t)?,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    self.reconnect(wait).await?;
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            if v["type"] == "reconnect" {
                wait = Duration::from_millis(v["retry_after_ms"].as_u64().unwrap_or(0));
            }
            if v["type"] != "event" {
                continue;
            }
            let i = if v["broadcast"] == true { 1 } else { 0 };
            if let (Some(epoch), Some(offset)) = (v["epoch"].as_str(), v["offset"].as_u64()) {
                if let Some((e, o)) = &self.positions[i]
                    && e == epoch
                    && offset <= *o
                {
                    continue;
                }
                self.positions[i] = Some((epoch.to_owned(), offset));
            }
            return Ok(v);
        }
    }
}

/// A raw WebSocket client over a plain socket: it never answers pings, and can read and send
/// arbitrary frames.
pub struct RawClient {
    pub tcp: TcpStream,
    buf: Vec<u8>,
    /// The upgrade answer's status line and headers.
    pub head: String,
}

impl RawClient {
    /// Performs the upgrade by hand; returns the status line's code and the client.
    pub async fn connect(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Self)> {
        Self::connect_with(addr, path, &[]).await
    }

    /// [`RawClient::connect`] with more request headers.
    pub async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, Self)> {
        let mut tcp = TcpStream::connect(addr).await?;
        let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        tcp.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(STEP, tcp.read(&mut chunk)).await??;
            anyhow::ensure!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status: u16 = head.split(' ').nth(1).context("status")?.parse()?;
        buf.drain(..head_end);
        Ok((status, Self { tcp, buf, head }))
    }

    /// Reads one frame: (opcode, payload).
    pub async fn read_frame(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        let (first, payload) = self.read_raw_frame().await?;
        Ok((first & 0x0f, payload))
    }

    /// Reads one frame: (its first byte: FIN, RSV bits and opcode; payload).
    pub async fn read_raw_frame(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(STEP, self.tcp.read(&mut chunk)).await??;
            anyhow::ensure!(n > 0, "connection ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a close frame; returns its code.
    pub async fn close_code(&mut self) -> anyhow::Result<u16> {
        loop {
            let (op, payload) = self.read_frame().await?;
            if op == 0x8 {
                anyhow::ensure!(payload.len() >= 2, "close frame without code");
                return Ok(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }

    /// Sends one masked final frame with `opcode` and `payload`.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        self.send_raw_frame(0x80 | opcode, payload).await
    }

    /// Sends one masked frame whose first byte (FIN, RSV bits, opcode) is `first`.
    pub async fn send_raw_frame(&mut self, first: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&out).await?;
        Ok(())
    }
}

fn parse_frame(buf: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    if buf.len() < 2 {
        return None;
    }
    let first = buf[0];
    let (len, mut pos) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    if buf[1] & 0x80 != 0 {
        pos += 4;
    }
    let payload = buf.get(pos..pos + len)?.to_vec();
    Some(((first, payload), pos + len))
}

/// One HTTP/1.1 request to a host, built up then sent:
/// `publish_to(addr, "demo-key", &json)`.
/// Each way of sending returns what the test reads of the answer.
pub struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    patience: Duration,
}

impl Req {
    pub fn new(method: &str, path: impl Into<String>) -> Self {
        Self { method: method.to_owned(), path: path.into(), headers: Vec::new(), body: Bytes::new(), patience: STEP }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new("GET", path)
    }

    pub fn post(path: impl Into<String>) -> Self {
        Self::new("POST", path)
    }

    pub fn put(path: impl Into<String>) -> Self {
        Self::new("PUT", path)
    }

    pub fn patch(path: impl Into<String>) -> Self {
        Self::new("PATCH", path)
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self::new("DELETE", path)
    }

    /// `Authorization: Bearer <key>`.
    pub fn key(self, key: &str) -> Self {
        self.header("authorization", &format!("Bearer {key}"))
    }

    /// [`Req::key`] when there is one.
    pub fn auth(self, key: Option<&str>) -> Self {
        match key {
            Some(key) => self.key(key),
            None => self,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn headers(self, headers: &[(&str, &str)]) -> Self {
        headers.iter().fold(self, |req, (name, value)| req.header(name, value))
    }

    pub fn body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    /// How long to wait for the answer ([`STEP`] unless set): [`PATIENCE`] for a request
    /// whose work takes long, such as uploading a plugin of many megabytes.
    pub fn within(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The status, the response headers and the raw body.
    pub async fn send(self, addr: SocketAddr) -> anyhow::Result<(u16, hyper::HeaderMap, Bytes)> {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        request_within(addr, &self.method, &self.path, &headers, self.body, self.patience).await
    }

    /// The status and the body as JSON (Null if empty).
    pub async fn reply(self, addr: SocketAddr) -> anyhow::Result<(u16, Value)> {
        let (status, _, body) = self.send(addr).await?;
        Ok((status, json_body(&body)?))
    }

    /// The status and the raw body.
    pub async fn raw(self, addr: SocketAddr) -> anyhow::Result<(u16, Bytes)> {
        let (status, _, body) = self.send(addr).await?;
        Ok((status, body))
    }

    /// The status, the response headers and the body as JSON (Null if empty).
    pub async fn full(self, addr: SocketAddr) -> anyhow::Result<(u16, hyper::HeaderMap, Value)> {
        let (status, headers, body) = self.send(addr).await?;
        Ok((status, headers, json_body(&body)?))
    }
}

fn json_body(bytes: &[u8]) -> anyhow::Result<Value> {
    Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(bytes)? })
}

/// Publishes `body` to the host at `addr` with `key`; the status and the answer.
pub async fn publish_to(addr: SocketAddr, key: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    Req::post("/v1/publish").key(key).body(body.to_string().into()).reply(addr).await
}

/// [`publish_to`], insisting on 202; the answer.
pub async fn published(addr: SocketAddr, key: &str, body: &Value) -> anyhow::Result<Value> {
    let (status, answer) = publish_to(addr, key, body).await?;
    anyhow::ensure!(status == 202, "publish answered {status}: {answer}");
    Ok(answer)
}

async fn request_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    patience: Duration,
) -> anyhow::Result<(u16, hyper::HeaderMap, Bytes)> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = tokio::time::timeout(patience, sender.send_request(req.body(Full::new(body))?)).await??;
    let status = res.status().as_u16();
    let response_headers = res.headers().clone();
    Ok((status, response_headers, res.into_body().collect().await?.to_bytes()))
}

/// An HS256 token for `sub` with `exp` seconds from now (negative: already expired).
pub fn hs256_token(sub: &str, exp_in: i64, channels: Option<&[&str]>, secret: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() as i64 + exp_in;
    let mut claims = json!({ "sub": sub, "exp": exp });
    if let Some(c) = channels {
        claims["channels"] = json!(c);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encoding a token")
}

/// An RS256 token for `sub` signed with the fixture key.
pub fn rs256_token(sub: &str, exp_in: i64) -> String {
    let exp = jsonwebtoken::get_current_timestamp() as i64 + exp_in;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({ "sub": sub, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).expect("fixture key"),
    )
    .expect("encoding a token")
}

/// Path of the host binary built for the tests (expands in the calling test crate, where
/// Cargo sets it).
#[macro_export]
macro_rules! host_bin {
    () => {
        env!("CARGO_BIN_EXE_notify-host-test")
    };
}

/// The value of a metric sample line (`name{labels}`) from the `/metrics` of the host whose
/// metrics listener is `addr`.
pub async fn metric(addr: SocketAddr, sample: &str) -> anyhow::Result<f64> {
    let (_, text) = Req::get("/metrics").raw(addr).await?;
    let text = String::from_utf8(text.to_vec())?;
    let line = text
        .lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .with_context(|| format!("no metric {sample}"))?;
    Ok(line[sample.len() + 1..].trim().parse()?)
}

/// A host running as its own process (the real binary), for signals and kills.
pub struct HostProcess {
    pub addr: SocketAddr,
    /// `server.metrics_listen`, where `/metrics` needs no credentials.
    pub metrics: SocketAddr,
    pub child: tokio::process::Child,
    /// Everything the process wrote to stdout and stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    _dir: TempDir,
}

impl HostProcess {
    /// Starts the binary `bin` (pass [`host_bin!`]) with `toml` on a free port.
    pub async fn start(bin: &str, toml: &str) -> anyhow::Result<Self> {
        Self::start_logging(bin, toml, "info").await
    }

    /// [`HostProcess::start`] with the log filter `rust_log`.
    pub async fn start_logging(bin: &str, toml: &str, rust_log: &str) -> anyhow::Result<Self> {
        Self::start_with(bin, toml, &[("RUST_LOG".into(), rust_log.into())]).await
    }

    /// [`HostProcess::start`] with `env` set for the process (after the test's own overrides).
    pub async fn start_with(bin: &str, toml: &str, env: &[(String, String)]) -> anyhow::Result<Self> {
        let dir = TempDir::new("host")?;
        let config = dir.path.join("config.toml");
        std::fs::write(&config, toml)?;
        let mut child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&config)
            .envs(test_overrides())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (addr, metrics) = tokio::time::timeout(STEP, async {
            let (mut addr, mut metrics) = (None, None);
            while let Some(line) = lines.next_line().await? {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(a) = address_after(&line, "notify-host listening on ") {
                    addr = Some(a?);
                } else if let Some(a) = address_after(&line, "metrics listening on ") {
                    metrics = Some(a?);
                }
                if let (Some(addr), Some(metrics)) = (addr, metrics) {
                    return Ok::<_, anyhow::Error>((addr, metrics));
                }
            }
            bail!("host exited before listening")
        })
        .await??;
        // Keep draining both so the host never blocks on a full pipe.
        let stderr = tokio::io::BufReader::new(child.stderr.take().context("stderr")?).lines();
        tokio::spawn(drain(lines, log.clone()));
        tokio::spawn(drain(stderr, log.clone()));
        Ok(Self { addr, metrics, child, log, _dir: dir })
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("process already reaped")?;
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }
}

/// The address a log line names after `marker`. Text logs end the line with it; JSON ones
/// close a string.
fn address_after(line: &str, marker: &str) -> Option<anyhow::Result<SocketAddr>> {
    let rest = line.split(marker).nth(1)?;
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)));
    Some(rest[..end.unwrap_or(rest.len())].parse().map_err(Into::into))
}

/// Appends a child's output to `log`, line by line, until it ends.
async fn drain<R: tokio::io::AsyncBufRead + Unpin>(
    mut lines: tokio::io::Lines<R>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        log.lock().unwrap().push_str(&format!("{line}\n"));
    }
}

/// A directory removed when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("notify-{prefix}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Absolute path of a compiled example plugin: a Rust one (`jwt_auth`, `redact`, ...) or a
/// JavaScript or Python one (`redact_js`, `redact_py`). The README test command builds them
/// first (scripts/build-plugins.sh).
pub fn plugin_path(name: &str) -> String {
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target");
    let file = format!("{name}.wasm");
    let path = [target.join("wasm32-wasip2/release").join(&file), target.join("components").join(&file)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{file} is missing from plugins/target: run scripts/build-plugins.sh"));
    path.canonicalize().expect("plugin path").display().to_string()
}

/// The bytes of a compiled example plugin.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    std::fs::read(plugin_path(name)).expect("reading plugin")
}
