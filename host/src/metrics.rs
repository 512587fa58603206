//! Prometheus metrics: lock-free counters per tenant and for the process, rendered in the text
//! exposition format by `GET /metrics`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why a WebSocket handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    BadRequest,
    UnknownTenant,
    Unauthorized,
    ForbiddenOrigin,
    OverCapacity,
    Draining,
    Timeout,
    TenantConnections,
    UserConnections,
    /// The client address is at `addresses.max_connections`.
    AddressConnections,
    /// The client address spent its `addresses.connect_burst`.
    AddressRate,
    /// The client address is refused after repeated failed connects.
    AddressFailures,
    /// `server.max_handshakes` sockets were awaiting their first answer.
    Handshakes,
    /// The TLS handshake failed (not TLS, no common parameters, a client that gave up).
    Tls,
}

impl HandshakeFailure {
    pub(crate) const ALL: [Self; 14] = [
        Self::BadRequest,
        Self::UnknownTenant,
        Self::Unauthorized,
        Self::ForbiddenOrigin,
        Self::OverCapacity,
        Self::Draining,
        Self::Timeout,
        Self::TenantConnections,
        Self::UserConnections,
        Self::AddressConnections,
        Self::AddressRate,
        Self::AddressFailures,
        Self::Handshakes,
        Self::Tls,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownTenant => "unknown_tenant",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::OverCapacity => "over_capacity",
            Self::Draining => "draining",
            Self::Timeout => "timeout",
            Self::TenantConnections => "tenant_connections",
            Self::UserConnections => "user_connections",
            Self::AddressConnections => "address_connections",
            Self::AddressRate => "address_rate",
            Self::AddressFailures => "address_failures",
            Self::Handshakes => "handshakes",
            Self::Tls => "tls",
        }
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// A fixed-bucket latency histogram.
#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
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
pub(crate) struct TenantMetrics {
    pub connections: AtomicI64,
    pub handshakes: AtomicU64,
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    pub events_published: AtomicU64,
    pub frames_enqueued: AtomicU64,
    pub frames_delivered: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub slow_client_disconnects: AtomicU64,
    pub history_reads: AtomicU64,
    pub history_unrecovered: AtomicU64,
    pub history_replayed: AtomicU64,
    pub history_errors: AtomicU64,
    pub acks: AtomicU64,
    /// Events refused by the tenant's publish rate.
    pub rate_limited: AtomicU64,
    /// Events refused because their data was over the tenant's `max_event_bytes`.
    pub too_large: AtomicU64,
    /// Events not delivered because an earlier one had their idempotency key.
    pub deduplicated: AtomicU64,
    pub publish_to_enqueue: Histogram,
    pub push: PushMetrics,
}

/// Why a push did not reach a device (or was not tried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushFailure {
    /// The provider refused it (4xx other than gone).
    Rejected,
    /// The provider failed or asked to slow down (5xx, 429).
    Unavailable,
    Timeout,
    /// No connection to the provider, or the address is not allowed.
    Network,
    /// The device's keys or the payload could not be used.
    Invalid,
    /// The tenant has no credentials for the device's platform.
    NoCredentials,
    /// `unread_after` on a tenant without read cursors.
    NoReadCursors,
    /// `push.max_pending` escalations were already waiting.
    Full,
    /// The user had their hourly cap of pushes.
    Capped,
    /// The device or escalation store could not be reached.
    Store,
}

impl PushFailure {
    pub(crate) const ALL: [Self; 10] = [
        Self::Rejected,
        Self::Unavailable,
        Self::Timeout,
        Self::Network,
        Self::Invalid,
        Self::NoCredentials,
        Self::NoReadCursors,
        Self::Full,
        Self::Capped,
        Self::Store,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Network => "network",
            Self::Invalid => "invalid",
            Self::NoCredentials => "no_credentials",
            Self::NoReadCursors => "no_read_cursors",
            Self::Full => "full",
            Self::Capped => "capped",
            Self::Store => "store",
        }
    }
}

