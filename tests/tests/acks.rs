//! Acks: clients of a tenant with `history.acks` ack what they have read; the host keeps a
//! read cursor per user (in memory, or in Redis in cluster mode), redelivers what is unacked
//! on every connect, and reports unread counts.

use anyhow::Context as _;
use notify_tests::{RedisServer, Req, TestHost};
use serde_json::{Value, json};

const ACKS: &str = r#"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
history = { size = 100, ttl = "10m", acks = true }

[tenants.plain]
publish_key = "plain-key"
auth = { mode = "insecure" }
"#;

async fn unread(host: &TestHost, key: &str, user: &str) -> anyhow::Result<(u16, Value)> {
    let path = format!("/v1/users/{user}/unread");
    let (status, body) = Req::get(&path).key(key).reply(host.addr).await?;
    Ok((status, body))
}

async fn acks_keep_a_read_cursor(host: &TestHost) -> anyhow::Result<()> {
    let (mut phone, _) = host.join("demo", "user=ann").await?;
    let mut events = Vec::new();
    for i in 1..=3 {
        host.publish_ok(&json!({ "users": ["ann"], "event": "note", "data": i })).await?;
        events.push(phone.next_event().await?);
    }
    let epoch = events[0]["epoch"].as_str().context("epoch")?.to_owned();
    phone.send_json(&json!({ "type": "ack", "epoch": epoch, "offset": 2 })).await?;
    let acked = phone.next_json().await?;
    assert_eq!(acked, json!({ "type": "acked", "epoch": epoch, "offset": 2, "unread": 1 }));
    // The cursor only moves forward.
    phone.send_json(&json!({ "type": "ack", "epoch": epoch, "offset": 1 })).await?;
    assert_eq!(phone.next_json().await?["offset"], 2);
    // Positions that are not in this history are refused.
    phone.send_json(&json!({ "type": "ack", "epoch": epoch, "offset": 99 })).await?;
    assert_eq!(phone.next_json().await?["code"], "stale_position");
    phone.send_json(&json!({ "type": "ack", "epoch": "other", "offset": 1 })).await?;
    assert_eq!(phone.next_json().await?["code"], "stale_position");

    let (status, body) = unread(host, "demo-key", "ann").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "user": "ann", "epoch": epoch, "offset": 3, "acked": 2, "unread": 1 }));
    drop(phone);

    // A new device without a position gets everything unacked, in order, then live events.
    host.publish_ok(&json!({ "users": ["ann"], "event": "note", "data": 4 })).await?;
    let (mut laptop, welcome) = host.join("demo", "user=ann").await?;
    let user = &welcome["streams"]["user"];
    assert_eq!(
        (user["recovered"].as_bool(), user["acked"].as_u64(), user["unread"].as_u64()),
        (Some(true), Some(2), Some(2))
    );
    for offset in [3, 4] {
        let ev = laptop.next_event().await?;
        assert_eq!((ev["offset"].as_u64(), ev["data"].as_u64()), (Some(offset), Some(offset)));
    }
    // A device that saw everything but acked nothing new gets the unacked ones again.
    let (mut tablet, _) = host.join("demo", &format!("user=ann&user_since={epoch}:4")).await?;
    for offset in [3, 4] {
        assert_eq!(tablet.next_event().await?["offset"], offset);
    }
    laptop.send_json(&json!({ "type": "ack", "epoch": epoch, "offset": 4 })).await?;
    assert_eq!(laptop.next_json().await?["unread"], 0);
    assert_eq!(unread(host, "demo-key", "ann").await?.1["unread"], 0);
    host.publish_ok(&json!({ "users": ["ann"], "event": "note", "data": 5 })).await?;
    assert_eq!(tablet.next_event().await?["offset"], 5);
    // Once acked, nothing is redelivered.
    let (mut watch, _) = host.join("demo", "user=ann").await?;
    assert_eq!(watch.next_event().await?["offset"], 5);

    // Three acks were taken (the stale ones were refused); four connects read two streams
    // each; laptop, tablet and watch were replayed 2, 2 and 1 events.
    assert_eq!(host.metric("notify_acks_total{tenant=\"demo\"}").await?, 3.0);
    assert_eq!(host.metric("notify_history_reads_total{tenant=\"demo\"}").await?, 8.0);
    assert_eq!(host.metric("notify_history_replayed_total{tenant=\"demo\"}").await?, 5.0);
    // Tenants without acks say so; nobody reads another tenant's cursors.
    let (mut other, _) = host.join("plain", "user=ann").await?;
    other.send_json(&json!({ "type": "ack", "epoch": epoch, "offset": 1 })).await?;
    assert_eq!(other.next_json().await?["code"], "acks_disabled");
    let (status, body) = unread(host, "plain-key", "ann").await?;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("acks_disabled")), "{body}");
    assert_eq!(unread(host, "wrong-key", "ann").await?.0, 401);
    assert_eq!(unread(host, "demo-key", "bad%20user").await?.0, 400);
    Ok(())
}

#[tokio::test]
async fn acks_keep_a_read_cursor_in_memory() -> anyhow::Result<()> {
    acks_keep_a_read_cursor(&TestHost::start(ACKS).await?).await
}

#[tokio::test]
async fn acks_keep_a_read_cursor_in_redis() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let host = TestHost::start(&format!("{ACKS}\n{}", redis.broker_toml())).await?;
    host.wait_ready(200).await?;
    acks_keep_a_read_cursor(&host).await?;
    // The cursor is in Redis: another node sees it.
    let other = TestHost::start(&format!("{ACKS}\n{}", redis.broker_toml())).await?;
    let (_, body) = unread(&other, "demo-key", "ann").await?;
    assert_eq!((body["acked"].as_u64(), body["offset"].as_u64()), (Some(4), Some(5)));
    Ok(())
}
