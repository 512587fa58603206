//! Entry points of the coverage-guided fuzz targets (`fuzz/`, built with `--cfg fuzzing`),
//! one per parser of untrusted input. Each feeds arbitrary bytes through the host's own
//! code, and panics only where the host breaks a promise: a panic inside the host, or a frame
//! for a client that is not JSON. The unit tests below replay the committed corpora and every
//! input that once failed (`fuzz/regressions`).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;

use crate::app::App;
use crate::auth::{Authenticator, Identity};
use crate::backend::redis::envelope;
use crate::clock::IdGenerator;
use crate::config::{AuthConfig, Config, JwtConfig};
use crate::event::Event;
use crate::plugin::bindings::types;
use crate::plugin::hooks;
use crate::protocol::frame;
use crate::session::{self, Action, Resume};
use crate::stream::Target;
use crate::tenant::Tenant;

/// Frames of one client connection per input; more adds nothing but time.
const MAX_FRAMES: usize = 64;
const SECRET: &str = "fuzz-secret-of-32-bytes-or-more!!";
const TENANT: &str = r#"
[tenants.fuzz]
publish_key = "fuzz-publish-key"
auth = { mode = "insecure" }
history = { acks = true }
"#;

/// One node for the whole run: connections come and go on it as they would on a live one.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: App,
    tenant: Arc<Tenant>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let config = Config::from_toml(TENANT, "fuzz", []).expect("fuzz config");
        let (app, _) = runtime.block_on(App::new(config)).expect("app");
        let tenant = app.tenants().get("fuzz").expect("tenant");
        Fixture { runtime, app, tenant }
    })
}

/// A frame the host queued for a client must be one JSON value by the grammar (RFC 8259).
/// Numbers are not converted: a publisher's `1E777` is valid JSON that the host passes on
/// as written (JavaScript reads it as `Infinity`).
fn assert_json_frame(frame: &[u8]) {
    let payload = frame::payload(frame);
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
        panic!("a client frame is not JSON ({e}): {:?}", String::from_utf8_lossy(payload));
    }
}

/// Client text frames (separated by NUL) on one WebSocket connection: parsed, checked and
/// acted on (subscriptions, resumes, acks) by the session code of a live node.
pub fn client_frames(data: &[u8]) {
    // The WebSocket layer refuses text frames that are not UTF-8.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let f = fixture();
    f.runtime.block_on(async {
        let conn = session::conn(
            f.app.hub(),
            f.tenant.clone(),
            "fuzz-user",
            Vec::new(),
            (false, crate::protocol::Dialect::Native),
        );
        let identity = Identity { user: "fuzz-user".into(), channels: None, expires_at: None };
        session::join(&conn, &identity, Resume::default(), &f.app).await;
        for text in text.split('\0').take(MAX_FRAMES) {
            match crate::ws::on_text(text, &conn, &identity, &f.app) {
                Action::Reply(reply) => assert_json_frame(&reply),
                action => session::act(action, &conn, &f.app).await,
            }
        }
        session::leave(&conn, &f.app);
        let mut queued = Vec::new();
        conn.outbox.take_all(&mut queued);
        queued.iter().for_each(|q| assert_json_frame(q));
    });
}

/// A publish body, then the same bytes as a batch: what validation accepts encodes to a
/// JSON frame for each of its targets, and the frames of successive events make delta
/// frames that are JSON too.
pub fn publish_body(data: &[u8]) {
    let ids = IdGenerator::default();
    let one = crate::ingest::parse_one(&ids, data).map(|ev| vec![ev]);
    let batch = crate::ingest::parse_batch(&ids, data, 100);
    for events in [one, batch].into_iter().flatten() {
        events.iter().for_each(assert_encodes);
        let frames: Vec<Bytes> = events.iter().map(|e| e.encode_for(Target::Channel("c"), None)).collect();
        for pair in frames.windows(2) {
            assert_deltas(&pair[0], &pair[1]);
        }
    }
}

fn assert_encodes(ev: &Event) {
    for target in ev.targets().chain([Target::Broadcast]) {
        let position = crate::stream::Position { epoch: "e\"\\\u{1}".into(), offset: u64::MAX };
        assert_json_frame(&ev.encode_for(target, None));
        assert_json_frame(&ev.encode_for(target, Some(&position)));
    }
}