/// A tenant's pushes on this node.
#[derive(Default)]
pub(crate) struct PushMetrics {
    /// Escalations stored, one per event and user.
    pub scheduled: AtomicU64,
    /// Messages a provider accepted, by platform (web, fcm, apns).
    sent: [AtomicU64; 3],
    failed: [AtomicU64; PushFailure::ALL.len()],
    /// Devices removed because their provider said they are gone.
    pub devices_removed: AtomicU64,
    /// Escalations not pushed because the user read the event in time.
    pub cancelled: AtomicU64,
    /// Pushes due in the user's quiet hours, put off to their end.
    pub deferred: AtomicU64,
    /// Withdrawals sent for pushes the user read after they went.
    pub withdrawn: AtomicU64,
}

impl PushMetrics {
    pub(crate) fn sent(&self, platform: usize) {
        self.sent[platform].fetch_add(1, Relaxed);
    }

    pub(crate) fn failed(&self, why: PushFailure, n: u64) {
        self.failed[why as usize].fetch_add(n, Relaxed);
    }
}

/// Appends the tenants' push counters.
fn render_push<'a>(out: &mut String, tenants: impl Iterator<Item = (&'a str, &'a TenantMetrics)> + Clone) {
    let name = "notify_push_sent_total";
    header(out, name, "counter", "Push messages a provider accepted, by platform.");
    for (id, m) in tenants.clone() {
        for (i, platform) in ["web", "fcm", "apns"].iter().enumerate() {
            let _ = writeln!(out, "{name}{{tenant=\"{id}\",platform=\"{platform}\"}} {}", m.push.sent[i].load(Relaxed));
        }
    }
    let name = "notify_push_failed_total";
    header(out, name, "counter", "Pushes that reached no device, by reason.");
    for (id, m) in tenants.clone() {
        for why in PushFailure::ALL {
            let n = m.push.failed[why as usize].load(Relaxed);
            let _ = writeln!(out, "{name}{{tenant=\"{id}\",reason=\"{}\"}} {n}", why.as_str());
        }
    }
}

impl TenantMetrics {
    pub(crate) fn handshake_failed(&self, why: HandshakeFailure) {
        self.handshake_failures[why as usize].fetch_add(1, Relaxed);
    }

    /// Handshakes refused so far, by reason (in [`HandshakeFailure::ALL`]'s order).
    pub(crate) fn handshake_failures(&self) -> [u64; HandshakeFailure::ALL.len()] {
        std::array::from_fn(|i| self.handshake_failures[i].load(Relaxed))
    }
}

/// Counters that belong to no tenant.
#[derive(Default)]
pub(crate) struct GlobalMetrics {
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    pub publish_rejected: AtomicU64,
}

impl GlobalMetrics {
    pub(crate) fn handshake_failed(&self, why: HandshakeFailure) {
        self.handshake_failures[why as usize].fetch_add(1, Relaxed);
    }
}

/// Counters of the cluster broker and of ingestion through Redis (zero in memory mode).
#[derive(Default)]
pub(crate) struct BrokerMetrics {
    /// 1 while the pub/sub connection is up.
    pub up: AtomicI64,
    pub published: AtomicU64,
    pub publish_failures: AtomicU64,
    pub received: AtomicU64,
    pub undecodable: AtomicU64,
    pub subscriptions: AtomicI64,
    pub reconnects: AtomicU64,
    pub resyncs: AtomicU64,
    pub ingest_stream_entries: AtomicU64,
    pub ingest_pubsub_messages: AtomicU64,
    pub ingest_claimed: AtomicU64,
    pub dead_letters: AtomicU64,
}

