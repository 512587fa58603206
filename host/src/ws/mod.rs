//! WebSocket transport: the upgrade handshake, the connection loop, the client protocol and
//! wire-encoded server frames.

pub(crate) mod close;
pub(crate) mod conn;
pub(crate) mod frame;
pub(crate) mod protocol;
pub(crate) mod upgrade;
