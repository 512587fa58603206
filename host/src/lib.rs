//! notify host: a multi-tenant real-time notification server.
//!
//! Publishers send events by HTTP; the [`hub`] fans them out over WebSocket connections,
//! encoding each event once. See docs/ARCHITECTURE.md for how the modules fit.

pub mod admin;
pub mod app;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod cli;
pub mod config;
pub mod event;
pub mod fanout;
pub mod gate;
pub mod history;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod plugin;
pub mod presence;
pub mod segment;
pub mod server;
pub mod tenant;
pub mod ws;

pub use config::Config;
pub use server::{Server, ShutdownHandle};
