//! A tenant's key set from its identity provider (JWKS, RFC 7517): fetched at start, refreshed
//! in the background on the provider's `Cache-Control: max-age` within the tenant's floor and
//! ceiling, and once more (at most once per cooldown) when a token names a `kid` the set lacks.
//! A failed fetch keeps the last good set; fetches are single-flight, so a burst of handshakes
//! waiting on a new key causes one request.

use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Uri};
use jsonwebtoken::Algorithm;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsConnector;

use super::key::{self, Verifier};
use crate::config::JwtConfig;
use crate::outbound::DialError;

/// The largest key set read: real ones are a few kilobytes.
pub(crate) const MAX_BYTES: usize = 256 * 1024;

/// The wait before the first retry of a failed fetch; each later one doubles, up to the
/// tenant's floor.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Why a fetch of the key set failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(u16),
    #[error("answer larger than {MAX_BYTES} bytes")]
    TooLarge,
    #[error("not a JSON key set: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the key set holds no key usable for this tenant ({0})")]
    NoUsableKey(String),
}

/// How often and how patiently the set is fetched.
#[derive(Clone, PartialEq, Eq)]
struct Settings {
    url: Uri,
    min_refresh: Duration,
    max_refresh: Duration,
    cooldown: Duration,
    timeout: Duration,
    allowed: Vec<Algorithm>,
}

impl Settings {
    fn of(url: &str, jwt: &JwtConfig, allowed: &[Algorithm]) -> Self {
        Self {
            url: url.parse().expect("validated jwks_url"),
            min_refresh: Duration::from_secs(jwt.jwks_min_refresh_secs),
            max_refresh: Duration::from_secs(jwt.jwks_max_refresh_secs),
            cooldown: Duration::from_secs(jwt.jwks_cooldown_secs),
            timeout: Duration::from_millis(jwt.jwks_timeout_ms),
            allowed: allowed.to_vec(),
        }
    }
}

/// One tenant's key set and the state of its fetches.
pub(crate) struct Jwks {
    settings: Settings,
    /// The last good set, replaced whole by each successful fetch; read by every handshake
    /// (a read lock held only to clone the `Arc`).
    keys: RwLock<Arc<Vec<Verifier>>>,
    /// Fetch bookkeeping; locked briefly, never across an await.
    state: Mutex<State>,
    /// Counts finished fetches: whoever waits on the fetch in flight waits for the next value.
    done: watch::Sender<u64>,
    /// Taken by the refresh task when it starts; the task ends when this set is dropped (its
    /// tenant reconfigured with another key set, or deleted), as the sender half goes.
    stop: Mutex<Option<oneshot::Receiver<()>>>,
    _stop: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    in_flight: bool,
    /// When a token with an unknown `kid` last caused a fetch.
    last_forced: Option<Instant>,
    /// The wait before the background fetches again, set by each fetch.
    next_wait: Duration,
    failures_in_row: u32,
    status: JwksStatus,
}

/// What the dashboard and the metrics show of a key set, as this node holds it.
#[derive(Clone, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct JwksStatus {
    pub url: String,
    /// The `kid` of each usable key (`""` for a key without one).
    pub kids: Vec<String>,
    /// Unix milliseconds of the last successful fetch.
    pub fetched_at: Option<u64>,
    /// Why the last fetch failed, when it did (cleared by a success).
    pub last_error: Option<String>,
    /// Unix milliseconds of the last failure.
    pub failed_at: Option<u64>,
    pub fetches: u64,
    pub failures: u64,
    /// Keys of the set that are not used, with the reason.
    pub unusable: Vec<String>,
}

/// What a handshake that met an unknown `kid` learns.
pub(crate) enum Refresh {
    /// A fetch finished: look again.
    Done,
    /// No fetch: one was made less than the cooldown ago.
    Limited(Duration),
    /// The fetch failed.
    Failed(String),
}

impl Jwks {
    /// The key set of `url` for a tenant accepting `allowed`; its refresh task starts at once
    /// on a runtime, or else with the first handshake.
    pub(crate) fn start(url: &str, jwt: &JwtConfig, allowed: &[Algorithm]) -> Arc<Self> {
        let settings = Settings::of(url, jwt, allowed);
        let (stop_tx, stop_rx) = oneshot::channel();
        let status = JwksStatus { url: url.to_owned(), ..JwksStatus::default() };
        let jwks = Arc::new(Self {
            settings,
            keys: RwLock::default(),
            state: Mutex::new(State { status, ..State::default() }),
            done: watch::Sender::new(0),
            stop: Mutex::new(Some(stop_rx)),
            _stop: stop_tx,
        });
        jwks.ensure_running();
        jwks
    }