const BROKER_FAMILIES: [Family<BrokerMetrics>; 12] = [
    Family {
        name: "notify_broker_up",
        kind: "gauge",
        help: "1 while the Redis pub/sub connection is up.",
        get: |m| u64::try_from(m.up.load(Relaxed)).unwrap_or(0),
    },
    Family {
        name: "notify_broker_published_total",
        kind: "counter",
        help: "Stream messages this node published to Redis (one per event per target stream).",
        get: |m| m.published.load(Relaxed),
    },
    Family {
        name: "notify_broker_publish_failures_total",
        kind: "counter",
        help: "Publishes to Redis that failed (the publisher got an error).",
        get: |m| m.publish_failures.load(Relaxed),
    },
    Family {
        name: "notify_broker_received_total",
        kind: "counter",
        help: "Stream messages this node received from Redis.",
        get: |m| m.received.load(Relaxed),
    },
    Family {
        name: "notify_broker_undecodable_total",
        kind: "counter",
        help: "Received messages that were not notify envelopes for a known tenant.",
        get: |m| m.undecodable.load(Relaxed),
    },
    Family {
        name: "notify_broker_subscriptions",
        kind: "gauge",
        help: "Stream channels this node is subscribed to.",
        get: |m| u64::try_from(m.subscriptions.load(Relaxed)).unwrap_or(0),
    },
    Family {
        name: "notify_broker_reconnects_total",
        kind: "counter",
        help: "Pub/sub reconnections after the connection to Redis was lost.",
        get: |m| m.reconnects.load(Relaxed),
    },
    Family {
        name: "notify_broker_resyncs_total",
        kind: "counter",
        help: "Times this node told its clients to resume after its pub/sub connection came back.",
        get: |m| m.resyncs.load(Relaxed),
    },
    Family {
        name: "notify_ingest_stream_entries_total",
        kind: "counter",
        help: "Entries of notify:{tenant}:ingest streams this node processed and acknowledged.",
        get: |m| m.ingest_stream_entries.load(Relaxed),
    },
    Family {
        name: "notify_ingest_pubsub_messages_total",
        kind: "counter",
        help: "Messages of notify:{tenant}:publish channels this node processed.",
        get: |m| m.ingest_pubsub_messages.load(Relaxed),
    },
    Family {
        name: "notify_ingest_claimed_total",
        kind: "counter",
        help: "Pending ingest entries this node claimed from other consumers.",
        get: |m| m.ingest_claimed.load(Relaxed),
    },
    Family {
        name: "notify_ingest_dead_letters_total",
        kind: "counter",
        help: "Invalid ingest entries written to notify:{tenant}:dead.",
        get: |m| m.dead_letters.load(Relaxed),
    },
];

/// Appends the broker and Redis ingestion metrics.
pub(crate) fn render_broker(out: &mut String, m: &BrokerMetrics) {
    for family in &BROKER_FAMILIES {
        header(out, family.name, family.kind, family.help);
        let _ = writeln!(out, "{} {}", family.name, (family.get)(m));
    }
}

/// Appends what the process is: its version, when it started and its resident memory (the
/// names Prometheus's own clients use for the last two).
pub(crate) fn render_process(out: &mut String, node: &str, started_at_ms: u64) {
    header(out, "notify_build_info", "gauge", "Always 1; the binary's version and the node's id are labels.");
    let _ = writeln!(out, "notify_build_info{{version=\"{}\",node=\"{node}\"}} 1", env!("CARGO_PKG_VERSION"));
    header(out, "process_start_time_seconds", "gauge", "When the process started, in Unix seconds.");
    let _ = writeln!(out, "process_start_time_seconds {}", started_at_ms as f64 / 1000.0);
    if let Some(bytes) = resident_bytes() {
        header(out, "process_resident_memory_bytes", "gauge", "Resident memory of the process (VmRSS).");
        let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
    }
}

/// The process's resident memory, from Linux's `/proc/self/status`.
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Appends the number of streams the in-memory history keeps.
pub(crate) fn render_history(out: &mut String, streams: usize) {
    let name = "notify_history_streams";
    header(out, name, "gauge", "Streams the in-memory history keeps (streams that held an event, until they expire).");
    let _ = writeln!(out, "{name} {streams}");
}

/// Appends how many pushes wait in this node's memory.
pub(crate) fn render_push_pending(out: &mut String, pending: usize) {
    let name = "notify_push_pending";
    header(out, name, "gauge", "Pushes waiting for their time in this node's memory (one per event and user).");
    let _ = writeln!(out, "{name} {pending}");
}

/// One metric family whose samples are read from a metrics struct `M`.
struct Family<M> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    get: fn(&M) -> u64,
}

pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes a family: its header and one sample per `(labels, metrics)` pair.
fn write_family<'m, M: 'm>(out: &mut String, f: &Family<M>, samples: impl Iterator<Item = (String, &'m M)>) {
    header(out, f.name, f.kind, f.help);
    for (labels, m) in samples {
        let _ = writeln!(out, "{}{{{labels}}} {}", f.name, (f.get)(m));
    }
}

const TENANT_FAMILIES: [Family<TenantMetrics>; 20] = [
    Family {
        name: "notify_connections",
        kind: "gauge",
        help: "Open WebSocket connections.",
        get: |m| u64::try_from(m.connections.load(Relaxed)).unwrap_or(0),
    },
    Family {
        name: "notify_handshakes_total",
        kind: "counter",
        help: "Successful WebSocket handshakes.",
        get: |m| m.handshakes.load(Relaxed),
    },
    Family {
        name: "notify_events_published_total",
        kind: "counter",
        help: "Events accepted for delivery.",
        get: |m| m.events_published.load(Relaxed),
    },
    Family {
        name: "notify_frames_enqueued_total",
        kind: "counter",
        help: "Event frames put in connection queues.",
        get: |m| m.frames_enqueued.load(Relaxed),
    },
    Family {
        name: "notify_frames_delivered_total",
        kind: "counter",
        help: "Frames written to client sockets.",
        get: |m| m.frames_delivered.load(Relaxed),
    },
    Family {
        name: "notify_frames_dropped_total",
        kind: "counter",
        help: "Frames discarded by the slow-client policy.",
        get: |m| m.frames_dropped.load(Relaxed),
    },
    Family {
        name: "notify_slow_client_disconnects_total",
        kind: "counter",
        help: "Connections closed because their send queue overflowed.",
        get: |m| m.slow_client_disconnects.load(Relaxed),
    },
    Family {
        name: "notify_history_reads_total",
        kind: "counter",
        help: "Stream history reads of joining or subscribing connections.",
        get: |m| m.history_reads.load(Relaxed),
    },
    Family {
        name: "notify_history_unrecovered_total",
        kind: "counter",
        help: "History reads answered recovered: false (trimmed, another epoch, or unreadable).",
        get: |m| m.history_unrecovered.load(Relaxed),
    },
    Family {
        name: "notify_history_replayed_total",
        kind: "counter",
        help: "Events read from history for resuming connections.",
        get: |m| m.history_replayed.load(Relaxed),
    },
    Family {
        name: "notify_history_errors_total",
        kind: "counter",
        help: "History reads and acks that failed because the store was unavailable.",
        get: |m| m.history_errors.load(Relaxed),
    },
    Family {
        name: "notify_acks_total",
        kind: "counter",
        help: "Acks that moved or confirmed a read cursor.",
        get: |m| m.acks.load(Relaxed),
    },
    Family {
        name: "notify_publish_rate_limited_total",
        kind: "counter",
        help: "Events refused because the tenant was over its publish_rate (HTTP 429, or dead-lettered on Redis ingest).",
        get: |m| m.rate_limited.load(Relaxed),
    },
    Family {
        name: "notify_events_too_large_total",
        kind: "counter",
        help: "Events refused because their data was over the tenant's max_event_bytes (HTTP 413, or dead-lettered on Redis ingest).",
        get: |m| m.too_large.load(Relaxed),
    },
    Family {
        name: "notify_events_deduplicated_total",
        kind: "counter",
        help: "Events not delivered because an earlier event had their idempotency_key within server.idempotency_window.",
        get: |m| m.deduplicated.load(Relaxed),
    },
    Family {
        name: "notify_push_scheduled_total",
        kind: "counter",
        help: "Pushes scheduled (one per event and user).",
        get: |m| m.push.scheduled.load(Relaxed),
    },
    Family {
        name: "notify_push_devices_removed_total",
        kind: "counter",
        help: "Devices removed because their provider said they are gone.",
        get: |m| m.push.devices_removed.load(Relaxed),
    },
    Family {
        name: "notify_push_cancelled_total",
        kind: "counter",
        help: "Escalations not pushed because the user read the event in time.",
        get: |m| m.push.cancelled.load(Relaxed),
    },
    Family {
        name: "notify_push_deferred_total",
        kind: "counter",
        help: "Pushes due in the user's quiet hours, put off to their end.",
        get: |m| m.push.deferred.load(Relaxed),
    },
    Family {
        name: "notify_push_withdrawn_total",
        kind: "counter",
        help: "Withdrawals sent for pushes the user read after they went.",
        get: |m| m.push.withdrawn.load(Relaxed),
    },
];

/// Metrics of one tenant's hook, across plugin versions.
#[derive(Default)]
pub(crate) struct HookMetrics {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    /// Failed calls made again (policy `retry`).
    pub retries: AtomicU64,
    /// Events a failed call left undelivered (policies `retry` and `drop`).
    pub dropped: AtomicU64,
    /// Events a failed call let through unprocessed (policy `skip`).
    pub unprocessed: AtomicU64,
    /// 1 while the active version is disabled by the breaker.
    pub disabled: AtomicU64,
    /// Calls not made: every one of the tenant's call slots stayed in use.
    pub busy: AtomicU64,
    pub duration: Histogram,
}

const PLUGIN_FAMILIES: [Family<HookMetrics>; 7] = [
    Family {
        name: "notify_plugin_calls_total",
        kind: "counter",
        help: "Plugin hook calls.",
        get: |m| m.calls.load(Relaxed),
    },
    Family {
        name: "notify_plugin_failures_total",
        kind: "counter",
        help: "Plugin calls that trapped, timed out or were refused.",
        get: |m| m.failures.load(Relaxed),
    },
    Family {
        name: "notify_plugin_busy_total",
        kind: "counter",
        help: "Plugin calls not made: every one of the tenant's call slots (limits.plugin_instances) stayed in use for the set-up allowance.",
        get: |m| m.busy.load(Relaxed),
    },
    Family {
        name: "notify_plugin_retries_total",
        kind: "counter",
        help: "Failed transform and route calls made once more (on_failure = retry).",
        get: |m| m.retries.load(Relaxed),
    },
    Family {
        name: "notify_plugin_dropped_total",
        kind: "counter",
        help: "Events not delivered because their transform or route call failed (retry, drop).",
        get: |m| m.dropped.load(Relaxed),
    },
    Family {
        name: "notify_plugin_unprocessed_total",
        kind: "counter",
        help: "Events delivered unprocessed because their transform or route call failed (skip).",
        get: |m| m.unprocessed.load(Relaxed),
    },
    Family {
        name: "notify_plugin_disabled",
        kind: "gauge",
        help: "1 while the active plugin version is disabled by its circuit breaker.",
        get: |m| m.disabled.load(Relaxed),
    },
];

/// Renders every host metric in Prometheus text format.
pub(crate) fn render<'a>(
    global: &GlobalMetrics,
    tenants: impl Iterator<Item = (&'a str, &'a TenantMetrics)> + Clone,
) -> String {
    let mut out = String::with_capacity(4096);
    for family in &TENANT_FAMILIES {
        write_family(&mut out, family, tenants.clone().map(|(id, m)| (format!("tenant=\"{id}\""), m)));
    }
    let name = "notify_handshake_failures_total";
    header(&mut out, name, "counter", "Refused connects (WebSocket, SSE, or sockets at accept) by reason.");
    for why in HandshakeFailure::ALL {
        let n = global.handshake_failures[why as usize].load(Relaxed);
        let _ = writeln!(out, "{name}{{tenant=\"\",reason=\"{}\"}} {n}", why.as_str());
        for (id, m) in tenants.clone() {
            let n = m.handshake_failures[why as usize].load(Relaxed);
            let _ = writeln!(out, "{name}{{tenant=\"{id}\",reason=\"{}\"}} {n}", why.as_str());
        }
    }
    let name = "notify_publish_rejected_total";
    header(&mut out, name, "counter", "Publish requests refused (bad key, bad body, too large).");
    let _ = writeln!(out, "{name} {}", global.publish_rejected.load(Relaxed));
    let name = "notify_publish_to_enqueue_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time from a publish request's arrival to its frames being queued on every local connection.",
    );
    for (id, m) in tenants.clone() {
        m.publish_to_enqueue.render(&mut out, name, &format!("tenant=\"{id}\""));
    }
    render_push(&mut out, tenants);
    out
}

