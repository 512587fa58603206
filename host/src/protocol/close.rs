//! Close codes the host sends, documented in docs/PROTOCOL.md.

/// The host is shutting down; reconnect (to another node) and resume.
pub(crate) const GOING_AWAY: u16 = 1001;
/// The client broke the WebSocket protocol.
pub(crate) const PROTOCOL_ERROR: u16 = 1002;
/// A text frame was not valid UTF-8.
pub(crate) const INVALID_PAYLOAD: u16 = 1007;
/// A client message exceeded `connections.max_message_bytes`.
pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;
/// The connection may have missed live events (its node lost and regained the broker);
/// reconnect and resume.
pub(crate) const SERVICE_RESTART: u16 = 1012;
/// History could not be read to resume the connection (Redis unreachable or too slow);
/// reconnect after `retry_after_ms` and resume from the same positions.
pub(crate) const TRY_AGAIN_LATER: u16 = 1013;
/// No pong or frame from the client within `connections.idle_timeout`.
pub(crate) const IDLE_TIMEOUT: u16 = 4000;
/// The send queue overflowed or a write stalled (slow client); reconnect and resume.
pub(crate) const SLOW_CLIENT: u16 = 4001;
/// The credentials' `exp` passed; reconnect with fresh credentials.
pub(crate) const CREDENTIALS_EXPIRED: u16 = 4003;
/// The tenant was deleted; do not reconnect.
pub(crate) const TENANT_DELETED: u16 = 4004;
/// A backend disconnected the user (`POST /v1/users/{user}/disconnect`); do not reconnect
/// on your own.
pub(crate) const DISCONNECTED: u16 = 4005;
