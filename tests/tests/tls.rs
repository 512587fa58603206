//! Native TLS (`server.tls`) with self-signed certificates generated here: `wss://`,
//! `https://` and SSE on the node's port; plain connections refused (or served, with
//! `allow_plaintext`); a changed certificate served to new connections while open ones go
//! on; a broken file refused with the current certificate kept.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use notify_tests::{DEMO, Req, TempDir, TestHost, eventually};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for `localhost` and its key, as PEM and DER.
struct Cert {
    pem: String,
    key: String,
    der: CertificateDer<'static>,
}

fn cert() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("generating a certificate");
    Cert { pem: c.cert.pem(), key: c.signing_key.serialize_pem(), der: c.cert.der().clone() }
}

/// Writes `cert` as the node's files, each replaced at once (a rename).
fn install(dir: &Path, cert: &Cert) -> anyhow::Result<()> {
    for (name, text) in [("key.pem", &cert.key), ("cert.pem", &cert.pem)] {
        std::fs::write(dir.join("next"), text)?;
        std::fs::rename(dir.join("next"), dir.join(name))?;
    }
    Ok(())
}

fn config(dir: &Path, plaintext: bool) -> String {
    format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nreload_interval = \"100ms\"\nallow_plaintext = {plaintext}\n{DEMO}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

/// A client that trusts `trusted`.
#[allow(deprecated)]
fn connector(trusted: &[&Cert]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.der.clone()).expect("a valid certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn connect(addr: SocketAddr, tls: &TlsConnector) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    Ok(tls.connect(ServerName::try_from("localhost")?, tcp).await?)
}

/// The certificate a new connection is shown.
async fn presented(addr: SocketAddr, tls: &TlsConnector) -> anyhow::Result<CertificateDer<'static>> {
    let stream = connect(addr, tls).await?;
    let certs = stream.get_ref().1.peer_certificates().context("no certificate")?;
    Ok(certs[0].clone().into_owned())
}