    /// Whether this set is the one `url` with these settings would give (a tenant changed in
    /// other ways keeps its set and its task).
    pub(crate) fn same(&self, url: &str, jwt: &JwtConfig, allowed: &[Algorithm]) -> bool {
        self.settings == Settings::of(url, jwt, allowed)
    }

    /// Starts the refresh task if it has not started and a runtime is there.
    pub(crate) fn ensure_running(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if let Some(stop) = self.stop.lock().expect("jwks stop lock").take() {
            tokio::spawn(refresh_task(Arc::downgrade(self), stop));
        }
    }

    /// Waits (up to the fetch timeout) until the first fetch finished, if it has not.
    pub(crate) async fn first_fetch(self: &Arc<Self>) {
        self.ensure_running();
        let mut finished = self.done.subscribe();
        if *finished.borrow_and_update() > 0 {
            return;
        }
        let _ = tokio::time::timeout(self.settings.timeout, finished.changed()).await;
    }

    /// The usable keys of the last good set.
    pub(crate) fn keys(&self) -> Arc<Vec<Verifier>> {
        self.keys.read().expect("jwks keys lock").clone()
    }

    pub(crate) fn status(&self) -> JwksStatus {
        self.state.lock().expect("jwks state lock").status.clone()
    }

    /// Fetches the set because a token named a `kid` it lacks: joins the fetch in flight,
    /// or starts one unless one was started less than the cooldown ago.
    pub(crate) async fn refresh_for_unknown_kid(self: &Arc<Self>) -> Refresh {
        let (start, mut finished) = {
            let mut state = self.state.lock().expect("jwks state lock");
            let start = !state.in_flight;
            if start {
                if let Some(last) = state.last_forced
                    && last.elapsed() < self.settings.cooldown
                {
                    return Refresh::Limited(self.settings.cooldown);
                }
                state.last_forced = Some(Instant::now());
                state.in_flight = true;
            }
            (start, self.done.subscribe())
        };
        if start {
            tokio::spawn(self.clone().fetch());
        }
        if finished.changed().await.is_err() {
            return Refresh::Failed("the key set was dropped".into());
        }
        match self.status().last_error {
            Some(e) => Refresh::Failed(e),
            None => Refresh::Done,
        }
    }

    /// One fetch; its outcome replaces the keys or records the error, and wakes the waiters.
    async fn fetch(self: Arc<Self>) {
        let outcome = tokio::time::timeout(self.settings.timeout, get(&self.settings)).await;
        let outcome = outcome.unwrap_or(Err(FetchError::Timeout(self.settings.timeout)));
        let outcome = outcome.and_then(|(set, max_age)| {
            let (keys, unusable) = verifiers(set, &self.settings.allowed);
            if keys.is_empty() {
                return Err(FetchError::NoUsableKey(unusable.join("; ")));
            }
            Ok((keys, unusable, max_age))
        });
        let now = crate::clock::now_millis();
        let mut state = self.state.lock().expect("jwks state lock");
        match outcome {
            Ok((keys, unusable, max_age)) => {
                state.status.kids = keys.iter().map(|k| k.kid.as_deref().unwrap_or_default().to_owned()).collect();
                state.status.unusable = unusable;
                state.status.fetched_at = Some(now);
                state.status.fetches += 1;
                state.status.last_error = None;
                state.failures_in_row = 0;
                let wanted = max_age.unwrap_or(self.settings.max_refresh);
                state.next_wait = wanted.clamp(self.settings.min_refresh, self.settings.max_refresh);
                *self.keys.write().expect("jwks keys lock") = Arc::new(keys);
            }
            Err(e) => {
                tracing::warn!(url = %self.settings.url, "fetching the key set failed, the last good one stays: {e}");
                state.status.last_error = Some(e.to_string());
                state.status.failed_at = Some(now);
                state.status.failures += 1;
                let backoff = FIRST_RETRY.saturating_mul(1 << state.failures_in_row.min(16));
                state.failures_in_row += 1;
                state.next_wait = backoff.min(self.settings.min_refresh);
            }
        }
        state.in_flight = false;
        let finished = state.status.fetches + state.status.failures;
        drop(state);
        self.done.send_replace(finished);
    }
}

