//! Limits per client address, so that one address cannot take a node's sockets or its
//! handshake work: concurrent connections (`addresses.max_connections`), a connect rate
//! (a token bucket of `connect_rate` per second up to `connect_burst`), and a refusal of
//! every connect for `failure_refusal` after `max_failures` failed ones within
//! `failure_window`. Plus the node's bound on handshakes in progress
//! (`server.max_handshakes`): accepted sockets that have not had their first answer.
//!
//! The client address is the TCP peer's, or, when the peer is one of
//! `addresses.trusted_proxies`, the one the proxy names in `Forwarded` or
//! `X-Forwarded-For` (`client_addr`). IPv6 addresses count per `ipv6_prefix` network,
//! since one client commonly holds a whole /64. A direct peer's connections are counted
//! as the socket is accepted (every route: an idle keep-alive socket holds a file too); a
//! proxied client's as its connect request arrives, since the proxy's own sockets carry
//! many clients.
//!
//! One table keyed by address holds all three limits, so that a connect takes one short
//! lock; an entry goes as soon as it holds nothing a fresh address would not.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::{FORWARDED, HeaderName};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bucket::Bucket;
use crate::config::AddressLimits;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// How often idle entries (no connection, a full bucket, no failures) are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The node's per-address limits and its handshakes in progress.
pub(crate) struct Addresses {
    table: Arc<Table>,
    /// Permits for accepted sockets awaiting their first answer; `None` when unlimited.
    handshakes: Option<Arc<Semaphore>>,
    max_handshakes: usize,
}

struct Table {
    limits: AddressLimits,
    /// Locked for a few arithmetic steps at a time, never across an await.
    entries: Mutex<Entries>,
}

struct Entries {
    by_address: HashMap<IpAddr, Entry>,
    swept: Instant,
}

/// What one address has used.
struct Entry {
    connections: u32,
    /// Connect tokens, `connect_rate` a second up to `connect_burst`.
    bucket: Bucket,
    /// Failed connects since `failures_since`.
    failures: u32,
    failures_since: Instant,
    refused_until: Option<Instant>,
}

/// Why a connection or connect request was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Refused {
    /// The address is at `max_connections`.
    Connections(u32),
    /// The address spent its `connect_burst`; a token comes back after the duration.
    Rate(Duration),
    /// The address failed `max_failures` connects; it is refused for the duration.
    Failures(Duration),
}

/// One connection's place in its address's count; the count drops with it, whatever ended
/// the connection.
pub(crate) struct Hold {
    counts: Counts,
    /// `None` once a holder that releases the place itself took the key (`into_key`).
    key: Option<IpAddr>,
}

/// The per-address counts, for a holder that keeps only the counted key (a session's
/// `Admitted`, where every byte is paid once per connection).
#[derive(Clone)]
pub(crate) struct Counts(Arc<Table>);

/// A socket accepted under the limits, shared by its requests through a request
/// extension. A direct peer's place in its address's count stays with the socket, or moves
/// into the session of the WebSocket it upgrades to. The mutex is taken for one field's
/// `take` or look at a time, never across an await.
#[derive(Clone)]
pub(crate) struct Socket(Arc<Mutex<Accepted>>);

/// A socket accepted under the limits.
pub(crate) struct Accepted {
    /// `None` for a trusted proxy, whose clients are counted per connect request.
    pub(crate) hold: Option<Hold>,
    /// Its handshake slot, freed with its first answer.
    pub(crate) handshake: Option<OwnedSemaphorePermit>,
}

/// Why a socket was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AcceptRefused {
    Address(Refused),
    /// `server.max_handshakes` sockets are awaiting their first answer.
    Handshakes,
}

impl Addresses {
    pub(crate) fn new(limits: AddressLimits, max_handshakes: usize) -> Self {
        let entries = Mutex::new(Entries { by_address: HashMap::new(), swept: Instant::now() });
        Self {
            table: Arc::new(Table { limits, entries }),
            handshakes: (max_handshakes > 0).then(|| Arc::new(Semaphore::new(max_handshakes))),
            max_handshakes,
        }
    }

