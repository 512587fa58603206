//! `notify-floor`: the naive floor every benchmark compares notify against. It is the ~100-line
//! broadcast server a careful developer writes with tokio-tungstenite: one task per
//! connection, a `tokio::sync::broadcast` channel, tungstenite with a 4 KiB read buffer.
//!
//! ```text
//! notify-floor --listen 127.0.0.1:PORT
//! ```
//!
//! A WebSocket upgrade on any path gets a welcome frame, then every published message.
//! Anything else is treated as `POST` of a publish body (JSON, as notify takes it): the body
//! is broadcast as-is and answered `202`. Slow receivers that lag the channel skip messages
//! (and say so on stderr), as `tokio::sync::broadcast` does.

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Messages a subscriber may fall behind before it starts skipping.
const CHANNEL: usize = 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = match args.get(1).map(String::as_str) {
        Some("--listen") => args.get(2).context("--listen needs an address")?.parse()?,
        _ => anyhow::bail!("usage: notify-floor --listen ADDR"),
    };
    let listener = TcpListener::bind(listen).await?;
    println!("floor listening on {}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Bytes>(CHANNEL);
    loop {
        let (tcp, _) = listener.accept().await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(tcp, tx).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

/// Upgrades WebSocket requests; serves everything else as a publish.
async fn serve(tcp: TcpStream, tx: broadcast::Sender<Bytes>) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let mut head = [0u8; 1024];
    let n = tcp.peek(&mut head).await?;
    let upgrade = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase().contains("upgrade: websocket");
    if upgrade {
        subscriber(tcp, tx.subscribe()).await
    } else {
        let service = service_fn(move |req| publish(req, tx.clone()));
        http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await?;
        Ok(())
    }
}

async fn subscriber(tcp: TcpStream, mut rx: broadcast::Receiver<Bytes>) -> anyhow::Result<()> {
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::text(r#"{"type":"welcome"}"#)).await?;
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(bytes) => sink.send(Message::Text(bytes.try_into()?)).await?,
                Err(broadcast::error::RecvError::Lagged(n)) => eprintln!("subscriber skipped {n} messages"),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn publish(req: Request<Incoming>, tx: broadcast::Sender<Bytes>) -> anyhow::Result<Response<Full<Bytes>>> {
    let body = req.into_body().collect().await?.to_bytes();
    let _ = tx.send(body);
    Ok(Response::builder().status(202).body(Full::new(Bytes::from_static(b"{}")))?)
}
