//! Opening connections: the URL (and token) each simulated user connects with, bounded
//! concurrency, and the WebSocket and SSE clients themselves.
//!
//! A WebSocket client keeps a 4 KiB read buffer (tungstenite's default is 128 KiB), so one
//! generator process can hold its share of a few hundred thousand sockets, and may bind a
//! source address (`127.0.0.2`, ...) so that processes together need more than one address's
//! ephemeral ports.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Args;
use crate::events::now_us;
use crate::inflate::Inflating;

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<Inflating<TcpStream>>;

/// The URL user number `i` connects with: `?user=` or, with `--token-secret` or
/// `--token-key`, a token (HS256, or the key's `--token-alg`).
/// Several comma-separated URLs (nodes of a cluster) are taken round-robin.
pub(crate) fn connect_url(a: &Args, i: usize) -> String {
    let user = format!("{}{i}", a.prefix);
    let urls: Vec<&str> = a.url.split(',').collect();
    let url = urls[i % urls.len()];
    let sep = if url.contains('?') { '&' } else { '?' };
    let signing = match (&a.secret, &a.signing) {
        (_, Some((key, header))) => (key.clone(), header.clone()),
        (Some(secret), None) => {
            (jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()), jsonwebtoken::Header::default())
        }
        (None, None) => return format!("{url}{sep}user={user}"),
    };
    let mut claims = json!({ "sub": user, "exp": now_us() / 1_000_000 + 3600 });
    for (k, v) in &a.claims {
        claims[k] = json!(v);
    }
    let token = jsonwebtoken::encode(&signing.1, &claims, &signing.0).expect("signing a token");
    format!("{url}{sep}token={token}")
}

/// Opens `a.connections` connections (users `--first` onwards) with `connect`, at most
/// `--concurrency` at a time; returns those that opened and the time taken.
///
/// A task is spawned only once a slot is free and hands its connection back over a channel,
/// so no more than `--concurrency` handshakes' worth of memory is ever allocated beside the
/// open connections (which would otherwise stay as fragmentation).
pub(crate) async fn open_all<T, F, Fut>(a: &Args, connect: F) -> anyhow::Result<(Vec<T>, Duration)>
where
    T: Send + 'static,
    F: Fn(String, Option<IpAddr>) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    // Tokens signed with a private key cost the generator more than the host spends checking
    // them: they are all signed before the clock starts.
    let signed: Vec<String> = match a.signing {
        Some(_) => (a.first..a.first + a.connections).map(|i| connect_url(a, i)).collect(),
        None => Vec::new(),
    };
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(a.concurrency));
    let failed = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in a.first..a.first + a.connections {
        let permit = gate.clone().acquire_owned().await.expect("semaphore open");
        let url = signed.get(i - a.first).cloned().unwrap_or_else(|| connect_url(a, i));
        let opening = connect(url, a.source);
        let (tx, failed) = (tx.clone(), failed.clone());
        tokio::spawn(async move {
            match opening.await {
                Ok(conn) => _ = tx.send(conn),
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("connect failed: {e}");
                    }
                }
            }
            drop(permit);
        });
    }
    drop(tx);
    let mut conns = Vec::with_capacity(a.connections);
    while let Some(conn) = rx.recv().await {
        conns.push(conn);
    }
    Ok((conns, started.elapsed()))
}

/// `HOST:PORT` and `/PATH` of an `http://HOST:PORT/PATH` URL; `what` names the flag.
pub(crate) fn split_http_url<'a>(url: &'a str, what: &str) -> anyhow::Result<(&'a str, String)> {
    let rest = url.strip_prefix("http://").with_context(|| format!("{what} must be http://HOST:PORT/PATH"))?;
    let (host, path) = rest.split_once('/').with_context(|| format!("{what} needs a path"))?;
    Ok((host, format!("/{path}")))
}