/// Every event frame is a delta base, and a delta between two is a JSON frame.
fn assert_deltas(prev: &Bytes, next: &Bytes) {
    let base = crate::protocol::delta::Base::of(prev).expect("an event frame is a delta base");
    let next = crate::protocol::delta::Base::of(next).expect("an event frame is a delta base");
    if let Some(delta) = base.delta_to(&next) {
        assert_json_frame(&delta);
    }
}

/// A node-to-node envelope as read from Redis: what decodes encodes back to the same bytes.
pub fn envelope(data: &[u8]) {
    let Ok(decoded) = envelope::decode(Bytes::copy_from_slice(data)) else { return };
    let mut head = envelope::head(decoded.published_micros, (decoded.delta, decoded.except), decoded.filter.as_ref());
    let position = decoded.position.as_ref().map(|p| format!("{}:{}", p.epoch, p.offset)).unwrap_or_default();
    let Ok(len) = u8::try_from(position.len()) else { return };
    head.push(len);
    head.extend_from_slice(position.as_bytes());
    head.extend_from_slice(&decoded.frame);
    let again = envelope::decode(Bytes::from(head)).expect("a re-encoded envelope decodes");
    assert_eq!((again.published_micros, again.delta), (decoded.published_micros, decoded.delta));
    assert_eq!(again.filter, decoded.filter);
    assert_eq!(again.position, decoded.position);
    assert_eq!(again.frame, decoded.frame);
}

/// A connect request's credentials. The first byte picks the path: a query string (and
/// `Authorization` header) checked by insecure and JWT auth, or claims signed with the
/// tenant's secret, so that claim validation is reached without forging a signature.
pub fn credentials(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let jwt = Authenticator::new(
        &AuthConfig::Jwt(Box::new(JwtConfig { hs256_secret: Some(SECRET.into()), ..JwtConfig::default() })),
        None,
    );
    let token = if mode % 2 == 0 {
        let query = Some(text);
        let user = crate::api::query_param(query, "user");
        let insecure = Authenticator::new(&AuthConfig::Insecure, None);
        check_verified(insecure.authenticate_now(None, user.as_deref()));
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(value) = axum::http::HeaderValue::from_str(text) {
            headers.insert(axum::http::header::AUTHORIZATION, value);
        }
        crate::api::client_token(query, &headers)
    } else {
        let Ok(claims) = serde_json::from_str::<Value>(text) else { return };
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).ok()
    };
    check_verified(jwt.authenticate_now(token.as_deref(), None));
}

fn check_verified<E>(verified: Result<crate::auth::Verified, E>) {
    if let Ok(v) = verified {
        check_identity(&v.identity);
    }
}

fn check_identity(identity: &Identity) {
    assert!(crate::channel::valid_name(&identity.user), "accepted user {:?}", identity.user);
    for pattern in identity.channels.iter().flatten() {
        assert!(crate::channel::valid_pattern(pattern), "accepted pattern {pattern:?}");
    }
}

/// A config file and `NOTIFY_...` overrides: TOML up to the first NUL, then one `VAR=value`
/// per line. Anything may be refused; nothing may panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env = env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned()));
    let _ = Config::from_toml(toml, "fuzz", env);
}