/// Fetches the set whenever it is due, for as long as the set is in use.
async fn refresh_task(jwks: Weak<Jwks>, mut stop: oneshot::Receiver<()>) {
    loop {
        let Some(set) = jwks.upgrade() else { return };
        let mut finished = set.done.subscribe();
        let start = {
            let mut state = set.state.lock().expect("jwks state lock");
            !std::mem::replace(&mut state.in_flight, true)
        };
        if start {
            set.clone().fetch().await;
        } else if finished.changed().await.is_err() {
            return;
        }
        let wait = set.state.lock().expect("jwks state lock").next_wait;
        drop(set);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => return,
        }
    }
}

/// Appends the key set gauges and counters of each tenant that has one.
pub(crate) fn render_metrics(out: &mut String, sets: &[(&str, JwksStatus)]) {
    use std::fmt::Write;
    if sets.is_empty() {
        return;
    }
    let now = crate::clock::now_millis();
    let name = "notify_jwks_keys";
    crate::metrics::header(
        out,
        name,
        "gauge",
        "Usable keys in the tenant's provider key set (JWKS), as this node holds it.",
    );
    for (tenant, s) in sets {
        let _ = writeln!(out, "{name}{{tenant=\"{tenant}\"}} {}", s.kids.len());
    }
    let name = "notify_jwks_age_seconds";
    crate::metrics::header(
        out,
        name,
        "gauge",
        "Time since the key set was last fetched successfully (absent before the first).",
    );
    for (tenant, s) in sets {
        if let Some(at) = s.fetched_at {
            let _ = writeln!(out, "{name}{{tenant=\"{tenant}\"}} {}", now.saturating_sub(at) as f64 / 1e3);
        }
    }
    let name = "notify_jwks_fetches_total";
    crate::metrics::header(out, name, "counter", "Fetches of the key set: ok, or error (the last good set stays).");
    for (tenant, s) in sets {
        let _ = writeln!(out, "{name}{{tenant=\"{tenant}\",result=\"ok\"}} {}", s.fetches);
        let _ = writeln!(out, "{name}{{tenant=\"{tenant}\",result=\"error\"}} {}", s.failures);
    }
}

/// GETs the key set: its keys, and the `max-age` the provider set.
async fn get(settings: &Settings) -> Result<(Vec<serde_json::Value>, Option<Duration>), FetchError> {
    let url = &settings.url;
    // The URL is the operator's (config or admin API), so private addresses are allowed:
    // identity providers often sit on the internal network.
    let mut sender = crate::outbound::dial(url, settings.timeout, |_| true, tls()).await?;
    let req = crate::outbound::request(Method::GET, url)
        .header("accept", "application/json, application/jwk-set+json")
        .header("user-agent", concat!("notify/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::new()))
        .expect("a request of checked parts");
    let response = sender.send_request(req).await?;
    if response.status() != hyper::StatusCode::OK {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let max_age = response.headers().get("cache-control").and_then(|v| v.to_str().ok()).and_then(max_age);
    let body = Limited::new(response.into_body(), MAX_BYTES).collect().await.map_err(|e| {
        match e.downcast::<hyper::Error>() {
            Ok(e) => FetchError::Http(*e),
            Err(_) => FetchError::TooLarge,
        }
    })?;
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(&body.to_bytes())?;
    Ok((set.keys, max_age))
}

/// The `max-age` of a `Cache-Control` value (`no-cache` and `no-store` count as 0).
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|directive| {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        lower.strip_prefix("max-age=")?.trim_matches('"').parse().ok().map(Duration::from_secs)
    })
}

/// The usable keys of a set, and a line for each key that is not.
fn verifiers(set: Vec<serde_json::Value>, allowed: &[Algorithm]) -> (Vec<Verifier>, Vec<String>) {
    let mut unusable = Vec::new();
    let mut keys = Vec::new();
    for value in set {
        let kid = value.get("kid").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
        match key::from_jwk(value, allowed) {
            Ok(v) => keys.push(v),
            Err(e) => unusable.push(format!("{kid:?}: {e}")),
        }
    }
    (keys, unusable)
}

/// TLS to providers: the system's trusted roots, loaded once.
fn tls() -> &'static TlsConnector {
    static TLS: OnceLock<TlsConnector> = OnceLock::new();
    TLS.get_or_init(|| crate::outbound::system_tls(crate::outbound::crypto()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_gives_the_max_age() {
        assert_eq!(max_age("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(max_age("no-cache"), Some(Duration::ZERO));
        assert_eq!(max_age("private"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
