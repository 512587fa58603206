//! Every integration test of the host in one test binary, one module per subject: the host
//! library is linked once for all of them instead of once per file, which is most of what
//! building the tests costs. (`plugin_languages` is a binary of its own: see tests/Cargo.toml.)

mod acks;
mod address_limits;
mod auth;
mod channel_presence;
mod cli;
mod cluster;
mod compression;
mod delivery;
mod delta;
mod demo;
mod deploy;
mod disconnect;
mod handoff;
mod idempotency;
mod layout;
mod lifecycle;
mod openapi;
mod plugin_admin;
mod plugins;
mod plugins_cluster;
mod presence;
mod publish;
mod pusher;
mod quotas;
mod redis_cluster;
mod resume;
mod resume_redis;
mod rolling_restart;
mod secrets;
mod sse;
mod streams;
mod subscriptions;
mod tenants;
mod tenants_cluster;
mod tls;
mod webhooks;
mod webhooks_admin;
mod webhooks_cluster;
