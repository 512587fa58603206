//! Per-tenant quotas: connections per node, connections per user, and the publish rate, each
//! refused with 429 while other tenants carry on.

use notify_tests::{Client, Req, TestHost};
use serde_json::json;

/// `busy` has tight quotas; `calm` has the defaults (none).
const CONFIG: &str = r#"
[tenants.busy]
publish_key = "busy-key-123"
auth = { mode = "insecure" }
limits = { max_connections = 2, max_connections_per_user = 1, publish_rate = 1, publish_burst = 5 }
[tenants.calm]
publish_key = "calm-key-123"
auth = { mode = "insecure" }
"#;

#[tokio::test]
async fn a_tenant_at_its_connection_quota_is_refused_while_another_connects() -> anyhow::Result<()> {
    let host = TestHost::start(CONFIG).await?;
    let (first, _) = host.join("busy", "user=u1").await?;
    let refused = Client::try_connect(&host.ws_url("busy", "user=u1"), &[]).await?.err().expect("refused");
    assert_eq!((refused.status, refused.body["error"]["code"].clone()), (429, json!("too_many_user_connections")));
    let (_second, _) = host.join("busy", "user=u2").await?;
    let refused = Client::try_connect(&host.ws_url("busy", "user=u3"), &[]).await?.err().expect("refused");
    assert_eq!((refused.status, refused.body["error"]["code"].clone()), (429, json!("too_many_connections")));
    let mut calm = Vec::new();
    for i in 0..5 {
        calm.push(host.join("calm", &format!("user=u{i}")).await?.0);
    }
    drop(first);
    notify_tests::eventually(|| async { Ok(Client::try_connect(&host.ws_url("busy", "user=u3"), &[]).await?.is_ok()) })
        .await?;
    let sample = r#"notify_handshake_failures_total{tenant="busy",reason="tenant_connections"}"#;
    assert!(host.metric(sample).await? >= 1.0);
    let sample = r#"notify_handshake_failures_total{tenant="busy",reason="user_connections"}"#;
    assert_eq!(host.metric(sample).await?, 1.0);
    Ok(())
}

