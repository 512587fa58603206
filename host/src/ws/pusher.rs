//! The Pusher protocol on a WebSocket connection (docs/PUSHER.md): the connection's socket
//! id and first frame, the client's frames (ping, subscribe with the signature private and
//! presence channels need, unsubscribe), closing with Pusher's codes, and refusing a
//! connection as Pusher does (after the upgrade: an error frame, then the close code).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::Request;
use axum::http::request::Parts;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::app::App;
use crate::hub::Conn;
use crate::protocol::code;
use crate::protocol::pusher::{self, ClientFrame};
use crate::session::{self, Action};

/// How long a refused connection may take to read its error and close.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection's socket id, `NODE.CONN`: a number drawn when the process started, so
/// ids differ across nodes and restarts, and the connection's number on this node. Channel
/// signatures are made for it, so a signature is good for one connection only.
pub(super) fn socket_id(conn: &Conn) -> String {
    static NODE: OnceLock<u32> = OnceLock::new();
    let node = NODE.get_or_init(|| {
        let mut bytes = [0; 4];
        // A node whose draw failed still numbers its own connections apart.
        let _ = getrandom::fill(&mut bytes);
        u32::from_le_bytes(bytes) % 1_000_000_000
    });
    format!("{node}.{}", conn.id)
}

/// Joins a Pusher connection (anonymous: the broadcast and the channels it subscribes) and
/// queues `pusher:connection_established`.
pub(super) async fn join(conn: &Arc<Conn>, app: &App) {
    let first = pusher::connection_established(&socket_id(conn));
    session::join_anonymous(conn, first, app).await;
}

/// Handles a Pusher client frame.
pub(super) fn on_text(text: &str, conn: &Arc<Conn>, app: &App) -> Action {
    match pusher::parse(text) {
        Err(e) => Action::Reply(pusher::error(None, &format!("invalid frame: {e}"))),
        Ok(ClientFrame::Ping) => Action::Reply(pusher::pong()),
        Ok(ClientFrame::Subscribe { channel, auth, channel_data }) => {
            subscribe(conn, app, channel, auth.as_deref(), channel_data.as_deref())
        }
        Ok(ClientFrame::Unsubscribe { channel }) => {
            session::remove_subscription(conn, app, &channel);
            Action::Done
        }
        Ok(ClientFrame::Other(event)) if event.starts_with("client-") => {
            Action::Reply(pusher::error(None, "client events are not enabled for this app"))
        }
        Ok(ClientFrame::Other(_)) => Action::Done,
    }
}

/// Subscribes after checking the signature a private or presence channel needs.
fn subscribe(conn: &Arc<Conn>, app: &App, channel: String, auth: Option<&str>, _data: Option<&str>) -> Action {
    let refused =
        |kind: &str, error: &str, status| Action::Reply(pusher::subscription_error(&channel, kind, error, status));
    let presence = channel.starts_with("presence-");
    if presence {
        return refused("AuthError", "presence channels are not served yet", 501);
    }
    if channel.starts_with("private-") && !signed(conn, &channel, auth, None) {
        return refused("AuthError", "Invalid signature: the auth does not sign this socket id and channel", 401);
    }
    match session::add_subscription(conn, app, None, &channel, false, false) {
        Ok(None) => Action::Reply(pusher::subscription_succeeded(&channel, &json!({}))),
        Ok(Some(ticket)) => Action::AfterSync(pusher::subscription_succeeded(&channel, &json!({})), ticket),
        Err((code::TOO_MANY_SUBSCRIPTIONS, message)) => refused("LimitReached", message, 429),
        Err((_, message)) => refused("InvalidChannel", message, 400),
    }
}

/// Whether `auth` (`KEY:SIGNATURE`) signs `SOCKET_ID:CHANNEL[:CHANNEL_DATA]` with the
/// tenant's Pusher secret; compared in constant time.
fn signed(conn: &Conn, channel: &str, auth: Option<&str>, channel_data: Option<&str>) -> bool {
    let Some(credentials) = &conn.tenant.config.pusher else { return false };
    let Some((key, signature)) = auth.and_then(|a| a.split_once(':')) else { return false };
    let mut text = format!("{}:{channel}", socket_id(conn));
    if let Some(data) = channel_data {
        text.push(':');
        text.push_str(data);
    }
    let expected = pusher::sign(&credentials.secret, &text);
    key == credentials.key && bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
}

/// The code a Pusher connection closes with for `code` (native, docs/PROTOCOL.md): Pusher's
/// code of the same meaning, told first in a `pusher:error` frame when it is one of Pusher's.
pub(super) fn closing(conn: &Conn, code: u16, reason: &str) -> u16 {
    let code = pusher::close_code(code);
    if (4000..4300).contains(&code) {
        conn.outbox.push_control(pusher::error(Some(code), reason));
    }
    code
}

/// Refuses a connection as Pusher does: answers the upgrade, sends `pusher:error` with
/// `code` and `message`, and closes with `code`, which tells the client whether to retry.
pub(crate) fn refuse(app: &App, req: Parts, code: u16, message: String) {
    let on_upgrade = hyper::upgrade::on(Request::from_parts(req, ()));
    let wait = app.config().server.handshake_timeout;
    app.lifecycle().connections.spawn(async move {
        let Ok(Ok(upgraded)) = tokio::time::timeout(wait, on_upgrade).await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let error = pusher::error(Some(code), &message);
        let text = String::from_utf8_lossy(crate::protocol::frame::payload(&error)).into_owned();
        let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
            ws.send(Message::text(text)).await?;
            let reason = message.chars().take(100).collect::<String>();
            ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })).await?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<_, tokio_tungstenite::tungstenite::Error>(())
        })
        .await;
    });
}
