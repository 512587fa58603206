//! Credentials never leave the host: with every log at debug level, a run that uses each
//! kind of secret (admin token, publish and management keys, configured and created at
//! runtime, a JWT secret and tokens, right and wrong, a webhook signing secret, a Pusher app
//! secret, configured and made at runtime) writes none of them to the log, to `/metrics` or
//! to the admin API's listings.

use notify_tests::{
    Client, DEMO, HostProcess, Receiver, Req, STEP, SseClient, TestHost, eventually, host_bin, hs256_token,
};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-S3CRET-aaaa";
const PUBLISH: &str = "publish-key-S3CRET-bbbb";
const MANAGE: &str = "manage-key-S3CRET-cccc";
const JWT: &str = "jwt-secret-S3CRET-dddd-0123456789";
const WRONG: &str = "wrong-key-S3CRET-eeee";
const BAD_TOKEN: &str = "bad.token.S3CRET-ffff";
const PUSHER: &str = "pusher-S3CRET-iiii-0123";
/// The base64 of `webhook-S3CRET-gggg-0123456789ab`.
const WEBHOOK: &str = "whsec_d2ViaG9vay1TM0NSRVQtZ2dnZy0wMTIzNDU2Nzg5YWI=";

/// The tenant `sec` with every kind of secret; its webhooks go to `hooks`.
fn config(hooks: &str) -> String {
    format!(
        "[server]\nadmin_token = \"{ADMIN}\"\n[webhooks]\nallow_private = true\ninitial_backoff = \"50ms\"\n\n\
         [tenants.sec]\npublish_key = \"{PUBLISH}\"\n\
         management_key = \"{MANAGE}\"\nauth = {{ mode = \"jwt\", hs256_secret = \"{JWT}\" }}\n\
         webhooks = [{{ url = \"{hooks}\", secret = \"{WEBHOOK}\" }}]\n\
         pusher = {{ app_id = \"77\", key = \"pusher-key-hhhh\", secret = \"{PUSHER}\" }}\n"
    )
}

async fn call(host: &HostProcess, method: &str, path: &str, key: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    Req::new(method, path).key(key).body(body.into()).reply(host.addr).await
}