    /// Admits a socket from `peer`: a handshake slot, and its place in the address's count
    /// unless the peer is a trusted proxy.
    pub(crate) fn accept(&self, peer: IpAddr) -> Result<Accepted, AcceptRefused> {
        let handshake = match &self.handshakes {
            None => None,
            Some(slots) => Some(slots.clone().try_acquire_owned().map_err(|_| AcceptRefused::Handshakes)?),
        };
        let hold = if self.trusted(peer) {
            None
        } else {
            Some(self.hold(self.table.key(peer)).map_err(AcceptRefused::Address)?)
        };
        Ok(Accepted { hold, handshake })
    }

    /// Admits a connect request from `client`: refused while the address is refused for
    /// failures or out of tokens. A client whose socket is not counted (a proxied one) takes
    /// its own place in the count.
    pub(crate) fn connect(&self, client: IpAddr, socket_counted: bool) -> Result<Option<Hold>, Refused> {
        let key = self.table.key(client);
        self.table.update(key, |entry, limits, now| entry.admits(limits, now, true))?;
        if socket_counted { Ok(None) } else { self.hold(key).map(Some) }
    }

    /// Whether a connect from `client` would be admitted now, without taking a token: for
    /// requests that only ask why a connect failed.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), Refused> {
        let key = self.table.key(client);
        self.table.update(key, |entry, limits, now| entry.admits(limits, now, false))
    }

    /// The counts a session's `Admitted` releases its key to.
    pub(crate) fn counts(&self) -> Counts {
        Counts(self.table.clone())
    }

    /// Counts a connect from `client` refused for the client's own fault (bad credentials,
    /// an unknown tenant, a malformed request).
    pub(crate) fn failed(&self, client: IpAddr) {
        let key = self.table.key(client);
        let _ = self.table.update(key, |entry, limits, now| {
            entry.fail(limits, now);
            Ok(())
        });
    }

    /// The client behind `peer`: the peer itself, or the nearest address a trusted proxy
    /// chain names that is not itself a trusted proxy.
    pub(crate) fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusted(peer.ip()) {
            return peer;
        }
        let hops = forwarded_for(headers);
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(hop) = hop else { break };
            client = *hop;
            if !self.trusted(hop.ip()) {
                break;
            }
        }
        client
    }

    /// Addresses currently tracked, and sockets awaiting their first answer.
    pub(crate) fn gauges(&self) -> (usize, usize) {
        let tracked = self.table.entries.lock().unwrap().by_address.len();
        let in_progress = self.handshakes.as_ref().map_or(0, |s| self.max_handshakes - s.available_permits());
        (tracked, in_progress)
    }

    fn hold(&self, key: IpAddr) -> Result<Hold, Refused> {
        self.table.update(key, |entry, limits, _| {
            if limits.max_connections > 0 && entry.connections >= limits.max_connections {
                return Err(Refused::Connections(limits.max_connections));
            }
            entry.connections += 1;
            Ok(())
        })?;
        Ok(Hold { counts: self.counts(), key: Some(key) })
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.table.limits.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

impl Table {
    /// The counted address: IPv4 as is (also when mapped into IPv6), IPv6 by its prefix.
    fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u32::from(self.limits.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
            v4 => v4,
        }
    }

    /// Runs `f` on `key`'s entry (a fresh one if there is none), then drops the entry if
    /// it is idle again; sweeps the table now and then.
    fn update<T>(
        &self,
        key: IpAddr,
        f: impl FnOnce(&mut Entry, &AddressLimits, Instant) -> Result<T, Refused>,
    ) -> Result<T, Refused> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if now.duration_since(entries.swept) >= SWEEP_EVERY {
            entries.swept = now;
            entries.by_address.retain(|_, e| !e.idle(&self.limits, now));
        }
        let entry = entries.by_address.entry(key).or_insert_with(|| Entry::fresh(&self.limits, now));
        let result = f(entry, &self.limits, now);
        if entry.idle(&self.limits, now) {
            entries.by_address.remove(&key);
        }
        result
    }

    fn release(&self, key: IpAddr) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if let Some(entry) = entries.by_address.get_mut(&key) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.idle(&self.limits, now) {
                entries.by_address.remove(&key);
            }
        }
    }
}

impl Entry {
    fn fresh(limits: &AddressLimits, now: Instant) -> Self {
        Self {
            connections: 0,
            bucket: Bucket::full(f64::from(limits.connect_burst), now),
            failures: 0,
            failures_since: now,
            refused_until: None,
        }
    }

