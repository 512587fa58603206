//! notify host: a multi-tenant real-time notification server.
//!
//! Publishers send events by HTTP or through Redis; the hub fans them out over WebSocket
//! connections, encoding each event once. The library exports what the binary and the
//! integration tests use; docs/ARCHITECTURE.md shows how the modules fit.

mod addresses;
mod admission;
mod alert;
mod api;
mod app;
mod auth;
mod backend;
mod bucket;
mod channel;
pub mod cli;
mod clock;
mod config;
mod control;
mod device;
mod drain;
mod edge;
mod event;
mod fanout;
mod gate;
mod handoff;
mod heap;
mod hook;
mod hub;
mod ingest;
mod lifecycle;
mod metrics;
mod outbound;
mod plugin;
mod protocol;
mod push;
mod quota;
mod refresh;
mod remote;
mod revocation;
mod segment;
mod server;
mod session;
mod sse;
mod stream;
mod takeover;
mod tenant;
mod tls;
mod trim;
mod webhook;
mod ws;

#[cfg(any(test, fuzzing))]
pub mod fuzz;

pub use backend::BrokerError;
pub use config::{Config, ConfigError};
pub use plugin::PluginError;
pub use server::{Server, ShutdownHandle, StartError};
