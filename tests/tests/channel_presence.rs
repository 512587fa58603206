//! `GET /v1/channels/{channel}/presence`: who is subscribed to a channel, over every live
//! node.

use notify_tests::{DEMO, RedisServer, Req, TestHost, eventually};
use serde_json::{Value, json};

async fn presence(host: &TestHost, channel: &str) -> anyhow::Result<(u16, Value)> {
    Req::get(format!("/v1/channels/{channel}/presence")).key("demo-key").reply(host.addr).await
}

fn users(body: &Value) -> Value {
    body["users"].clone()
}

#[tokio::test]
async fn a_channel_lists_its_subscribers_on_one_node() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut clients = Vec::new();
    for user in ["alice", "alice", "bob", "carol"] {
        let (mut c, _) = host.join("demo", &format!("user={user}")).await?;
        if user != "carol" {
            assert_eq!(c.subscribe("room").await?["type"], "subscribed");
        }
        clients.push(c);
    }
    let (status, body) = presence(&host, "room").await?;
    assert_eq!(status, 200, "{body}");
    let expected = json!([{ "user": "alice", "connections": 2 }, { "user": "bob", "connections": 1 }]);
    assert_eq!(
        (users(&body), body["connections"].clone(), body["truncated"].clone()),
        (expected, json!(3), json!(false))
    );
    assert_eq!(body["nodes"], json!({ "answered": 1, "live": 1 }));
    let (_, empty) = presence(&host, "nobody-here").await?;
    assert_eq!(users(&empty), json!([]));
    let (status, _) = presence(&host, "bad%20name").await?;
    assert_eq!(status, 400);
    let (status, _) = Req::get("/v1/channels/room/presence").key("nope").reply(host.addr).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn a_channel_lists_its_subscribers_on_every_node() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("{DEMO}\n{}", redis.broker_toml());
    let [a, b] = notify_tests::ready_hosts(&toml).await?;
    let mut clients = Vec::new();
    for (host, user) in [(&a, "alice"), (&b, "alice"), (&b, "bob")] {
        let (mut c, _) = host.join("demo", &format!("user={user}")).await?;
        assert_eq!(c.subscribe("room").await?["type"], "subscribed");
        clients.push(c);
    }
    let expected = json!([{ "user": "alice", "connections": 2 }, { "user": "bob", "connections": 1 }]);
    // Both nodes count as live once each has reported (within a second of starting).
    eventually(|| async {
        let (_, body) = presence(&a, "room").await?;
        Ok(body["nodes"] == json!({ "answered": 2, "live": 2 }) && users(&body) == expected)
    })
    .await?;
    Ok(())
}