    /// Admits a connect (taking a token if `spend`), unless the address is refused for its
    /// failures or out of tokens.
    fn admits(&mut self, limits: &AddressLimits, now: Instant, spend: bool) -> Result<(), Refused> {
        if let Some(until) = self.refused_until.filter(|until| *until > now) {
            return Err(Refused::Failures(until - now));
        }
        if limits.connect_rate <= 0.0 {
            return Ok(());
        }
        self.bucket.refill(limits.connect_rate, f64::from(limits.connect_burst), now);
        let admitted = if spend {
            self.bucket.take(1.0, limits.connect_rate)
        } else {
            self.bucket.holds(1.0, limits.connect_rate)
        };
        admitted.map_err(Refused::Rate)
    }

    fn fail(&mut self, limits: &AddressLimits, now: Instant) {
        if limits.max_failures == 0 {
            return;
        }
        if now.duration_since(self.failures_since) >= limits.failure_window {
            self.failures = 0;
            self.failures_since = now;
        }
        self.failures += 1;
        if self.failures >= limits.max_failures {
            self.refused_until = Some(now + limits.failure_refusal);
            self.failures = 0;
        }
    }

    /// Holds nothing a fresh entry would not.
    fn idle(&mut self, limits: &AddressLimits, now: Instant) -> bool {
        if self.connections > 0 || self.refused_until.is_some_and(|until| until > now) {
            return false;
        }
        if self.failures > 0 && now.duration_since(self.failures_since) < limits.failure_window {
            return false;
        }
        if limits.connect_rate > 0.0 {
            let burst = f64::from(limits.connect_burst);
            self.bucket.refill(limits.connect_rate, burst, now);
            return self.bucket.is_full(burst);
        }
        true
    }
}

impl Hold {
    /// The counted key, leaving its release to the caller (`Counts::release`).
    pub(crate) fn into_key(mut self) -> IpAddr {
        self.key.take().expect("a hold keeps its key until it is taken")
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.counts.release(key);
        }
    }
}

impl Counts {
    /// Gives back one connection's place in `key`'s count.
    pub(crate) fn release(&self, key: IpAddr) {
        self.0.release(key);
    }
}

impl Socket {
    pub(crate) fn new(accepted: Accepted) -> Self {
        Self(Arc::new(Mutex::new(accepted)))
    }

    /// Frees the handshake slot: the socket had its first answer.
    pub(crate) fn answered(&self) {
        self.0.lock().unwrap().handshake.take();
    }

    /// Whether the socket holds a place in its address's count.
    pub(crate) fn counted(&self) -> bool {
        self.0.lock().unwrap().hold.is_some()
    }

    /// The socket's place, for the session its upgrade carries it into.
    pub(crate) fn take_hold(&self) -> Option<Hold> {
        self.0.lock().unwrap().hold.take()
    }
}

/// The addresses a request's `Forwarded` (or else `X-Forwarded-For`) headers name, client
/// first; `None` for a hop that is hidden or unreadable.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<SocketAddr>> {
    let values = |name| headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let forwarded: Vec<Option<SocketAddr>> = values(FORWARDED)
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            let pair = element.split(';').map(str::trim).find(|p| p.len() > 4 && p[..4].eq_ignore_ascii_case("for="));
            pair.map(|p| parse_node(&p[4..]))
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    values(X_FORWARDED_FOR).flat_map(|v| v.split(',')).map(|hop| parse_node(hop.trim())).collect()
}