/// Values a plugin returns: an identity from `authenticate`, a rewrite from `transform` and
/// a decision from `route`, read from NUL-separated fields. What the host accepts must still
/// encode to JSON frames, and a route filter must evaluate.
pub fn plugin_output(data: &[u8]) {
    let mut fields = Fields(data.split(|b| *b == 0));
    let user = fields.text();
    let channels = (fields.byte() % 2 == 1).then(|| fields.list());
    let attributes = fields.pairs();
    let expires_at = Some(u64::from(fields.byte())).filter(|b| b % 2 == 1);
    let identity = types::Identity { user, channels, attributes: attributes.clone(), expires_at };
    if let Ok((identity, _)) = hooks::identity(identity) {
        check_identity(&identity);
    }
    let mut ev = sample_event();
    let rewrite = types::EventResult {
        id: fields.text(),
        name: fields.text(),
        data: fields.bytes(),
        attributes,
        users: fields.list(),
        channels: fields.list(),
        broadcast: fields.byte() % 2 == 1,
        push: None,
    };
    if hooks::rewrite(&mut ev, rewrite).is_ok() {
        assert_encodes(&ev);
    }
    let targets = (fields.byte() % 2 == 1).then(|| types::Targets {
        users: fields.list(),
        channels: fields.list(),
        broadcast: fields.byte() % 2 == 1,
    });
    let filter = (0..fields.byte() % 4).map(|_| fields.clause()).collect();
    let decision = types::RouteDecision { drop: fields.byte() % 7 == 0, targets, filter };
    if let Ok(true) = hooks::route(&mut ev, decision) {
        assert_encodes(&ev);
        let segments = crate::segment::Segments::default();
        let segment = segments.intern(fields.pairs());
        let _ = ev.filter.as_ref().map(|f| f.matches(&segment));
    }
    let push = types::PushResult {
        when: None,
        delay_ms: Some(u64::from(fields.byte()) << 24),
        title: Some(fields.text()),
        body: Some(fields.text()),
        icon: None,
        url: Some(fields.text()),
        collapse_key: Some(fields.text()).filter(|k| !k.is_empty()),
        ttl_ms: Some(u64::from(fields.byte()) << 32),
        urgency: None,
    };
    let rewrite = types::EventResult {
        id: String::new(),
        name: "pushed".into(),
        data: b"{}".to_vec(),
        attributes: Vec::new(),
        users: Vec::new(),
        channels: Vec::new(),
        broadcast: false,
        push: Some(push),
    };
    if hooks::rewrite(&mut ev, rewrite).is_ok() {
        assert_encodes(&ev);
        let alert = ev.alert.as_deref().expect("a rewrite with a push keeps it");
        assert!(alert.check().is_ok());
        let json = serde_json::to_string(alert).expect("a push serializes");
        assert_eq!(&serde_json::from_str::<crate::alert::Alert>(&json).expect("and reads back"), alert);
    }
}

fn sample_event() -> Event {
    Event::sample("fuzzed", &["u1"], &[])
}

/// Reads fields from NUL-separated input; an exhausted input reads as empty fields.
struct Fields<'a, I: Iterator<Item = &'a [u8]>>(I);

impl<'a, I: Iterator<Item = &'a [u8]>> Fields<'a, I> {
    fn bytes(&mut self) -> Vec<u8> {
        self.0.next().unwrap_or_default().to_vec()
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.0.next().unwrap_or_default()).into_owned()
    }

    fn byte(&mut self) -> u8 {
        self.0.next().and_then(|f| f.first().copied()).unwrap_or(0)
    }

    /// A count byte, then that many fields (at most 8).
    fn list(&mut self) -> Vec<String> {
        (0..self.byte() % 9).map(|_| self.text()).collect()
    }

    fn pairs(&mut self) -> Vec<(String, String)> {
        (0..self.byte() % 9).map(|_| (self.text(), self.text())).collect()
    }

    fn clause(&mut self) -> types::Clause {
        let op = [types::Op::Eq, types::Op::Ne, types::Op::In, types::Op::NotIn, types::Op::Exists];
        types::Clause { key: self.text(), op: op[usize::from(self.byte()) % op.len()], values: self.list() }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every committed input of `target`: its corpus, and its regressions (inputs that once
    /// failed, each fixed since).
    fn replay(target: &str, run: fn(&[u8])) {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut count = 0;
        for dir in [fuzz.join("corpus").join(target), fuzz.join("regressions").join(target)] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten() {
                let path = entry.unwrap().path();
                run(&std::fs::read(&path).unwrap());
                count += 1;
            }
        }
        assert!(count > 0, "no inputs for {target}");
    }

    #[test]
    fn client_frames() {
        replay("client_frames", super::client_frames);
    }

    #[test]
    fn publish_body() {
        replay("publish_body", super::publish_body);
    }

    #[test]
    fn envelope() {
        replay("envelope", super::envelope);
    }

    #[test]
    fn credentials() {
        replay("credentials", super::credentials);
    }

    #[test]
    fn config() {
        replay("config", super::config);
    }

    #[test]
    fn plugin_output() {
        replay("plugin_output", super::plugin_output);
    }
}
