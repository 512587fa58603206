//! WebSocket transport: takes an accepted upgrade from hyper, wraps the raw socket with small
//! buffers, and runs the connection loop (`conn`).

mod conn;
pub(crate) mod extension;
mod inflate;
mod pusher;
mod socket;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::http::Request;
use axum::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::admission::Admitted;
use crate::app::App;
use crate::auth::Identity;
use crate::hub::Conn;
use crate::metrics::HandshakeFailure;
use crate::protocol::Dialect;
use crate::quota::Slots;
use crate::session::{self, Joining};
use crate::takeover::{Io, Served};
use socket::{Plain, Socket, Wire};
use tls::TlsWire;

#[cfg(any(test, fuzzing))]
pub(crate) use conn::on_text;
pub(crate) use pusher::{refuse as refuse_pusher, sweep_members};

/// Spawns the task that waits for hyper to hand over the socket and runs the connection.
/// Only what the connection needs survives; the request (headers, URI) is dropped here.
/// `deflate`: the client negotiated permessage-deflate; `dialect`: the protocol it speaks.
pub(crate) fn spawn(app: &App, req: Parts, mut j: Joining, (deflate, dialect): (bool, Dialect)) {
    let on_upgrade = hyper::upgrade::on(Request::from_parts(req, ()));
    let attributes = std::mem::take(&mut j.attributes);
    let conn = session::conn(app.hub(), j.tenant.clone(), &j.identity.user, attributes, (deflate, dialect));
    app.lifecycle().connections.spawn(serve(app.clone(), conn, on_upgrade, Box::new(j)));
}

/// The connection task. What it holds while the connection is idle is what every connection
/// costs, so each phase that runs once is boxed and freed when done, and of the handshake's
/// results only what an open connection needs is kept.
async fn serve(app: App, conn: Arc<Conn>, on_upgrade: OnUpgrade, mut j: Box<Joining>) {
    let Some(ws) = Box::pin(upgrade(&app, &conn, on_upgrade, j.peer)).await else { return };
    conn.tenant.metrics.handshakes.fetch_add(1, Relaxed);
    // `resume` is taken in the arm that hands it on: one left in this future would be kept
    // for the connection's life.
    match conn.dialect {
        Dialect::Native => {
            let resume = std::mem::take(&mut j.resume);
            Box::pin(session::join(&conn, &j.identity, resume, &app)).await;
        }
        Dialect::Pusher => Box::pin(pusher::join(&conn, &app)).await,
    }
    session::drain_if_draining(&conn, &app);
    let (mut identity, _slots) = keep(j);
    match ws {
        Upgraded::Plain(ws) => conn::run(ws, &conn, &mut identity, &app).await,
        Upgraded::Tls(ws) => conn::run(ws, &conn, &mut identity, &app).await,
    }
}

/// The upgraded connection, boxed so that handing it on moves a pointer, not its state.
enum Upgraded {
    Plain(Box<WebSocketStream<Socket<Plain>>>),
    Tls(Box<WebSocketStream<Socket<TlsWire>>>),
}

/// What an open connection keeps of its handshake: the credentials' grants and expiry, and
/// its admission and quota slots (freed when the task ends). The rest is freed here.
fn keep(j: Box<Joining>) -> (Identity, (Admitted, Slots)) {
    let Joining { mut identity, admitted, quota, .. } = *j;
    // The hub's `Conn` holds the user id.
    identity.user = String::new();
    (identity, (admitted, quota))
}

/// Waits for hyper to hand over the upgraded socket and wraps it; counts a failure.
async fn upgrade(app: &App, conn: &Arc<Conn>, on_upgrade: OnUpgrade, peer: SocketAddr) -> Option<Upgraded> {
    let failed = match tokio::time::timeout(app.config().server.handshake_timeout, on_upgrade).await {
        Ok(Ok(upgraded)) => return wrap(app, conn, upgraded).await,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "upgrade failed: {e}");
            HandshakeFailure::BadRequest
        }
        Err(_) => HandshakeFailure::Timeout,
    };
    conn.tenant.metrics.handshake_failed(failed);
    None
}

/// The upgraded socket, plain or TLS, as a WebSocket.
async fn wrap(app: &App, conn: &Arc<Conn>, upgraded: hyper::upgrade::Upgraded) -> Option<Upgraded> {
    let Ok(parts) = upgraded.downcast::<TokioIo<Served>>() else {
        tracing::error!("upgraded connection is not the one the host served");
        return None;
    };
    match parts.io.into_inner().take()? {
        Io::Plain(tcp) => {
            let socket = Socket::attach(tcp, conn.clone());
            Some(Upgraded::Plain(Box::new(websocket(app, socket, parts.read_buf).await)))
        }
        Io::Tls(tls) => {
            let (tcp, session) = tls.into_inner();
            let socket = Socket::on(TlsWire::new(tcp, session), conn.clone());
            Some(Upgraded::Tls(Box::new(websocket(app, socket, parts.read_buf).await)))
        }
    }
}

/// Wraps the socket with small buffers: tungstenite's defaults would allocate 128 KiB per
/// connection up front. Server frames bypass tungstenite's write path entirely (see
/// `fanout`), and what tungstenite writes itself (pongs, close frames) goes to the outbox
/// (see `socket`), so it needs no write buffer.
///
/// `pre_read` (bytes the client sent before the upgrade finished) is a view into hyper's
/// 8 KiB read buffer; it is consumed here so that buffer is freed before the connection
/// settles in.
async fn websocket<W: Wire>(app: &App, socket: Socket<W>, pre_read: bytes::Bytes) -> WebSocketStream<Socket<W>> {
    let c = &app.config().connections;
    let (socket, pre_read) = socket.inflating(c.max_message_bytes, pre_read);
    let config = WebSocketConfig::default()
        .read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(c.max_message_bytes))
        .max_frame_size(Some(c.max_message_bytes));
    if pre_read.is_empty() {
        WebSocketStream::from_raw_socket(socket, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(socket, pre_read.to_vec(), Role::Server, Some(config)).await
    }
}