/// Appends the runtime's live task count (connections, streams, background work).
pub(crate) fn render_tls(out: &mut String, reloads: u64, failures: u64) {
    let name = "notify_tls_reloads_total";
    header(out, name, "counter", "Changed certificate files: reloaded (ok) or kept the current certificate (error).");
    let _ = writeln!(out, "{name}{{result=\"ok\"}} {reloads}\n{name}{{result=\"error\"}} {failures}");
}

/// Frames made smaller once however many connections get them (compressed for
/// permessage-deflate, or made into delta frames): how many, their bytes before and after,
/// and the time it took.
#[derive(Default)]
pub(crate) struct ShrinkMetrics {
    pub frames: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub nanos: AtomicU64,
}

impl ShrinkMetrics {
    /// Counts a frame of `before` bytes made into `after` bytes in `took`.
    pub(crate) fn record(&self, before: usize, after: usize, took: std::time::Duration) {
        self.frames.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(before as u64, Relaxed);
        self.bytes_out.fetch_add(after as u64, Relaxed);
        self.nanos.fetch_add(took.as_nanos() as u64, Relaxed);
    }
}

/// The names and help texts of a [`ShrinkMetrics`]' three families.
pub(crate) struct ShrinkNames {
    pub frames: (&'static str, &'static str),
    pub bytes: (&'static str, &'static str),
    pub seconds: (&'static str, &'static str),
}