#[tokio::test]
async fn a_noisy_tenant_gets_429_and_the_other_tenant_gets_everything() -> anyhow::Result<()> {
    let host = TestHost::start(CONFIG).await?;
    let (mut calm_client, _) = host.join("calm", "user=alice").await?;
    let publish = |key: &'static str, body: serde_json::Value| {
        let addr = host.addr;
        async move { Req::post("/v1/publish/batch").key(key).body(body.to_string().into()).full(addr).await }
    };
    let five: Vec<_> = (0..5).map(|i| json!({ "broadcast": true, "event": format!("busy-{i}") })).collect();
    let (status, _, _) = publish("busy-key-123", json!(five)).await?;
    assert_eq!(status, 202, "the burst passes at once");
    let (status, _, _) = publish("busy-key-123", json!([{ "broadcast": true, "event": "one-more" }])).await?;
    assert_eq!(status, 429, "the bucket is empty and refills one event per second");
    let mut refused = 1;
    for i in 0..20 {
        let (status, headers, body) = publish("busy-key-123", json!([{ "broadcast": true, "event": "more" }])).await?;
        if status == 429 {
            refused += 1;
            assert_eq!(body["error"]["code"], "rate_limited");
            let retry: u64 = headers["retry-after"].to_str()?.parse()?;
            assert!(retry >= 1);
        }
        let event = json!([{ "users": ["alice"], "event": format!("calm-{i}") }]);
        let (status, _, _) = publish("calm-key-123", event).await?;
        assert_eq!(status, 202, "the calm tenant is never limited");
    }
    assert!(refused > 1, "later publishes are refused too until the bucket refills");
    for i in 0..20 {
        assert_eq!(calm_client.next_event().await?["event"], format!("calm-{i}"));
    }
    let too_big: Vec<_> = (0..6).map(|_| json!({ "broadcast": true, "event": "x" })).collect();
    let (status, headers, _) = publish("busy-key-123", json!(too_big)).await?;
    assert_eq!(status, 429);
    assert!(headers.get("retry-after").is_none(), "a batch larger than the burst never fits");
    assert!(host.metric(r#"notify_publish_rate_limited_total{tenant="busy"}"#).await? >= 7.0);
    assert_eq!(host.metric(r#"notify_publish_rate_limited_total{tenant="calm"}"#).await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn redis_ingest_over_the_rate_goes_to_the_dead_letter_stream() -> anyhow::Result<()> {
    let redis = notify_tests::RedisServer::start().await?;
    let mut r = redis.conn().await?;
    for i in 0..5 {
        let body = json!({ "users": ["alice"], "event": format!("e{i}") }).to_string();
        let _: String =
            redis::cmd("XADD").arg("notify:busy:ingest").arg("*").arg("event").arg(body).query_async(&mut r).await?;
    }
    let toml = CONFIG.replace("publish_rate = 1, publish_burst = 5", "publish_rate = 1, publish_burst = 2");
    let host = TestHost::start(&format!("{toml}\n{}", redis.broker_toml())).await?;
    notify_tests::eventually(|| {
        let mut r = r.clone();
        async move { Ok(redis::cmd("XLEN").arg("notify:busy:dead").query_async::<i64>(&mut r).await? == 3) }
    })
    .await?;
    let dead: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("notify:busy:dead").arg("-").arg("+").query_async(&mut r).await?;
    for (_, fields) in &dead {
        let fields: std::collections::HashMap<_, _> = fields.iter().cloned().collect();
        assert!(fields["error"].starts_with("rate_limited"), "{fields:?}");
        assert_eq!(fields["source"], "ingest");
    }
    // Refused entries are acknowledged once dead-lettered: nothing stays pending.
    notify_tests::eventually(|| {
        let mut r = r.clone();
        async move {
            let (pending, _, _, _): (i64, redis::Value, redis::Value, redis::Value) =
                redis::cmd("XPENDING").arg("notify:busy:ingest").arg("notify").query_async(&mut r).await?;
            Ok(pending == 0)
        }
    })
    .await?;
    host.wait_metric(r#"notify_events_published_total{tenant="busy"}"#, |n| n == 2.0).await?;
    assert_eq!(host.metric(r#"notify_publish_rate_limited_total{tenant="busy"}"#).await?, 3.0);
    Ok(())
}

#[tokio::test]
async fn subscriptions_and_event_size_follow_the_tenants_quotas() -> anyhow::Result<()> {
    let toml = r#"
[tenants.small]
publish_key = "small-key-123"
auth = { mode = "insecure" }
limits = { max_subscriptions = 1, max_event_bytes = 16 }
"#;
    let host = TestHost::start(&format!("{toml}\n{}", notify_tests::DEMO)).await?;
    let (mut client, _) = host.join("small", "user=alice").await?;
    assert_eq!(client.subscribe("a").await?["type"], "subscribed");
    let refused = client.subscribe("b").await?;
    assert_eq!((refused["type"].clone(), refused["code"].clone()), (json!("error"), json!("too_many_subscriptions")));
    let (mut demo, _) = host.join("demo", "user=alice").await?;
    for channel in ["a", "b", "c"] {
        assert_eq!(demo.subscribe(channel).await?["type"], "subscribed", "other tenants keep the node's limit");
    }

    let small = |data: serde_json::Value| {
        let addr = host.addr;
        let body = json!({ "users": ["alice"], "event": "e", "data": data }).to_string();
        async move { Req::post("/v1/publish").key("small-key-123").body(body.into()).full(addr).await }
    };
    let (status, _, body) = small(json!("x".repeat(40))).await?;
    assert_eq!((status, body["error"]["code"].clone()), (413, json!("event_too_large")));
    let (status, _, _) = small(json!("short")).await?;
    assert_eq!(status, 202);
    assert_eq!(client.next_event().await?["data"], "short");
    assert_eq!(host.metric(r#"notify_events_too_large_total{tenant="small"}"#).await?, 1.0);
    Ok(())
}
