//! The publish API's refusals: each bad body gets 400 naming the field.

use bytes::Bytes;
use notify_tests::{DEMO, Req, TestHost};
use serde_json::{Value, json};

async fn post(host: &TestHost, key: Option<&str>, body: impl Into<Bytes>) -> anyhow::Result<(u16, Value)> {
    Req::post("/v1/publish").auth(key).body(body.into()).reply(host.addr).await
}

#[tokio::test]
async fn each_bad_body_gets_400_naming_the_field() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let cases: [(&str, &str); 11] = [
        ("{not json", "body"),
        ("[]", "body"),
        (r#"{"users":["a"]}"#, "event"),
        (r#"{"event":"e"}"#, "users"),
        (r#"{"event":"e","users":"alice"}"#, "users"),
        (r#"{"event":"e","users":["ok", 7]}"#, "users[1]"),
        (r#"{"event":"e","users":["has space"]}"#, "users[0]"),
        (r#"{"event":"e","channels":["ok","b/c"]}"#, "channels[1]"),
        (r#"{"event":"e","broadcast":"yes"}"#, "broadcast"),
        (r#"{"event":"","broadcast":true}"#, "event"),
        (r#"{"event":"e","broadcast":true,"colour":"red"}"#, "colour"),
    ];
    for (body, field) in cases {
        let (status, res) = post(&host, Some("demo-key"), body).await?;
        assert_eq!(status, 400, "{body}");
        assert_eq!(res["error"]["field"], field, "{body}: {res}");
        assert!(!res["error"]["message"].as_str().unwrap().is_empty());
    }
    let batch = r#"[{"event":"a","users":["u"]},{"users":["u"]}]"#;
    let (status, res) = Req::post("/v1/publish/batch").key("demo-key").body(batch.into()).reply(host.addr).await?;
    assert_eq!((status, res["error"]["field"].as_str()), (400, Some("[1].event")));
    Ok(())
}

#[tokio::test]
async fn wrong_key_is_401_and_oversized_body_is_413() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let body = json!({"users": ["a"], "event": "e"}).to_string();
    let (status, res) = post(&host, Some("wrong-key"), body.clone()).await?;
    assert_eq!((status, res["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = post(&host, None, body).await?;
    assert_eq!(status, 401);
    let big = format!(r#"{{"users":["a"],"event":"e","data":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, res) = post(&host, Some("demo-key"), big).await?;
    assert_eq!((status, res["error"]["code"].as_str()), (413, Some("too_large")));
    assert!(host.metric("notify_publish_rejected_total").await? >= 3.0);
    Ok(())
}

#[tokio::test]
async fn health_readiness_and_metrics() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    assert_eq!(Req::get("/healthz").reply(host.addr).await?.0, 200);
    assert_eq!(Req::get("/readyz").reply(host.addr).await?.0, 200);
    let mut c = host.connect_user("m").await?;
    host.publish_ok(&json!({"users": ["m"], "event": "e"})).await?;
    c.next_event().await?;
    assert_eq!(host.metric("notify_connections{tenant=\"demo\"}").await?, 1.0);
    assert_eq!(host.metric("notify_events_published_total{tenant=\"demo\"}").await?, 1.0);
    assert_eq!(host.metric("notify_handshakes_total{tenant=\"demo\"}").await?, 1.0);
    assert_eq!(host.metric("notify_publish_to_enqueue_seconds_count{tenant=\"demo\"}").await?, 1.0);
    host.wait_metric("notify_frames_delivered_total{tenant=\"demo\"}", |v| v >= 2.0).await?;
    let (status, _) = Req::get("/nope").reply(host.addr).await?;
    assert_eq!(status, 404);
    Ok(())
}
