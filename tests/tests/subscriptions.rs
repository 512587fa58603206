//! `POST /v1/users/{user}/subscriptions` and `DELETE /v1/users/{user}/subscriptions/{channel}`:
//! a backend subscribes or unsubscribes a user's live connections (WebSocket and SSE), on
//! every node.

use notify_tests::{DEMO, RedisServer, SseClient, TestHost, http};
use serde_json::{Value, json};

async fn subscribe(host: &TestHost, key: &str, user: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    http(host.addr, "POST", &format!("/v1/users/{user}/subscriptions"), Some(key), body.to_string().into()).await
}

async fn unsubscribe(host: &TestHost, user: &str, channel: &str) -> anyhow::Result<u16> {
    let path = format!("/v1/users/{user}/subscriptions/{channel}");
    Ok(http(host.addr, "DELETE", &path, Some("demo-key"), bytes::Bytes::new()).await?.0)
}

#[tokio::test]
async fn a_backend_subscribes_and_unsubscribes_every_connection_of_a_user() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut ws = host.connect_user("amy").await?;
    let mut sse = SseClient::connect(host.addr, "/v1/sse/demo?user=amy", &[]).await?;
    assert_eq!(sse.next_json().await?["type"], "welcome");
    let mut other = host.connect_user("ben").await?;

    let (status, body) = subscribe(&host, "demo-key", "amy", json!({ "channels": ["news", "sport", "news"] })).await?;
    assert_eq!((status, body), (202, json!({ "user": "amy", "channels": ["news", "sport"] })));
    for _ in 0..2 {
        let (w, s) = (ws.next_json().await?, sse.next_json().await?);
        for frame in [&w, &s] {
            assert_eq!(frame["type"], "subscribed");
            assert_eq!(frame["recovered"], true, "{frame}");
        }
    }
    // Asking again changes nothing and sends nothing.
    assert_eq!(subscribe(&host, "demo-key", "amy", json!({ "channels": ["news"] })).await?.0, 202);
    host.publish_ok(&json!({ "channels": ["news"], "event": "headline" })).await?;
    assert_eq!(ws.next_json().await?["event"], "headline");
    assert_eq!(sse.next_json().await?["event"], "headline");

    assert_eq!(unsubscribe(&host, "amy", "news").await?, 202);
    assert_eq!(ws.next_json().await?, json!({ "type": "unsubscribed", "channel": "news" }));
    assert_eq!(sse.next_json().await?, json!({ "type": "unsubscribed", "channel": "news" }));
    host.publish_ok(&json!({ "channels": ["news"], "event": "not-for-amy" })).await?;
    host.publish_ok(&json!({ "channels": ["sport"], "event": "goal" })).await?;
    assert_eq!(ws.next_json().await?["event"], "goal", "news no longer reaches amy");
    assert_eq!(sse.next_json().await?["event"], "goal");

    // Other users are untouched.
    host.publish_ok(&json!({ "users": ["ben"], "event": "dm" })).await?;
    assert_eq!(other.next_json().await?["event"], "dm");
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_refused() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let code = |r: (u16, Value)| (r.0, r.1["error"]["code"].as_str().unwrap_or_default().to_owned());
    assert_eq!(code(subscribe(&host, "wrong", "amy", json!({ "channels": ["a"] })).await?).0, 401);
    let bad = code(subscribe(&host, "demo-key", "amy", json!({ "channels": ["a b"] })).await?);
    assert_eq!(bad, (400, "invalid_channel".into()));
    assert_eq!(code(subscribe(&host, "demo-key", "amy", json!({ "channels": [] })).await?).0, 400);
    assert_eq!(code(subscribe(&host, "demo-key", "amy", json!({ "channel": "a" })).await?).0, 400);
    assert_eq!(unsubscribe(&host, "amy", "a%20b").await?, 400);
    Ok(())
}

#[tokio::test]
async fn a_request_to_one_node_subscribes_connections_on_another() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let [a, b] = notify_tests::ready_hosts(&format!("{DEMO}\n{}", redis.broker_toml())).await?;
    let mut on_b = b.connect_user("cat").await?;
    assert_eq!(subscribe(&a, "demo-key", "cat", json!({ "channels": ["alerts"] })).await?.0, 202);
    let subscribed = on_b.next_json().await?;
    assert_eq!((subscribed["type"].as_str(), subscribed["channel"].as_str()), (Some("subscribed"), Some("alerts")));
    a.publish_ok(&json!({ "channels": ["alerts"], "event": "fire" })).await?;
    assert_eq!(on_b.next_json().await?["event"], "fire");
    assert_eq!(unsubscribe(&a, "cat", "alerts").await?, 202);
    assert_eq!(on_b.next_json().await?["type"], "unsubscribed");
    Ok(())
}
