//! `notify-load`: the project's load generator.
//!
//! ```text
//! notify-load idle   --url WS_URL [--connections N] [--concurrency N] [--hold SECS]
//!                    [--user-prefix P] [--token-secret S] [--claim k=v]...
//! notify-load fanout --url WS_URL[,WS_URL...] --publish HTTP_URL --key KEY [--connections N] [--events N]
//!                    [--attribute k=v]... [--token-secret S] [--claim k=v]... [--payload BYTES]
//!                    [--rate EVENTS_PER_SEC]
//! notify-load publish --publish HTTP_URL --key KEY [--events N] [--payload BYTES]
//! notify-load sse-idle --url HTTP_URL [--connections N] [--concurrency N] [--hold SECS] [--user-prefix P]
//! ```
//!
//! `idle` opens connections (users `load-0`, `load-1`, ...), waits for each welcome, prints
//! the handshake rate and holds them, answering pings. With `--token-secret` each user
//! authenticates with an HS256 token (`sub`, `exp`, plus every `--claim`).
//!
//! With several comma-separated `--url`s (nodes of a cluster), connections are spread over
//! them round-robin.
//!
//! `fanout` connects subscribers, then publishes `--events` broadcast events one after the
//! other (each carrying its send time; with `--rate`, paced at that many per second, which
//! measures latency below saturation), and reports deliveries per second and the
//! publish-to-receive latency percentiles over every delivery.
//!
//! `sse-idle` is `idle` over Server-Sent Events (`--url http://HOST:PORT/v1/sse/TENANT`): each
//! stream is open once its first chunk (the welcome) arrived.
//!
//! `publish` sends events to a user nobody is connected as, one request at a time, and
//! reports publishes per second (the cost of ingest and plugins without fan-out).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Args {
    url: String,
    publish: String,
    key: String,
    connections: usize,
    concurrency: usize,
    hold: u64,
    prefix: String,
    events: usize,
    payload: usize,
    secret: Option<String>,
    claims: Vec<(String, String)>,
    attributes: Vec<(String, String)>,
    /// Events per second in `fanout`; 0 publishes back to back.
    rate: f64,
}

fn pair(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s.split_once('=').context("expected key=value")?;
    Ok((k.to_owned(), v.to_owned()))
}

fn parse(args: &[String]) -> anyhow::Result<(String, Args)> {
    let mut it = args.iter();
    let mode = it.next().context("usage: notify-load idle|fanout|publish ... (see the source header)")?.clone();
    let mut a = Args {
        connections: 1000,
        concurrency: 256,
        hold: 3600,
        prefix: "load-".into(),
        events: 100,
        payload: 64,
        ..Args::default()
    };
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = v.clone(),
            "--publish" => a.publish = v.clone(),
            "--key" => a.key = v.clone(),
            "--connections" => a.connections = v.parse()?,
            "--concurrency" => a.concurrency = v.parse()?,
            "--hold" => a.hold = v.parse()?,
            "--user-prefix" => a.prefix = v.clone(),
            "--events" => a.events = v.parse()?,
            "--rate" => a.rate = v.parse()?,
            "--payload" => a.payload = v.parse()?,
            "--token-secret" => a.secret = Some(v.clone()),
            "--claim" => a.claims.push(pair(v)?),
            "--attribute" => a.attributes.push(pair(v)?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok((mode, a))
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn connect_url(a: &Args, i: usize) -> String {
    let user = format!("{}{i}", a.prefix);
    // Several nodes: connections go round-robin over the comma-separated URLs.
    let urls: Vec<&str> = a.url.split(',').collect();
    let url = urls[i % urls.len()];
    let sep = if url.contains('?') { '&' } else { '?' };
    match &a.secret {
        None => format!("{url}{sep}user={user}"),
        Some(secret) => {
            let mut claims = json!({ "sub": user, "exp": now_us() / 1_000_000 + 3600 });
            for (k, v) in &a.claims {
                claims[k] = json!(v);
            }
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
            .expect("signing a token");
            format!("{url}{sep}token={token}")
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `a.connections` connections with `connect` (bounded concurrency); returns those
/// that opened and the time taken.
async fn open_all<T, F, Fut>(a: &Args, connect: F) -> anyhow::Result<(Vec<T>, Duration)>
where
    T: Send + 'static,
    F: Fn(String) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(a.concurrency));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let opening = connect(connect_url(a, i));
        let (gate, failed) = (gate.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            match opening.await {
                Ok(conn) => Some(conn),
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("connect failed: {e}");
                    }
                    None
                }
            }
        }));
    }
    let mut conns = Vec::with_capacity(a.connections);
    for t in tasks {
        if let Some(conn) = t.await? {
            conns.push(conn);
        }
    }
    Ok((conns, started.elapsed()))
}

/// A WebSocket connection, once its welcome arrived.
async fn open_ws(url: String) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    ws.next().await.context("closed before the welcome")??;
    Ok(ws)
}

/// An SSE stream's body, once its first chunk (the welcome) arrived.
async fn open_sse(url: String) -> anyhow::Result<hyper::body::Incoming> {
    let rest = url.strip_prefix("http://").context("an SSE --url is http://HOST:PORT/PATH")?;
    let (host, path) = rest.split_once('/').context("--url needs a path")?;
    let tcp = tokio::net::TcpStream::connect(host).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("/{path}"))
        .header("host", "bench")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))?;
    let res = sender.send_request(req).await?;
    anyhow::ensure!(res.status() == 200, "SSE refused: {}", res.status());
    let mut body = res.into_body();
    body.frame().await.context("stream ended before the welcome")??;
    Ok(body)
}

