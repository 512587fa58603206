//! The broker carries accepted events from ingest to every hub with interested connections.
//! `memory` (default) serves one process; `redis` connects many nodes through Redis pub/sub.

pub(crate) mod envelope;
mod interest;
mod link;
mod memory;
pub(crate) mod pubsub;
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub(crate) use self::redis::RedisBroker;
pub(crate) use interest::{Interest, Ticket};
pub(crate) use link::Link;
pub(crate) use memory::MemoryBroker;

use crate::event::{Event, Target};
use crate::tenant::Tenant;

/// A boxed future, so brokers can be used as trait objects.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a broker could not take events.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Carries events to hubs.
///
/// Contract:
/// - `publish` resolves `Ok` only once every event has been handed on (queued on local
///   connections, or accepted by the shared transport); on `Err` nothing may be assumed
///   delivered and the caller must report failure to its publisher.
/// - Order: events of one `publish` call, and of successive calls by one caller, reach each
///   target stream on each node in that order. No order holds between different publishers.
/// - Interest: a node receives the events of a stream (a user, a channel, a tenant's
///   broadcast) only while it has announced interest in it through `interest`. Once the
///   future from `synced` resolves, events published afterwards reach this node (while the
///   broker is healthy).
/// - Delivery is at most once per connection; recovery of missed events is history's job.
pub(crate) trait Broker: Send + Sync + 'static {
    fn publish<'a>(&'a self, tenant: &'a Arc<Tenant>, events: &'a [Event]) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Local interest in `streams` rose (`delta > 0`) or fell by one connection. Returns a
    /// ticket for `synced` when the broker must subscribe to carry them here.
    fn interest(&self, tenant: &Tenant, streams: &[Target<'_>], delta: i32) -> Option<Ticket> {
        let _ = (tenant, streams, delta);
        None
    }

    /// Resolves once the interest change behind `ticket` is in effect (or the broker is down,
    /// in which case it takes effect on reconnect).
    fn synced(&self, ticket: Ticket) -> BoxFuture<'_, ()> {
        let _ = ticket;
        Box::pin(async {})
    }

    /// Whether the broker can currently carry events (reported by `/readyz`).
    fn healthy(&self) -> bool;
}

/// The pub/sub channel of one stream: `notify:{tenant}:u:{user}`, `notify:{tenant}:c:{channel}`
/// or `notify:{tenant}:b`. Tenant ids never contain `:`, so the name parses back.
pub(crate) fn stream_channel(tenant: &str, target: Target<'_>) -> String {
    match target {
        Target::User(u) => format!("notify:{tenant}:u:{u}"),
        Target::Channel(c) => format!("notify:{tenant}:c:{c}"),
        Target::Broadcast => format!("notify:{tenant}:b"),
    }
}

/// The tenant and stream a pub/sub channel name stands for.
pub(crate) fn parse_stream_channel(name: &str) -> Option<(&str, Target<'_>)> {
    let rest = name.strip_prefix("notify:")?;
    let (tenant, rest) = rest.split_once(':')?;
    let target = match rest.split_once(':') {
        Some(("u", user)) => Target::User(user),
        Some(("c", channel)) => Target::Channel(channel),
        None if rest == "b" => Target::Broadcast,
        _ => return None,
    };
    Some((tenant, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        for target in [Target::User("a:b"), Target::Channel("news.eu"), Target::Broadcast] {
            let name = stream_channel("t-1", target);
            let (tenant, back) = parse_stream_channel(&name).unwrap();
            assert_eq!(tenant, "t-1");
            assert_eq!(format!("{back:?}"), format!("{target:?}"));
        }
        assert!(parse_stream_channel("notify:t:x:y").is_none());
        assert!(parse_stream_channel("other:t:b").is_none());
    }
}
