//! Limits per client address and on handshakes in progress: one address cannot take every
//! socket, connect faster than its rate, or keep failing handshakes; a trusted proxy's
//! clients are told apart by the address it forwards; stalled handshakes are bounded. Every
//! refusal is an HTTP answer before the upgrade, with a code and `Retry-After`.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use hyper::HeaderMap;
use notify_tests::{DEMO, JWT_SECRET, STEP, TestHost, eventually, hs256_token, jwt_tenant};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws = WebSocketStream<TcpStream>;

/// An HTTP refusal: status, headers, JSON body.
#[derive(Debug)]
struct Refusal {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Refusal {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn retry_after(&self) -> u64 {
        self.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

async fn socket_from(src: &str, addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.parse::<IpAddr>()?, 0))?;
    Ok(socket.connect(addr).await?)
}

/// Opens a WebSocket to `path` from the source address `src`, and reads its welcome.
async fn connect_from(
    src: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Result<Ws, Refusal>> {
    let tcp = socket_from(src, addr).await?;
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(hyper::header::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
    }
    match tokio::time::timeout(STEP, tokio_tungstenite::client_async(req, tcp)).await? {
        Ok((mut ws, _)) => {
            let welcome = tokio::time::timeout(STEP, ws.next()).await?.context("closed before welcome")??;
            anyhow::ensure!(welcome.to_text()?.contains("\"welcome\""), "expected a welcome, got {welcome}");
            Ok(Ok(ws))
        }
        Err(WsError::Http(res)) => {
            let body = res.body().as_deref().map(serde_json::from_slice).transpose()?.unwrap_or(Value::Null);
            Ok(Err(Refusal { status: res.status().as_u16(), headers: res.headers().clone(), body }))
        }
        Err(e) => Err(e.into()),
    }
}

async fn admitted(src: &str, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Ws> {
    match connect_from(src, addr, path, headers).await? {
        Ok(ws) => Ok(ws),
        Err(r) => bail!("refused from {src}: {} {}", r.status, r.body),
    }
}

async fn refused(src: &str, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Refusal> {
    match connect_from(src, addr, path, headers).await? {
        Ok(_) => bail!("admitted from {src}, expected a refusal"),
        Err(r) => Ok(r),
    }
}

/// One `GET` from `src` on a fresh socket: status and body.
async fn get_from(src: &str, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = socket_from(src, addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut text = String::new();
    tokio::time::timeout(STEP, tcp.read_to_string(&mut text)).await??;
    let status = text.split(' ').nth(1).context("no status line")?.parse()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

fn failures(reason: &str) -> String {
    format!("notify_handshake_failures_total{{tenant=\"\",reason=\"{reason}\"}}")
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() -> anyhow::Result<()> {
    let host = TestHost::start(&format!("[addresses]\nmax_connections = 3\n{DEMO}")).await?;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(admitted("127.0.0.2", host.addr, &format!("/v1/ws/demo?user=u{i}"), &[]).await?);
    }
    let r = refused("127.0.0.2", host.addr, "/v1/ws/demo?user=u3", &[]).await?;
    assert_eq!((r.status, r.code()), (429, "too_many_connections"), "{r:?}");
    assert!(r.retry_after() >= 1, "{r:?}");
    let (status, body) = get_from("127.0.0.2", host.addr, "/v1/sse/demo?user=u3").await?;
    assert_eq!(status, 429, "an SSE stream is a connection too: {body}");
    // Another address is not affected.
    let _other = admitted("127.0.0.3", host.addr, "/v1/ws/demo?user=v", &[]).await?;
    assert!(host.metric(&failures("address_connections")).await? >= 2.0);
    // A closed connection gives its place back.
    held.pop().context("held")?.close(None).await?;
    eventually(|| async { Ok(connect_from("127.0.0.2", host.addr, "/v1/ws/demo?user=u4", &[]).await?.is_ok()) })
        .await?;
    Ok(())
}

/// Opens an SSE stream from `src` on a raw socket and reads up to its welcome.
async fn stream_from(src: &str, addr: SocketAddr, path: &str) -> anyhow::Result<TcpStream> {
    let mut tcp = socket_from(src, addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"welcome\"") {
        let mut buf = [0; 1024];
        let n = tokio::time::timeout(STEP, tcp.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before welcome: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    anyhow::ensure!(seen.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&seen));
    Ok(tcp)
}

#[tokio::test]
async fn an_sse_stream_holds_its_place_in_its_address_count_until_it_closes() -> anyhow::Result<()> {
    let host = TestHost::start(&format!("[addresses]\nmax_connections = 1\n{DEMO}")).await?;
    let stream = stream_from("127.0.0.4", host.addr, "/v1/sse/demo?user=s").await?;
    let r = refused("127.0.0.4", host.addr, "/v1/ws/demo?user=t", &[]).await?;
    assert_eq!((r.status, r.code()), (429, "too_many_connections"), "{r:?}");
    drop(stream);
    eventually(|| async { Ok(connect_from("127.0.0.4", host.addr, "/v1/ws/demo?user=t", &[]).await?.is_ok()) }).await?;
    Ok(())
}

#[tokio::test]
async fn a_connect_flood_is_rate_limited_per_address() -> anyhow::Result<()> {
    // A token comes back every 1,000 s: the test cannot see one refill.
    let host = TestHost::start(&format!("[addresses]\nconnect_rate = 0.001\nconnect_burst = 2\n{DEMO}")).await?;
    let _a = admitted("127.0.0.4", host.addr, "/v1/ws/demo?user=a", &[]).await?;
    let _b = admitted("127.0.0.4", host.addr, "/v1/ws/demo?user=b", &[]).await?;
    let r = refused("127.0.0.4", host.addr, "/v1/ws/demo?user=c", &[]).await?;
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "{r:?}");
    assert!(r.retry_after() > 100, "the wait for the next token: {r:?}");
    let (status, _) = get_from("127.0.0.4", host.addr, "/v1/sse/demo?user=c").await?;
    assert_eq!(status, 429, "SSE connects spend the same tokens");
    // Other routes are not connects: publishing from the same address still works.
    let (status, _) = get_from("127.0.0.4", host.addr, "/healthz").await?;
    assert_eq!(status, 200);
    let _d = admitted("127.0.0.5", host.addr, "/v1/ws/demo?user=d", &[]).await?;
    assert_eq!(host.metric("notify_handshake_failures_total{tenant=\"demo\",reason=\"address_rate\"}").await?, 2.0);
    Ok(())
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_refused_for_a_while() -> anyhow::Result<()> {
    let toml = format!("[addresses]\nmax_failures = 3\nfailure_refusal = \"1h\"\n{}", jwt_tenant());
    let host = TestHost::start(&toml).await?;
    let good = hs256_token("ann", 600, None, JWT_SECRET);
    let bad = hs256_token("ann", 600, None, "not-the-secret-0123456789");
    let origin = [("origin", "https://app.example.com")];
    for _ in 0..3 {
        let r = refused("127.0.0.6", host.addr, &format!("/v1/ws/secure?token={bad}"), &origin).await?;
        assert_eq!(r.status, 401, "{r:?}");
    }
    let r = refused("127.0.0.6", host.addr, &format!("/v1/ws/secure?token={good}"), &origin).await?;
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "even good credentials wait: {r:?}");
    assert!(r.retry_after() > 3000, "{r:?}");
    let _ok = admitted("127.0.0.7", host.addr, &format!("/v1/ws/secure?token={good}"), &origin).await?;
    let sample = "notify_handshake_failures_total{tenant=\"secure\",reason=\"address_failures\"}";
    assert_eq!(host.metric(sample).await?, 1.0);
    Ok(())
}

/// A client whose upgrade fails (a proxy drops it) asks why with a plain GET, as the
/// JavaScript client does: however often, that takes no connect token and never counts as
/// a failed connect, so the client can still connect, or fall back to SSE, afterwards.
#[tokio::test]
async fn a_diagnosis_never_pushes_a_client_toward_its_limits() -> anyhow::Result<()> {
    let limits = "[addresses]\nconnect_rate = 0.001\nconnect_burst = 2\nmax_failures = 2\nfailure_refusal = \"1h\"\n";
    let host = TestHost::start(&format!("{limits}{DEMO}")).await?;
    for _ in 0..5 {
        let (status, body) = get_from("127.0.0.12", host.addr, "/v1/ws/demo?user=ann").await?;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("not_websocket"), "{body}");
    }
    let (status, body) = get_from("127.0.0.12", host.addr, "/v1/ws/nope?user=ann").await?;
    assert_eq!(status, 404, "a diagnosis still tells what is wrong: {body}");
    let _first = admitted("127.0.0.12", host.addr, "/v1/ws/demo?user=ann", &[]).await?;
    let _second = admitted("127.0.0.12", host.addr, "/v1/ws/demo?user=ann", &[]).await?;
    // With the tokens spent, the diagnosis tells so, as a connect would.
    let (status, body) = get_from("127.0.0.12", host.addr, "/v1/ws/demo?user=ann").await?;
    assert_eq!(status, 429, "{body}");
    Ok(())
}

#[tokio::test]
async fn a_trusted_proxy_has_its_clients_counted_apart() -> anyhow::Result<()> {
    let toml = format!("[addresses]\nmax_connections = 2\ntrusted_proxies = [\"127.0.0.8/32\"]\n{DEMO}");
    let host = TestHost::start(&toml).await?;
    let from = |client: &'static str| [("x-forwarded-for", client)];
    let path = "/v1/ws/demo?user=p";
    // Through the proxy, 198.51.100.1 gets its own 2; the proxy's sockets are not counted.
    let _p1 = admitted("127.0.0.8", host.addr, path, &from("198.51.100.1")).await?;
    let _p2 = admitted("127.0.0.8", host.addr, path, &from("198.51.100.1")).await?;
    let r = refused("127.0.0.8", host.addr, path, &from("198.51.100.1")).await?;
    assert_eq!((r.status, r.code()), (429, "too_many_connections"), "{r:?}");
    let forwarded = [("forwarded", "for=\"198.51.100.2:4711\";proto=https")];
    let _q1 = admitted("127.0.0.8", host.addr, path, &forwarded).await?;
    let _q2 = admitted("127.0.0.8", host.addr, path, &forwarded).await?;
    // An untrusted peer's header names nothing: it is counted as itself.
    let _s1 = admitted("127.0.0.9", host.addr, path, &from("198.51.100.3")).await?;
    let _s2 = admitted("127.0.0.9", host.addr, path, &from("198.51.100.4")).await?;
    let r = refused("127.0.0.9", host.addr, path, &from("198.51.100.5")).await?;
    assert_eq!(r.code(), "too_many_connections", "{r:?}");
    Ok(())
}

#[tokio::test]
async fn stalled_handshakes_are_bounded_per_node() -> anyhow::Result<()> {
    let host = TestHost::start(&format!("[server]\nmax_handshakes = 2\n{DEMO}")).await?;
    // Two sockets that send half a request and stall hold both slots.
    let mut stalled = Vec::new();
    for src in ["127.0.0.10", "127.0.0.11"] {
        let mut tcp = socket_from(src, host.addr).await?;
        tcp.write_all(b"GET /v1/ws/demo?user=slow HTTP/1.1\r\nHost: x\r\n").await?;
        stalled.push(tcp);
    }
    let sample = failures("handshakes");
    eventually(|| async {
        let (status, body) = get_from("127.0.0.12", host.addr, "/healthz").await?;
        Ok(status == 503 && body.contains("\"busy\""))
    })
    .await?;
    let r = refused("127.0.0.12", host.addr, "/v1/ws/demo?user=w", &[]).await?;
    assert_eq!((r.status, r.code()), (503, "busy"), "{r:?}");
    assert!(r.retry_after() >= 1, "{r:?}");
    // One stalled socket finishes its request and frees its slot with the answer.
    let mut first = stalled.remove(0);
    first.write_all(b"\r\n").await?;
    let mut head = [0u8; 12];
    tokio::time::timeout(STEP, first.read_exact(&mut head)).await??;
    assert_eq!(&head, b"HTTP/1.1 400", "the request lacked the upgrade headers");
    let _ws = admitted("127.0.0.12", host.addr, "/v1/ws/demo?user=w", &[]).await?;
    // The other stalled socket still holds its slot (metrics are read on their own listener).
    assert_eq!(host.metric("notify_handshakes_in_progress").await?, 1.0);
    assert!(host.metric(&sample).await? >= 2.0);
    Ok(())
}
