//! Close codes the host sends, documented in docs/PROTOCOL.md.

/// Normal closure, answering a client's close.
pub const NORMAL: u16 = 1000;
/// The host is shutting down; reconnect (to another node) and resume.
pub const GOING_AWAY: u16 = 1001;
/// The client broke the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text frame was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A client message exceeded `connections.max_message_bytes`.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Unexpected server-side failure.
pub const INTERNAL_ERROR: u16 = 1011;
/// The connection may have missed live events (its node lost and regained the broker);
/// reconnect and resume.
pub const SERVICE_RESTART: u16 = 1012;
/// No pong or frame from the client within `connections.idle_timeout`.
pub const IDLE_TIMEOUT: u16 = 4000;
/// The send queue overflowed or a write stalled (slow client); reconnect and resume.
pub const SLOW_CLIENT: u16 = 4001;
/// The credentials' `exp` passed; reconnect with fresh credentials.
pub const CREDENTIALS_EXPIRED: u16 = 4003;
