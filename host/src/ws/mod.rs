//! WebSocket transport: the upgrade handshake, the connection loop, the client protocol and
//! wire-encoded server frames.

pub mod close;
pub mod conn;
pub mod frame;
pub mod protocol;
pub mod upgrade;
