//! Where a connecting client starts, read from its connect URL the same way for every
//! transport: positions for its own streams (`user_since`, `broadcast_since`), the channels
//! to subscribe at connect (`channels`, with delta updates if `delta`), and an SSE cursor (`Last-Event-ID`, or
//! `last_event_id` for clients that cannot set headers) that carries positions for all of
//! them and wins over the other parameters. An SSE stream's cursor starts from the
//! [`Resume`] (`sse::Cursor::from`).

use axum::http::header::HeaderName;
use axum::http::request::Parts;

use super::ApiError;
use super::code::ErrorCode;
use super::extract::query_param;
use super::handshake::Refusal;
use crate::app::App;
use crate::auth::Identity;
use crate::metrics::HandshakeFailure;
use crate::session::{self, Resume};
use crate::sse::{Cursor, Stream};
use crate::stream::Position;
use crate::tenant::Tenant;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The positions and channels to start from. A channel the client may not subscribe refuses the connection, as a `subscribe` frame's
/// `error` would refuse the channel.
pub(super) fn from_request(app: &App, tenant: &Tenant, identity: &Identity, req: &Parts) -> Result<Resume, Refusal> {
    let given = given_cursor(req)?;
    let own = |stream: Stream, param: &str| -> Result<_, Refusal> {
        match given.get(&stream) {
            Some(p) => Ok(Some(p.clone())),
            None => since_param(req, param),
        }
    };
    let user = own(Stream::User, "user_since")?;
    let broadcast = own(Stream::Broadcast, "broadcast_since")?;
    let grants = session::grants(identity, tenant);
    let mut channels: Vec<(String, Option<_>)> = Vec::new();
    for name in query_param(req.uri.query(), "channels").unwrap_or_default().split(',').map(str::trim) {
        if name.is_empty() || channels.iter().any(|(c, _)| c == name) {
            continue;
        }
        if let Some((code, message)) = session::refuse_channel(app, tenant, Some(grants), name, channels.len()) {
            let code = ErrorCode::named(code).expect("channel refusals are error codes");
            let error = ApiError::new(code, format!("channel {name:?}: {message}"));
            return Err(Refusal(HandshakeFailure::BadRequest, error));
        }
        let since = given.get(&Stream::Channel(name.to_owned())).cloned();
        channels.push((name.to_owned(), since));
    }
    let delta = match query_param(req.uri.query(), "delta").as_deref() {
        None => false,
        Some("fossil") => true,
        Some(_) => return Err(Refusal::bad_request("delta must be fossil, the one delta format")),
    };
    Ok(Resume { user, broadcast, channels, delta })
}

/// The cursor the client sent, if any.
fn given_cursor(req: &Parts) -> Result<Cursor, Refusal> {
    let given = req
        .headers
        .get(LAST_EVENT_ID)
        .map(|v| v.to_str().map(str::to_owned).unwrap_or_default())
        .or_else(|| query_param(req.uri.query(), "last_event_id"))
        .map(|id| Cursor::parse(&id))
        .transpose()
        .map_err(|why| Refusal::bad_request(format!("Last-Event-ID: {why}")))?;
    Ok(given.unwrap_or_default())
}

/// `name` from the query as a stream position (`EPOCH:OFFSET`), if present.
fn since_param(req: &Parts, name: &str) -> Result<Option<Position>, Refusal> {
    query_param(req.uri.query(), name).map(|v| Position::parse(&v)).map_or(Ok(None), |p| {
        p.map(Some).ok_or_else(|| {
            Refusal::bad_request(format!("{name} must be EPOCH:OFFSET, as in the stream positions of event frames"))
        })
    })
}
