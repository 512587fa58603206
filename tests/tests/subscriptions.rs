//! `POST /v1/users/{user}/subscriptions` and `DELETE /v1/users/{user}/subscriptions/{channel}`:
//! a backend subscribes or unsubscribes a user's live connections (WebSocket and SSE), on
//! every node. And `?channels=` in the connect URL, which means the same on both transports.

use anyhow::Context as _;
use notify_tests::{Client, DEMO, JWT_SECRET, RedisServer, Req, SseClient, TestHost, hs256_token, jwt_tenant};
use serde_json::{Value, json};

async fn subscribe(host: &TestHost, key: &str, user: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    Req::post(format!("/v1/users/{user}/subscriptions")).key(key).body(body.to_string().into()).reply(host.addr).await
}

async fn unsubscribe(host: &TestHost, user: &str, channel: &str) -> anyhow::Result<u16> {
    let path = format!("/v1/users/{user}/subscriptions/{channel}");
    Ok(Req::delete(&path).key("demo-key").reply(host.addr).await?.0)
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

/// `?channels=` subscribes at connect over WebSocket as over SSE, each channel resumed from
/// `last_event_id`, and a channel the client may not have refuses the connection before the
/// upgrade with the same code a `subscribe` frame would get.
#[tokio::test]
async fn channels_in_the_connect_url_are_subscribed_over_websocket_too() -> anyhow::Result<()> {
    let host = TestHost::start(&format!("{DEMO}\n{}", jwt_tenant())).await?;
    let (mut ws, _) = host.join("demo", "user=amy&channels=news,sport,news").await?;
    for channel in ["news", "sport"] {
        let subscribed = ws.next_json().await?;
        assert_eq!((subscribed["type"].as_str(), subscribed["channel"].as_str()), (Some("subscribed"), Some(channel)));
    }
    host.publish_ok(&json!({ "channels": ["sport"], "event": "goal" })).await?;
    let goal = ws.next_event().await?;
    assert_eq!(goal["channel"], "sport");
    drop(ws);

    host.publish_ok(&json!({ "channels": ["sport"], "event": "missed" })).await?;
    let cursor = format!("channel:sport:{}:{}", goal["epoch"].as_str().context("epoch")?, goal["offset"]);
    let (mut ws, _) = host.join("demo", &format!("user=amy&channels=sport&last_event_id={cursor}")).await?;
    let subscribed = ws.next_json().await?;
    assert_eq!((subscribed["recovered"].clone(), subscribed["offset"].clone()), (json!(true), json!(2)));
    assert_eq!(ws.next_event().await?["event"], "missed", "resumed from last_event_id");

    let token = hs256_token("eve", 600, Some(&["orders.*"]), JWT_SECRET);
    let refusals = [
        ("demo", "user=amy&channels=a%20b".to_owned(), 400, "invalid_channel"),
        ("secure", format!("token={token}&channels=orders.1,news"), 403, "forbidden_channel"),
    ];
    let origin = [("origin", "https://app.example.com")];
    for (tenant, query, status, code) in refusals {
        let refused = Client::try_connect(&host.ws_url(tenant, &query), &origin).await?.err().context("refused")?;
        assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (status, Some(code)), "{query}");
        let path = format!("/v1/ws/{tenant}?{query}");
        let (diagnosed, _, body) = Req::get(&path).headers(&origin).send(host.addr).await?;
        let body: Value = serde_json::from_slice(&body)?;
        assert_eq!((diagnosed, body["error"]["code"].as_str()), (status, Some(code)), "the diagnosis tells the same");
    }
    Ok(())
}