fn report_connected(opened: usize, wanted: usize, took: Duration) {
    println!(
        "connected {opened} failed {} in {:.2}s ({:.0} handshakes/s)",
        wanted - opened,
        took.as_secs_f64(),
        opened as f64 / took.as_secs_f64()
    );
}

/// Keeps the streams open and read until `--hold` passes or Ctrl-C.
async fn hold(a: &Args, readers: Vec<tokio::task::JoinHandle<()>>) {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(a.hold)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for r in readers {
        r.abort();
    }
}

async fn sse_idle(a: Args) -> anyhow::Result<()> {
    let (streams, took) = open_all(&a, open_sse).await?;
    report_connected(streams.len(), a.connections, took);
    let readers = streams
        .into_iter()
        .map(|mut body| tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} }))
        .collect();
    hold(&a, readers).await;
    Ok(())
}

async fn idle(a: Args) -> anyhow::Result<()> {
    let (conns, took) = open_all(&a, open_ws).await?;
    report_connected(conns.len(), a.connections, took);
    let readers = conns
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    hold(&a, readers).await;
    Ok(())
}

/// A keep-alive HTTP/1.1 client for one publish URL.
struct Publisher {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: String,
    auth: String,
}

impl Publisher {
    async fn connect(url: &str, key: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").context("--publish must be http://host:port/path")?;
        let (host, path) = rest.split_once('/').context("--publish needs a path")?;
        let tcp = tokio::net::TcpStream::connect(host).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Self { sender, path: format!("/{path}"), auth: format!("Bearer {key}") })
    }

    async fn send(&mut self, body: &Value) -> anyhow::Result<()> {
        let req = hyper::Request::post(&self.path)
            .header("authorization", &self.auth)
            .header("host", "bench")
            .body(Full::new(Bytes::from(body.to_string())))?;
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        anyhow::ensure!(status == 202, "publish returned {status}: {}", String::from_utf8_lossy(&body));
        Ok(())
    }
}

/// The send time a `fanout` payload carries, found without parsing the frame: the generator
/// must cost far less per delivery than the servers it measures.
fn sent_us(frame: &str) -> Option<u64> {
    let rest = &frame[frame.find("\"sent_us\":")? + "\"sent_us\":".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn fanout(a: Args) -> anyhow::Result<()> {
    let (conns, took) = open_all(&a, open_ws).await?;
    let n = conns.len();
    println!("subscribers {n} connected in {:.2}s", took.as_secs_f64());
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n * a.events)));
    let last_receipt = Arc::new(Mutex::new(Instant::now()));
    let events = a.events;
    let readers: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            let (latencies, last_receipt) = (latencies.clone(), last_receipt.clone());
            tokio::spawn(async move {
                let mut mine = Vec::with_capacity(events);
                while mine.len() < events {
                    let text = match ws.next().await {
                        Some(Ok(Message::Text(text))) => text,
                        // Pings are answered by tungstenite; keep reading.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        _ => break,
                    };
                    if let Some(sent) = sent_us(&text) {
                        mine.push(now_us().saturating_sub(sent));
                    }
                }
                *last_receipt.lock().await = Instant::now();
                latencies.lock().await.extend(mine);
                ws
            })
        })
        .collect();
    let mut publisher = Publisher::connect(&a.publish, &a.key).await?;
    let attributes: serde_json::Map<String, Value> = a.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let pad = "x".repeat(a.payload);
    let started = Instant::now();
    for i in 0..a.events {
        if a.rate > 0.0 {
            tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / a.rate)).into()).await;
        }
        let body = json!({"broadcast": true, "event": "bench", "attributes": attributes,
                          "data": {"sent_us": now_us(), "n": i, "pad": pad}});
        publisher.send(&body).await?;
    }
    let published = started.elapsed();
    let mut open = Vec::new();
    for r in readers {
        if let Ok(Ok(ws)) = tokio::time::timeout(Duration::from_secs(60), r).await {
            open.push(ws);
        }
    }
    let elapsed = last_receipt.lock().await.duration_since(started);
    let mut lat = std::mem::take(&mut *latencies.lock().await);
    lat.sort_unstable();
    let deliveries = lat.len();
    println!(
        "events {events} published in {:.2}s; deliveries {deliveries}/{} in {:.2}s = {:.0} deliveries/s; latency us p50 {} p90 {} p99 {} max {}",
        published.as_secs_f64(),
        n * events,
        elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
    );
    Ok(())
}

async fn publish(a: Args) -> anyhow::Result<()> {
    let mut publisher = Publisher::connect(&a.publish, &a.key).await?;
    let pad = "x".repeat(a.payload);
    let started = Instant::now();
    for i in 0..a.events {
        publisher
            .send(&json!({"users": ["nobody"], "event": "bench", "data": {"n": i, "pad": pad, "ssn": "000"}}))
            .await?;
    }
    let took = started.elapsed();
    println!(
        "published {} events in {:.2}s = {:.0} publishes/s ({:.1} us each)",
        a.events,
        took.as_secs_f64(),
        a.events as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / a.events as f64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, a) = parse(&args)?;
    match mode.as_str() {
        "idle" => idle(a).await,
        "fanout" => fanout(a).await,
        "publish" => publish(a).await,
        "sse-idle" => sse_idle(a).await,
        other => bail!("unknown mode {other}: idle, sse-idle, fanout or publish"),
    }
}