/// A TCP connection (no Nagle delay) to `host:port`, from `source` when given.
pub(crate) async fn tcp(authority: &str, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let addr: SocketAddr =
        tokio::net::lookup_host(authority).await?.next().with_context(|| format!("{authority} resolves to nothing"))?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        bind_address_no_port(&socket)?;
        socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding {ip}"))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Leaves the choice of the local port to `connect`, which picks one free for this
/// destination (and may reuse a loopback port in TIME_WAIT), where `bind` alone would
/// reserve one of the address's ephemeral ports for good: reruns would then run out.
#[allow(unsafe_code)]
fn bind_address_no_port(socket: &TcpSocket) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is an open socket, and the option value is a c_int of that size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(rc == 0, "IP_BIND_ADDRESS_NO_PORT: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Whether a WebSocket server sends a first frame of its own (notify's `welcome`, the floor's);
/// `--welcome false` for servers that send only what is published (Nchan). Set once, from
/// the command line, before any connection opens.
pub(crate) static EXPECT_WELCOME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
/// Whether WebSocket connects offer permessage-deflate (`--deflate true`); what arrives
/// compressed is inflated (`inflate`).
pub(crate) static OFFER_DEFLATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A channel every WebSocket connection subscribes to the Pusher way (`pusher:subscribe`)
/// once its first frame arrived, waiting for the answer (`--pusher-subscribe NAME`).
pub(crate) static PUSHER_SUBSCRIBE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A WebSocket connection, once its welcome arrived.
pub(crate) async fn open_ws(url: String, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    Ok(open_ws_welcome(url, source).await?.0)
}

/// A WebSocket connection and its welcome frame.
pub(crate) async fn open_ws_welcome(url: String, source: Option<IpAddr>) -> anyhow::Result<(Ws, String)> {
    let mut request = url.into_client_request()?;
    if OFFER_DEFLATE.load(std::sync::atomic::Ordering::Relaxed) {
        let offer = "permessage-deflate; client_max_window_bits".parse().expect("a header value");
        request.headers_mut().insert("sec-websocket-extensions", offer);
    }
    let uri = request.uri();
    let authority = format!("{}:{}", uri.host().context("URL without a host")?, uri.port_u16().unwrap_or(80));
    let deflate = OFFER_DEFLATE.load(std::sync::atomic::Ordering::Relaxed);
    let stream = Inflating::new(tcp(&authority, source).await?);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    // Frames from here on (the upgrade answer is not one).
    ws.get_mut().on = deflate;
    if !EXPECT_WELCOME.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok((ws, String::new()));
    }
    let welcome = ws.next().await.context("closed before the welcome")??;
    if let Some(channel) = PUSHER_SUBSCRIBE.get() {
        let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": channel}}).to_string();
        ws.send(tokio_tungstenite::tungstenite::Message::text(subscribe)).await?;
        ws.next().await.context("closed before the subscription's answer")??;
    }
    Ok((ws, welcome.into_text().map(|t| t.to_string()).unwrap_or_default()))
}

/// An SSE stream's body, once its first chunk (the welcome) arrived.
pub(crate) async fn open_sse(url: String, source: Option<IpAddr>) -> anyhow::Result<hyper::body::Incoming> {
    let (host, path) = split_http_url(&url, "an SSE --url")?;
    let stream = tcp(host, source).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "bench")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))?;
    let res = sender.send_request(req).await?;
    anyhow::ensure!(res.status() == 200, "SSE refused: {}", res.status());
    let mut body = res.into_body();
    body.frame().await.context("stream ended before the welcome")??;
    Ok(body)
}

/// The line scripts wait for: `connected N failed M in T s (R handshakes/s)`.
pub(crate) fn report_connected(opened: usize, wanted: usize, took: Duration) {
    println!(
        "connected {opened} failed {} in {:.2}s ({:.0} handshakes/s)",
        wanted - opened,
        took.as_secs_f64(),
        opened as f64 / took.as_secs_f64()
    );
}
