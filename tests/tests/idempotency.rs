//! Idempotent publishing: an event retried with the same `idempotency_key` (over HTTP, in a
//! batch, through Redis ingest, on another node, or claimed from a node that died before
//! acknowledging it) returns the first event's id and is delivered once.

use anyhow::Context as _;
use notify_tests::{Client, DEMO, HostProcess, RedisServer, Req, TestHost, host_bin};
use serde_json::{Value, json};

async fn publish(addr: std::net::SocketAddr, path: &str, body: &Value) -> anyhow::Result<Value> {
    let (status, res) = Req::post(path).key("demo-key").body(body.to_string().into()).reply(addr).await?;
    anyhow::ensure!(status == 202, "publish answered {status}: {res}");
    Ok(res)
}

/// The `data` of the next events `client` receives, up to and including `last`.
async fn data_until(client: &mut Client, last: &str) -> anyhow::Result<Vec<String>> {
    let mut seen = Vec::new();
    loop {
        let ev = client.next_event().await?;
        let data = ev["data"].as_str().context("data")?.to_owned();
        seen.push(data.clone());
        if data == last {
            return Ok(seen);
        }
    }
}

#[tokio::test]
async fn a_retried_publish_returns_the_first_id_and_is_delivered_once() -> anyhow::Result<()> {
    let other = "[tenants.other]\npublish_key = \"other-key\"\nauth = { mode = \"insecure\" }\n";
    let host = TestHost::start(&format!("{DEMO}{other}")).await?;
    let mut ann = host.connect_user("ann").await?;
    let event = |data: &str, key: Option<&str>| {
        let mut e = json!({ "users": ["ann"], "event": "order", "data": data });
        if let Some(key) = key {
            e["idempotency_key"] = json!(key);
        }
        e
    };
    let first = publish(host.addr, "/v1/publish", &event("first", Some("order-42"))).await?;
    let retry = publish(host.addr, "/v1/publish", &event("retry", Some("order-42"))).await?;
    assert_eq!(retry["id"], first["id"], "the retry answers with the first event's id");
    let batch = json!([
        event("again", Some("order-42")),
        event("b", Some("order-43")),
        event("b-twice", Some("order-43")),
        event("unkeyed", None),
        event("last", None),
    ]);
    let ids = publish(host.addr, "/v1/publish/batch", &batch).await?["ids"].clone();
    assert_eq!(ids[0], first["id"]);
    assert_eq!(ids[1], ids[2], "a key twice in one batch");
    assert_ne!(ids[1], ids[3]);
    assert_eq!(data_until(&mut ann, "last").await?, ["first", "b", "unkeyed", "last"]);
    assert_eq!(host.metric("notify_events_deduplicated_total{tenant=\"demo\"}").await?, 3.0);
    // Keys are per tenant: the same key elsewhere is a new event.
    let (mut bob, _) = host.join("other", "user=bob").await?;
    let (status, res) = Req::post("/v1/publish")
        .key("other-key")
        .body(
            json!({ "users": ["bob"], "event": "order", "data": "other", "idempotency_key": "order-42" })
                .to_string()
                .into(),
        )
        .reply(host.addr)
        .await?;
    assert_eq!(status, 202, "{res}");
    assert_ne!(res["id"], first["id"]);
    assert_eq!(bob.next_event().await?["data"], "other");
    let (status, res) = Req::post("/v1/publish")
        .key("demo-key")
        .body(json!({ "users": ["ann"], "event": "e", "idempotency_key": "has space" }).to_string().into())
        .reply(host.addr)
        .await?;
    assert_eq!((status, res["error"]["field"].clone()), (400, json!("idempotency_key")), "{res}");
    Ok(())
}

#[tokio::test]
async fn every_node_shares_the_keys() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("{DEMO}\n{}", redis.broker_toml());
    let (a, b) = (TestHost::start(&toml).await?, TestHost::start(&toml).await?);
    a.wait_ready(200).await?;
    b.wait_ready(200).await?;
    let mut ann = b.connect_user("ann").await?;
    let keyed = |data: &str| json!({ "users": ["ann"], "event": "e", "data": data, "idempotency_key": "k-1" });
    let first = publish(a.addr, "/v1/publish", &keyed("first")).await?;
    let retry = publish(b.addr, "/v1/publish", &keyed("retry")).await?;
    assert_eq!(retry["id"], first["id"]);
    // The same key through the ingest stream.
    let mut r = redis.conn().await?;
    let _: String = redis::cmd("XADD")
        .arg("notify:demo:ingest")
        .arg("*")
        .arg("event")
        .arg(keyed("ingested").to_string())
        .query_async(&mut r)
        .await?;
    let dedup = "notify_events_deduplicated_total{tenant=\"demo\"}";
    notify_tests::eventually(|| async { Ok(a.metric(dedup).await? + b.metric(dedup).await? >= 2.0) }).await?;
    publish(a.addr, "/v1/publish", &json!({ "users": ["ann"], "event": "e", "data": "last" })).await?;
    assert_eq!(data_until(&mut ann, "last").await?, ["first", "last"]);
    Ok(())
}

#[tokio::test]
async fn an_entry_claimed_from_a_dead_node_is_not_delivered_twice() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut r = redis.conn().await?;
    // Node A may do everything but acknowledge: it reads and hands on, then its XACK fails.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("node-a")
        .arg("on")
        .arg(">node-a-password")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-xack")
        .query_async(&mut r)
        .await?;
    let broker = redis.broker_toml();
    let watching = format!("{DEMO}\n{}ingest = false\n", broker);
    let c = TestHost::start(&watching).await?;
    c.wait_ready(200).await?;
    let mut carol = c.connect_user("carol").await?;
    let no_ack = broker.replace("redis://127.0.0.1", "redis://node-a:node-a-password@127.0.0.1");
    let a = HostProcess::start(host_bin!(), &format!("{DEMO}\n{no_ack}")).await?;
    let body = json!({ "users": ["carol"], "event": "e", "data": "once", "idempotency_key": "pay-7" });
    let _: String = redis::cmd("XADD")
        .arg("notify:demo:ingest")
        .arg("*")
        .arg("event")
        .arg(body.to_string())
        .query_async(&mut r)
        .await?;
    assert_eq!(carol.next_event().await?["data"], "once");
    // A retries its unacknowledged entry, and finds the key taken by its own first pass.
    let dedup = "notify_events_deduplicated_total{tenant=\"demo\"}";
    notify_tests::eventually(|| async { Ok(notify_tests::metric(a.metrics, dedup).await? >= 1.0) }).await?;
    a.signal("KILL")?;
    // B claims the entry A left pending, and acknowledges it without delivering it again.
    let b = TestHost::start(&format!("{DEMO}\n{broker}")).await?;
    b.wait_metric("notify_ingest_claimed_total", |n| n >= 1.0).await?;
    b.wait_metric(dedup, |n| n >= 1.0).await?;
    let pending: redis::streams::StreamPendingReply =
        redis::cmd("XPENDING").arg("notify:demo:ingest").arg("notify").query_async(&mut r).await?;
    assert_eq!(pending.count(), 0, "nothing is left pending");
    publish(c.addr, "/v1/publish", &json!({ "users": ["carol"], "event": "e", "data": "last" })).await?;
    assert_eq!(data_until(&mut carol, "last").await?, ["last"]);
    Ok(())
}