/// One HTTPS request: the status and the body.
async fn https(
    addr: SocketAddr,
    tls: &TlsConnector,
    method: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<(u16, hyper::HeaderMap, Bytes)> {
    let stream = connect(addr, tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", "Bearer demo-key")
        .body(Full::new(body))?;
    let res = sender.send_request(req).await?;
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    Ok((status, headers, res.into_body().collect().await?.to_bytes()))
}

async fn publish(addr: SocketAddr, tls: &TlsConnector, user: &str, event: &str) -> anyhow::Result<()> {
    let body = json!({ "users": [user], "event": event });
    let (status, _, answer) = https(addr, tls, "POST", "/v1/publish", &body).await?;
    anyhow::ensure!(status == 202, "publish answered {status}: {answer:?}");
    Ok(())
}

async fn wss(
    addr: SocketAddr,
    tls: &TlsConnector,
    user: &str,
) -> anyhow::Result<WebSocketStream<TlsStream<TcpStream>>> {
    let stream = connect(addr, tls).await?;
    let url = format!("wss://localhost/v1/ws/demo?user={user}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    anyhow::ensure!(next_frame(&mut ws).await?["type"] == "welcome");
    Ok(ws)
}

async fn next_frame(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(notify_tests::STEP, ws.next()).await?.context("closed")??;
        if let Message::Text(text) = msg {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}

#[tokio::test]
async fn wss_https_and_sse_are_served_over_tls() -> anyhow::Result<()> {
    let dir = TempDir::new("tls")?;
    let first = cert();
    install(&dir.path, &first)?;
    let host = TestHost::start(&config(&dir.path, false)).await?;
    let tls = connector(&[&first]);

    let (status, _, body) = https(host.addr, &tls, "GET", "/healthz", &Value::Null).await?;
    assert_eq!((status, &body[..]), (200, &br#"{"status":"ok"}"#[..]));
    let mut ws = wss(host.addr, &tls, "alice").await?;
    publish(host.addr, &tls, "alice", "over-tls").await?;
    let ev = next_frame(&mut ws).await?;
    assert_eq!((ev["type"].as_str(), ev["event"].as_str()), (Some("event"), Some("over-tls")));
    // A ping from the client gets its reply through the same session.
    ws.send(Message::Text(r#"{"type":"ping"}"#.into())).await?;
    assert_eq!(next_frame(&mut ws).await?["type"], "pong");

    let stream = connect(host.addr, &tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/v1/sse/demo?user=bob").header("host", "localhost").body(Full::new(Bytes::new()))?;
    let res = sender.send_request(req).await?;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    publish(host.addr, &tls, "bob", "sse-over-tls").await?;
    let mut seen = String::new();
    while !seen.contains("sse-over-tls") {
        let frame = tokio::time::timeout(notify_tests::STEP, body.frame()).await?.context("stream ended")??;
        seen.push_str(&String::from_utf8_lossy(frame.data_ref().context("data")?));
    }

    // Plain HTTP on a TLS-only port gets no answer, and counts as a failed TLS handshake.
    assert!(Req::get("/healthz").reply(host.addr).await.is_err());
    let failed = r#"notify_handshake_failures_total{tenant="",reason="tls"}"#;
    eventually(|| async { Ok(host.metric(failed).await? >= 1.0) }).await?;
    // A client that does not trust the certificate is refused by its own side.
    assert!(connect(host.addr, &connector(&[&cert()])).await.is_err());
    Ok(())
}

#[tokio::test]
async fn allow_plaintext_serves_both_on_one_port() -> anyhow::Result<()> {
    let dir = TempDir::new("tls")?;
    let first = cert();
    install(&dir.path, &first)?;
    let host = TestHost::start(&config(&dir.path, true)).await?;
    assert_eq!(Req::get("/healthz").reply(host.addr).await?.0, 200);
    let (status, _, _) = https(host.addr, &connector(&[&first]), "GET", "/healthz", &Value::Null).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn a_changed_certificate_serves_new_connections_and_open_ones_go_on() -> anyhow::Result<()> {
    let dir = TempDir::new("tls")?;
    let (first, second) = (cert(), cert());
    install(&dir.path, &first)?;
    let host = TestHost::start(&config(&dir.path, false)).await?;
    let tls = connector(&[&first, &second]);
    let mut open = wss(host.addr, &tls, "alice").await?;
    assert_eq!(presented(host.addr, &tls).await?, first.der);

    install(&dir.path, &second)?;
    eventually(|| async { Ok(presented(host.addr, &tls).await? == second.der) }).await?;
    assert!(host.metric(r#"notify_tls_reloads_total{result="ok"}"#).await? >= 1.0);
    publish(host.addr, &tls, "alice", "after-reload").await?;
    assert_eq!(next_frame(&mut open).await?["event"], "after-reload", "the open connection goes on");

    // A broken certificate file is refused; the current certificate stays.
    let errors = r#"notify_tls_reloads_total{result="error"}"#;
    let before = host.metric(errors).await?;
    std::fs::write(dir.path.join("cert.pem"), "not a certificate")?;
    eventually(|| async { Ok(host.metric(errors).await? > before) }).await?;
    assert_eq!(presented(host.addr, &tls).await?, second.der);
    publish(host.addr, &tls, "alice", "still-served").await?;
    assert_eq!(next_frame(&mut open).await?["event"], "still-served");
    Ok(())
}

#[tokio::test]
async fn a_tls_client_that_stops_reading_is_disconnected_while_others_keep_receiving() -> anyhow::Result<()> {
    let dir = TempDir::new("tls")?;
    let first = cert();
    install(&dir.path, &first)?;
    let toml =
        format!("{}\n[connections]\nsend_queue_frames = 64\nsend_queue_bytes = 262144\n", config(&dir.path, false));
    let host = TestHost::start(&toml).await?;
    let tls = connector(&[&first]);
    let _stalled = wss(host.addr, &tls, "slow").await?;
    let mut fast = wss(host.addr, &tls, "fast").await?;
    let slow_disconnects = r#"notify_slow_client_disconnects_total{tenant="demo"}"#;
    let pad = "z".repeat(64 * 1024);
    let mut sent = 0u32;
    // Bounded: at most 2,000 events of 64 KiB, stopping once the host has dropped the client.
    while sent < 2000 {
        let body = json!({ "broadcast": true, "event": "bulk", "data": { "n": sent, "pad": pad } });
        let (status, _, _) = https(host.addr, &tls, "POST", "/v1/publish", &body).await?;
        assert_eq!(status, 202);
        let ev = next_frame(&mut fast).await?;
        assert_eq!(ev["data"]["n"], sent, "the fast client missed or reordered an event");
        sent += 1;
        if sent.is_multiple_of(4) && host.metric(slow_disconnects).await? >= 1.0 {
            break;
        }
    }
    assert!(sent < 2000, "the stalled client was never disconnected");
    publish(host.addr, &tls, "fast", "after").await?;
    assert_eq!(next_frame(&mut fast).await?["event"], "after");
    Ok(())
}

#[tokio::test]
async fn the_command_line_publishes_over_https() -> anyhow::Result<()> {
    let dir = TempDir::new("tls")?;
    let first = cert();
    install(&dir.path, &first)?;
    let host = TestHost::start(&config(&dir.path, false)).await?;
    let mut ws = wss(host.addr, &connector(&[&first]), "alice").await?;
    let url = format!("https://localhost:{}", host.addr.port());
    let cli = |ca: &Path| {
        let mut command = tokio::process::Command::new(notify_tests::host_bin!());
        command.args(["publish", "--url", &url, "--key", "demo-key", "--user", "alice", "--event", "from-cli"]);
        command.arg("--ca-cert").arg(ca).env_remove("NOTIFY_URL").output()
    };
    let out = cli(&dir.path.join("cert.pem")).await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(next_frame(&mut ws).await?["event"], "from-cli");
    // A certificate it was not told to trust: refused, with the reason.
    std::fs::write(dir.path.join("other.pem"), cert().pem)?;
    let out = cli(&dir.path.join("other.pem")).await?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS handshake"), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