/// Uses every credential, right and wrong; returns the secrets the host made on the way.
async fn use_every_credential(host: &HostProcess) -> anyhow::Result<Vec<String>> {
    let token = hs256_token("alice", 300, Some(&["news"]), JWT);
    let mut alice = Client::connect(&format!("ws://{}/v1/ws/sec?token={token}", host.addr), &[]).await?;
    assert_eq!(alice.next_json().await?["type"], "welcome");
    let refused = Client::try_connect(&format!("ws://{}/v1/ws/sec?token={BAD_TOKEN}", host.addr), &[]).await?;
    assert_eq!(refused.err().map(|r| r.status), Some(401));
    let bearer = format!("Bearer {token}");
    let mut sse = SseClient::connect(host.addr, "/v1/sse/sec", &[("authorization", &bearer)]).await?;
    assert_eq!(sse.next_json().await?["type"], "welcome");

    let event = json!({ "users": ["alice"], "event": "hello", "data": {} });
    assert_eq!(call(host, "POST", "/v1/publish", PUBLISH, event.clone()).await?.0, 202);
    assert_eq!(alice.next_event().await?["event"], "hello");
    assert_eq!(call(host, "POST", "/v1/publish", WRONG, event).await?.0, 401);
    assert_eq!(call(host, "GET", "/v1/admin/tenants/sec/plugins", MANAGE, Value::Null).await?.0, 200);
    assert_eq!(call(host, "GET", "/v1/admin/tenants/sec/plugins", WRONG, Value::Null).await?.0, 403);
    assert_eq!(call(host, "GET", "/v1/admin/tenants", WRONG, Value::Null).await?.0, 403);

    // A Pusher client with a wrong channel signature, and a Pusher API call with a wrong one.
    let mut pusher = Client::connect(&format!("ws://{}/app/pusher-key-hhhh?protocol=7", host.addr), &[]).await?;
    assert_eq!(pusher.next_json().await?["event"], "pusher:connection_established");
    let auth = format!("pusher-key-hhhh:{}", "0".repeat(64));
    pusher.send_json(&json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": auth}})).await?;
    assert_eq!(pusher.next_json().await?["event"], "pusher:subscription_error");
    let signed = "/apps/77/events?auth_key=pusher-key-hhhh&auth_timestamp=1&auth_version=1.0&auth_signature=00";
    let body = json!({"name": "e", "channel": "c", "data": "{}"}).to_string().into_bytes();
    let (status, text) = Req::new("POST", signed).body(body.into()).raw(host.addr).await?;
    assert_eq!(status, 401, "{text:?}");

    let spec = json!({ "id": "made", "auth": { "mode": "insecure" } });
    let (status, created) = call(host, "POST", "/v1/admin/tenants", ADMIN, spec).await?;
    assert_eq!(status, 201, "{created}");
    let (status, rotated) = call(host, "POST", "/v1/admin/tenants/made/keys/publish", ADMIN, Value::Null).await?;
    assert_eq!(status, 200, "{rotated}");
    let (status, app) = call(host, "POST", "/v1/admin/tenants/made/pusher", ADMIN, Value::Null).await?;
    assert_eq!(status, 200, "{app}");
    let made: Vec<String> = [&created["publish_key"], &created["management_key"], &rotated["key"], &app["secret"]]
        .iter()
        .map(|k| k.as_str().expect("a key").to_owned())
        .collect();
    let (status, _) = call(host, "POST", "/v1/publish", &made[2], json!({ "broadcast": true, "event": "e" })).await?;
    assert_eq!(status, 202);
    // A credential put in a query string by mistake is not logged either.
    let misplaced = format!("/v1/admin/tenants/made?token={BAD_TOKEN}");
    for (path, key) in [("/v1/admin/tenants", ADMIN), (misplaced.as_str(), ADMIN)] {
        let (status, listed) = call(host, "GET", path, key, Value::Null).await?;
        assert_eq!(status, 200);
        assert_no_secret(&listed.to_string(), &made, path);
    }
    Ok(made.into_iter().chain([token]).collect())
}

fn assert_no_secret(text: &str, made: &[String], what: &str) {
    let known = [ADMIN, PUBLISH, MANAGE, JWT, WRONG, BAD_TOKEN, WEBHOOK, &WEBHOOK["whsec_".len()..], PUSHER];
    for secret in known.into_iter().chain(made.iter().map(|s| s.as_str())) {
        assert!(!text.contains(secret), "{what} holds the secret {secret:?}");
    }
    assert!(!text.contains("S3CRET"), "{what} holds part of a secret");
}

#[tokio::test]
async fn no_key_or_token_reaches_the_log_or_the_metrics() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    // The first webhook request fails, so the log has the failure and the retry too.
    receiver.answer(&[500]);
    let mut host = HostProcess::start_logging(host_bin!(), &config(&receiver.url("/hooks")), "debug").await?;
    let made = use_every_credential(&host).await?;
    eventually(|| async { Ok(receiver.received().iter().any(|r| r.status == 200)) }).await?;
    let (status, letters) =
        call(&host, "GET", "/v1/admin/tenants/sec/webhooks/dead-letters", ADMIN, Value::Null).await?;
    assert_eq!(status, 200);
    assert_no_secret(&letters.to_string(), &made, "the dead letters");
    let (status, metrics) = Req::get("/metrics").raw(host.metrics).await?;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics.to_vec())?;
    assert!(metrics.contains("tenant=\"made\""), "the run is in the metrics");
    assert_no_secret(&metrics, &made, "/metrics");

    host.signal("TERM")?;
    tokio::time::timeout(STEP, host.child.wait()).await??;
    let log = host.log.lock().unwrap().clone();
    assert!(log.contains("DEBUG"), "debug logging was on:\n{log}");
    assert!(log.contains("/v1/admin/tenants"), "requests were logged:\n{log}");
    assert_no_secret(&log, &made, "the log");
    Ok(())
}

/// The metrics name every tenant with its traffic: on the client port they answer the admin
/// token only; Prometheus scrapes the metrics listener (loopback by default), which serves
/// nothing else.
#[tokio::test]
async fn metrics_are_not_public_on_the_client_port() -> anyhow::Result<()> {
    let admin = "metrics-admin-token-0123";
    let host = TestHost::start(&format!("[server]\nadmin_token = \"{admin}\"\n{DEMO}")).await?;
    let scrape = |addr, token| async move { Req::get("/metrics").auth(token).raw(addr).await };
    assert_eq!(scrape(host.addr, None).await?.0, 401);
    assert_eq!(scrape(host.addr, Some("demo-key")).await?.0, 403, "a publish key is not enough");
    let (status, text) = scrape(host.addr, Some(admin)).await?;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&text).contains("tenant=\"demo\""));
    let (status, text) = scrape(host.metrics, None).await?;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&text).contains("tenant=\"demo\""));
    let (status, _) = Req::get("/v1/admin/tenants").key(admin).raw(host.metrics).await?;
    assert_eq!(status, 404, "the metrics listener serves metrics only");
    Ok(())
}