pub(crate) const COMPRESSION: ShrinkNames = ShrinkNames {
    frames: (
        "notify_frames_compressed_total",
        "Event frames compressed for permessage-deflate, once each however many connections got them.",
    ),
    bytes: ("notify_compression_bytes_total", "Payload bytes of the compressed frames, before (in) and after (out)."),
    seconds: ("notify_compression_seconds_total", "Time spent compressing those frames."),
};

pub(crate) const DELTAS: ShrinkNames = ShrinkNames {
    frames: ("notify_deltas_total", "Delta frames made, once each however many subscribers got them."),
    bytes: (
        "notify_delta_bytes_total",
        "Frame bytes of the events sent as deltas, whole (in) and as the delta frame (out).",
    ),
    seconds: ("notify_delta_seconds_total", "Time spent making those delta frames."),
};

pub(crate) fn render_shrink(out: &mut String, m: &ShrinkMetrics, names: &ShrinkNames) {
    let (name, help) = names.frames;
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", m.frames.load(Relaxed));
    let (name, help) = names.bytes;
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name}{{side=\"in\"}} {}", m.bytes_in.load(Relaxed));
    let _ = writeln!(out, "{name}{{side=\"out\"}} {}", m.bytes_out.load(Relaxed));
    let (name, help) = names.seconds;
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", m.nanos.load(Relaxed) as f64 / 1e9);
}

pub(crate) fn render_tasks(out: &mut String, tasks: usize) {
    let name = "notify_tasks";
    header(out, name, "gauge", "Tasks alive in the host's runtime: about one per connection, plus background work.");
    let _ = writeln!(out, "{name} {tasks}");
}

/// What the plugin runtime holds and how it loaded it.
pub(crate) struct PluginComponents {
    /// Compiled components in memory: those a running version uses.
    pub in_memory: usize,
    /// Compiled components kept on disk: every version a slot names.
    pub on_disk: usize,
    pub compiled: u64,
    pub restored: u64,
}

/// Appends the plugin runtime's gauges and counters.
pub(crate) fn render_plugin_components(out: &mut String, c: &PluginComponents) {
    let name = "notify_plugin_components";
    header(
        out,
        name,
        "gauge",
        "Compiled plugin components: in memory (running versions), on disk (every version a slot names).",
    );
    let _ = writeln!(out, "{name}{{where=\"memory\"}} {}\n{name}{{where=\"disk\"}} {}", c.in_memory, c.on_disk);
    let name = "notify_plugin_component_loads_total";
    header(out, name, "counter", "Plugin components made ready to run: compiled, or restored from disk.");
    let _ = writeln!(out, "{name}{{from=\"compile\"}} {}\n{name}{{from=\"disk\"}} {}", c.compiled, c.restored);
}

/// Appends the gauges of the limits per client address.
pub(crate) fn render_addresses(out: &mut String, (tracked, handshakes): (usize, usize)) {
    let name = "notify_client_addresses";
    header(out, name, "gauge", "Client addresses the per-address limits currently track.");
    let _ = writeln!(out, "{name} {tracked}");
    let name = "notify_handshakes_in_progress";
    header(out, name, "gauge", "Accepted sockets waiting for their first answer (server.max_handshakes).");
    let _ = writeln!(out, "{name} {handshakes}");
}

/// Appends per-tenant, per-hook plugin metrics.
pub(crate) fn render_plugins(out: &mut String, hooks: &[(Arc<str>, &str, Arc<HookMetrics>)]) {
    let labels = |tenant: &str, hook: &str| format!("tenant=\"{tenant}\",hook=\"{hook}\"");
    for family in &PLUGIN_FAMILIES {
        write_family(out, family, hooks.iter().map(|(t, h, m)| (labels(t, h), &**m)));
    }
    let name = "notify_plugin_call_seconds";
    header(out, name, "histogram", "Plugin call duration, including instantiation when no warm instance was free.");
    for (tenant, hook, m) in hooks {
        m.duration.render(out, name, &labels(tenant, hook));
    }
}