/// A node of `Forwarded: for=` (RFC 7239: `192.0.2.1`, `"192.0.2.1:4711"`,
/// `"[2001:db8::1]:4711"`, `unknown`, `_hidden`) or of `X-Forwarded-For`.
fn parse_node(node: &str) -> Option<SocketAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = node.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(node);
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(f: impl FnOnce(&mut AddressLimits)) -> Addresses {
        let mut limits = AddressLimits::default();
        f(&mut limits);
        Addresses::new(limits, 0)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_counted_per_address_and_come_back() {
        let a = limits(|l| l.max_connections = 2);
        let first = a.accept(ip("10.0.0.1")).unwrap();
        let _second = a.accept(ip("10.0.0.1")).unwrap();
        assert_eq!(a.accept(ip("10.0.0.1")).err(), Some(AcceptRefused::Address(Refused::Connections(2))));
        assert!(a.accept(ip("10.0.0.2")).is_ok());
        let socket = Socket::new(first);
        let key = socket.take_hold().unwrap().into_key();
        drop(socket);
        assert!(a.accept(ip("10.0.0.1")).is_err(), "the taken key still holds the place");
        a.counts().release(key);
        assert!(a.accept(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn ipv6_counts_per_prefix_and_mapped_ipv4_as_ipv4() {
        let a = limits(|l| l.max_connections = 1);
        let _held = a.accept(ip("2001:db8:1:2::1")).unwrap();
        assert!(a.accept(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(a.accept(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = a.accept(ip("192.0.2.7")).unwrap();
        assert!(a.accept(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn the_bucket_refuses_beyond_its_burst_and_names_the_wait() {
        let a = limits(|l| {
            l.connect_rate = 0.5;
            l.connect_burst = 3;
        });
        for _ in 0..3 {
            a.connect(ip("10.0.0.1"), false).unwrap();
        }
        match a.connect(ip("10.0.0.1"), false) {
            Err(Refused::Rate(wait)) => assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(2)),
            other => panic!("expected a rate refusal, got {:?}", other.map(|_| ())),
        }
        assert!(a.connect(ip("10.0.0.2"), false).is_ok());
    }

    #[test]
    fn repeated_failures_refuse_the_address_for_a_while() {
        let a = limits(|l| {
            l.max_failures = 3;
            l.failure_refusal = Duration::from_secs(60);
        });
        for _ in 0..2 {
            a.failed(ip("10.0.0.1"));
        }
        assert!(a.connect(ip("10.0.0.1"), false).is_ok());
        a.failed(ip("10.0.0.1"));
        assert!(matches!(a.connect(ip("10.0.0.1"), false), Err(Refused::Failures(d)) if d > Duration::from_secs(59)));
        assert!(a.connect(ip("10.0.0.2"), false).is_ok());
    }

    #[test]
    fn idle_addresses_leave_the_table() {
        let a = limits(|l| l.connect_rate = 0.0);
        let socket = a.accept(ip("10.0.0.1")).unwrap();
        assert!(a.connect(ip("10.0.0.1"), true).unwrap().is_none(), "the socket is counted already");
        assert_eq!(a.gauges().0, 1);
        drop(socket);
        assert_eq!(a.gauges().0, 0);
        let a = limits(|_| {});
        drop(a.connect(ip("10.0.0.1"), false).unwrap());
        assert_eq!(a.gauges().0, 1, "the spent token is remembered until it is back");
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let a = limits(|l| l.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()]);
        let proxy: SocketAddr = "10.1.1.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "198.51.100.9, 203.0.113.5, 10.2.2.2".parse().unwrap());
        assert_eq!(a.client_addr(proxy, &h).ip(), ip("203.0.113.5"), "the nearest untrusted hop");
        let stranger: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(a.client_addr(stranger, &h), stranger, "headers from an untrusted peer are ignored");
        let mut h = HeaderMap::new();
        h.insert(FORWARDED, r#"for="[2001:db8::7]:4711";proto=https, for=10.3.3.3"#.parse().unwrap());
        h.insert(X_FORWARDED_FOR, "192.0.2.99".parse().unwrap());
        assert_eq!(a.client_addr(proxy, &h).ip(), ip("2001:db8::7"), "Forwarded wins over X-Forwarded-For");
        let mut h = HeaderMap::new();
        h.insert(FORWARDED, "for=unknown, for=10.3.3.3".parse().unwrap());
        assert_eq!(a.client_addr(proxy, &h).ip(), ip("10.3.3.3"), "a hidden hop stops the walk");
        assert!(a.accept(proxy.ip()).unwrap().hold.is_none(), "a proxy's sockets are not counted");
    }

    #[test]
    fn handshakes_in_progress_are_bounded() {
        let a = Addresses::new(AddressLimits::default(), 2);
        let first = a.accept(ip("10.0.0.1")).unwrap();
        let _second = a.accept(ip("10.0.0.2")).unwrap();
        assert_eq!(a.accept(ip("10.0.0.3")).err(), Some(AcceptRefused::Handshakes));
        assert_eq!(a.gauges().1, 2);
        drop(first.handshake);
        assert!(a.accept(ip("10.0.0.3")).is_ok());
    }
}
