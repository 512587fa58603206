//! notify host: a multi-tenant real-time notification server.
//!
//! Publishers send events by HTTP or through Redis; the hub fans them out over WebSocket
//! connections, encoding each event once. The library exports what the binary and the
//! integration tests use; docs/ARCHITECTURE.md shows how the modules fit.

mod admission;
mod api;
mod app;
mod auth;
mod broker;
mod channel;
pub mod cli;
mod config;
mod drain;
mod event;
mod fanout;
mod gate;
mod history;
mod hub;
mod ingest;
mod metrics;
mod plugin;
mod presence;
mod segment;
mod server;
mod tenant;
mod ws;

pub use config::{Config, ConfigError};
pub use server::{Server, ShutdownHandle, StartError};
