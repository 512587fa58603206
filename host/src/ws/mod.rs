//! WebSocket transport: takes an accepted upgrade from hyper, wraps the raw socket with small
//! buffers, and runs the connection loop (`conn`).

mod conn;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::http::Request;
use axum::http::request::Parts;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::app::App;
use crate::metrics::HandshakeFailure;
use crate::session::{self, Joining};

/// Spawns the task that waits for hyper to hand over the socket and runs the connection.
/// Only what the connection needs survives; the request (headers, URI) is dropped here.
pub(crate) fn spawn(app: &Arc<App>, req: Parts, j: Joining) {
    let Joining { tenant, identity, attributes, resume, admitted, quota, peer } = j;
    let on_upgrade = hyper::upgrade::on(Request::from_parts(req, ()));
    let conn = session::conn(app, tenant, &identity.user, attributes);
    let task_app = app.clone();
    app.connections.spawn(async move {
        let app = task_app;
        let _slots = (admitted, quota);
        let upgraded = tokio::time::timeout(app.config.server.handshake_timeout, on_upgrade).await;
        match upgraded {
            Ok(Ok(upgraded)) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let ws = websocket(&app, parts.io.into_inner(), parts.read_buf).await;
                    conn.tenant.metrics.handshakes.fetch_add(1, Relaxed);
                    conn::run(ws, conn, identity, resume, &app).await;
                }
                Err(_) => tracing::error!("upgraded connection is not a TCP stream"),
            },
            Ok(Err(e)) => {
                conn.tenant.metrics.handshake_failed(HandshakeFailure::BadRequest);
                tracing::debug!(%peer, "upgrade failed: {e}");
            }
            Err(_) => conn.tenant.metrics.handshake_failed(HandshakeFailure::Timeout),
        }
    });
}

/// Wraps the socket with small buffers: tungstenite's defaults would allocate 128 KiB per
/// connection up front. Server frames bypass tungstenite's write buffer entirely (see
/// `fanout`), so it only ever holds pongs and close frames.
///
/// `pre_read` (bytes the client sent before the upgrade finished) is a view into hyper's
/// 8 KiB read buffer; it is consumed here so that buffer is freed before the connection
/// settles in.
async fn websocket(app: &App, tcp: TcpStream, pre_read: bytes::Bytes) -> WebSocketStream<TcpStream> {
    let c = &app.config.connections;
    let config = WebSocketConfig::default()
        .read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(c.max_message_bytes))
        .max_frame_size(Some(c.max_message_bytes));
    if pre_read.is_empty() {
        WebSocketStream::from_raw_socket(tcp, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(tcp, pre_read.to_vec(), Role::Server, Some(config)).await
    }
}
