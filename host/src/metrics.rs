//! Prometheus metrics: lock-free counters per tenant and for the process, rendered in the text
//! exposition format by `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why a WebSocket handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    BadRequest,
    UnknownTenant,
    Unauthorized,
    ForbiddenOrigin,
    OverCapacity,
    Draining,
    Timeout,
}

impl HandshakeFailure {
    const ALL: [Self; 7] = [
        Self::BadRequest,
        Self::UnknownTenant,
        Self::Unauthorized,
        Self::ForbiddenOrigin,
        Self::OverCapacity,
        Self::Draining,
        Self::Timeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownTenant => "unknown_tenant",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::OverCapacity => "over_capacity",
            Self::Draining => "draining",
            Self::Timeout => "timeout",
        }
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A fixed-bucket latency histogram.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Counters of one tenant; each tenant owns one, so the hot path never looks labels up.
#[derive(Default)]
pub struct TenantMetrics {
    pub connections: AtomicI64,
    pub handshakes: AtomicU64,
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    pub events_published: AtomicU64,
    pub frames_enqueued: AtomicU64,
    pub frames_delivered: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub slow_client_disconnects: AtomicU64,
    pub publish_to_enqueue: Histogram,
}

impl TenantMetrics {
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        self.handshake_failures[why as usize].fetch_add(1, Relaxed);
    }
}

/// Counters that belong to no tenant.
#[derive(Default)]
pub struct GlobalMetrics {
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    pub publish_rejected: AtomicU64,
}

impl GlobalMetrics {
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        self.handshake_failures[why as usize].fetch_add(1, Relaxed);
    }
}

/// Renders every metric in Prometheus text format.
pub fn render<'a>(
    global: &GlobalMetrics,
    tenants: impl Iterator<Item = (&'a str, &'a TenantMetrics)> + Clone,
) -> String {
    let mut out = String::with_capacity(4096);
    type Get = fn(&TenantMetrics) -> u64;
    let counters: [(&str, &str, &str, Get); 6] = [
        ("notify_handshakes_total", "counter", "Successful WebSocket handshakes.", |m| m.handshakes.load(Relaxed)),
        ("notify_events_published_total", "counter", "Events accepted for delivery.", |m| {
            m.events_published.load(Relaxed)
        }),
        ("notify_frames_enqueued_total", "counter", "Event frames put in connection queues.", |m| {
            m.frames_enqueued.load(Relaxed)
        }),
        ("notify_frames_delivered_total", "counter", "Frames written to client sockets.", |m| {
            m.frames_delivered.load(Relaxed)
        }),
        ("notify_frames_dropped_total", "counter", "Frames discarded by the slow-client policy.", |m| {
            m.frames_dropped.load(Relaxed)
        }),
        (
            "notify_slow_client_disconnects_total",
            "counter",
            "Connections closed because their send queue overflowed.",
            |m| m.slow_client_disconnects.load(Relaxed),
        ),
    ];
    let _ = writeln!(out, "# HELP notify_connections Open WebSocket connections.");
    let _ = writeln!(out, "# TYPE notify_connections gauge");
    for (id, m) in tenants.clone() {
        let _ = writeln!(out, "notify_connections{{tenant=\"{id}\"}} {}", m.connections.load(Relaxed));
    }
    for (name, kind, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (id, m) in tenants.clone() {
            let _ = writeln!(out, "{name}{{tenant=\"{id}\"}} {}", get(m));
        }
    }
    let name = "notify_handshake_failures_total";
    let _ = writeln!(out, "# HELP {name} Refused WebSocket handshakes by reason.\n# TYPE {name} counter");
    for why in HandshakeFailure::ALL {
        let n = global.handshake_failures[why as usize].load(Relaxed);
        let _ = writeln!(out, "{name}{{tenant=\"\",reason=\"{}\"}} {n}", why.as_str());
        for (id, m) in tenants.clone() {
            let n = m.handshake_failures[why as usize].load(Relaxed);
            let _ = writeln!(out, "{name}{{tenant=\"{id}\",reason=\"{}\"}} {n}", why.as_str());
        }
    }
    let name = "notify_publish_rejected_total";
    let _ =
        writeln!(out, "# HELP {name} Publish requests refused (bad key, bad body, too large).\n# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", global.publish_rejected.load(Relaxed));
    let name = "notify_publish_to_enqueue_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a publish request's arrival to its frames being queued on every local connection.\n# TYPE {name} histogram"
    );
    for (id, m) in tenants {
        m.publish_to_enqueue.render(&mut out, name, &format!("tenant=\"{id}\""));
    }
    out
}

/// Appends per-tenant, per-hook plugin metrics.
pub fn render_plugins(
    out: &mut String,
    hooks: &[(std::sync::Arc<str>, crate::plugin::Hook, std::sync::Arc<crate::plugin::HookMetrics>)],
) {
    type Get = fn(&crate::plugin::HookMetrics) -> u64;
    let series: [(&str, &str, &str, Get); 3] = [
        ("notify_plugin_calls_total", "counter", "Plugin hook calls.", |m| m.calls.load(Relaxed)),
        ("notify_plugin_failures_total", "counter", "Plugin calls that trapped, timed out or were refused.", |m| {
            m.failures.load(Relaxed)
        }),
        (
            "notify_plugin_disabled",
            "gauge",
            "1 while the active plugin version is disabled by its circuit breaker.",
            |m| m.disabled.load(Relaxed),
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (tenant, hook, m) in hooks {
            let _ = writeln!(out, "{name}{{tenant=\"{tenant}\",hook=\"{}\"}} {}", hook.as_str(), get(m));
        }
    }
    let name = "notify_plugin_call_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Plugin call duration, including instantiation when no warm instance was free.\n# TYPE {name} histogram"
    );
    for (tenant, hook, m) in hooks {
        m.duration.render(out, name, &format!("tenant=\"{tenant}\",hook=\"{}\"", hook.as_str()));
    }
}
