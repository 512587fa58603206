//! Cluster mode: three hosts over one private `redis-server` behave as one system.

use std::collections::BTreeSet;

use anyhow::Context as _;
use notify_tests::{DEMO, RedisServer, Resuming, TestHost, eventually};
use redis::aio::MultiplexedConnection;
use serde_json::json;

async fn cluster(redis: &RedisServer, n: usize) -> anyhow::Result<Vec<TestHost>> {
    let toml = format!("{DEMO}\n{}", redis.broker_toml());
    let mut hosts = Vec::new();
    for _ in 0..n {
        hosts.push(TestHost::start(&toml).await?);
    }
    for h in &hosts {
        h.wait_ready(200).await?;
    }
    Ok(hosts)
}

async fn numsub(conn: &mut MultiplexedConnection, channel: &str) -> anyhow::Result<i64> {
    let (_, n): (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(conn).await?;
    Ok(n)
}

async fn xadd(conn: &mut MultiplexedConnection, body: &str) -> anyhow::Result<String> {
    Ok(redis::cmd("XADD").arg("notify:demo:ingest").arg("*").arg("event").arg(body).query_async(conn).await?)
}

#[tokio::test]
async fn three_nodes_behave_as_one() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut r = redis.conn().await?;
    let hosts = cluster(&redis, 3).await?;
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);

    // A user on node B receives what is published on node A.
    let mut bob = b.connect_user("bob").await?;
    a.publish_ok(&json!({ "users": ["bob"], "event": "hello", "data": { "n": 1 } })).await?;
    let ev = bob.next_event().await?;
    assert_eq!(
        (ev["event"].clone(), ev["user"].clone(), ev["data"]["n"].clone()),
        (json!("hello"), json!("bob"), json!(1))
    );

    // A channel spans nodes.
    let mut subs = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let mut client = h.connect_user(&format!("reader-{i}")).await?;
        assert_eq!(client.subscribe("news").await?["type"], "subscribed");
        subs.push(client);
    }
    c.publish_ok(&json!({ "channels": ["news"], "event": "headline" })).await?;
    for client in &mut subs {
        let ev = client.next_event().await?;
        assert_eq!((ev["event"].clone(), ev["channel"].clone()), (json!("headline"), json!("news")));
    }

    // Interest: only nodes with local subscribers subscribe to a stream.
    assert_eq!(numsub(&mut r, "notify:demo:u:bob").await?, 1);
    assert_eq!(numsub(&mut r, "notify:demo:c:news").await?, 3);
    assert_eq!(numsub(&mut r, "notify:demo:u:nobody").await?, 0);
    assert_eq!(numsub(&mut r, "notify:demo:b").await?, 3);
    // Node C has no connection of bob: of five events for bob and one for the channel, it
    // receives exactly the channel's (it arrives last, after every event for bob was routed).
    let before = c.metric("notify_broker_received_total").await?;
    for i in 0..5 {
        a.publish_ok(&json!({ "users": ["bob"], "event": "private", "data": i })).await?;
    }
    a.publish_ok(&json!({ "channels": ["news"], "event": "barrier" })).await?;
    for i in 0..5 {
        assert_eq!(bob.next_event().await?["data"], i);
    }
    assert_eq!(subs[2].next_event().await?["event"], "barrier");
    assert_eq!(c.metric("notify_broker_received_total").await? - before, 1.0);

    // Durable publishing through a Redis stream, read by one node of the group.
    let entry = xadd(&mut r, r#"{"users":["bob"],"event":"from-stream","data":{"via":"xadd"}}"#).await?;
    let ev = bob.next_event().await?;
    assert_eq!((ev["event"].clone(), ev["id"].clone()), (json!("from-stream"), json!(format!("s-{entry}"))));
    let mut processed = 0.0;
    for h in &hosts {
        processed += h.metric("notify_ingest_stream_entries_total").await?;
    }
    assert_eq!(processed, 1.0, "exactly one node processed the entry");

    // An invalid entry goes to the dead-letter stream with the error, and is acknowledged.
    let bad = xadd(&mut r, r#"{"users":["bob"],"event":""}"#).await?;
    eventually(|| {
        let mut r = r.clone();
        async move { Ok(redis::cmd("XLEN").arg("notify:demo:dead").query_async::<i64>(&mut r).await? == 1) }
    })
    .await?;
    let dead: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("notify:demo:dead").arg("-").arg("+").query_async(&mut r).await?;
    let fields: std::collections::HashMap<_, _> = dead[0].1.iter().cloned().collect();
    assert_eq!(fields["entry"], bad);
    assert_eq!(fields["source"], "ingest");
    assert!(fields["error"].contains("event"), "error names the field: {}", fields["error"]);
    eventually(|| {
        let mut r = r.clone();
        async move {
            let pending: (i64, redis::Value, redis::Value, redis::Value) =
                redis::cmd("XPENDING").arg("notify:demo:ingest").arg("notify").query_async(&mut r).await?;
            Ok(pending.0 == 0)
        }
    })
    .await?;

    // Fire-and-forget publishing through a pub/sub channel, processed by the lease holder.
    eventually(|| {
        let mut r = r.clone();
        async move { Ok(numsub(&mut r, "notify:demo:publish").await? == 1) }
    })
    .await?;
    let _: i64 = redis::cmd("PUBLISH")
        .arg("notify:demo:publish")
        .arg(r#"{"users":["bob"],"event":"fire-and-forget"}"#)
        .query_async(&mut r)
        .await?;
    assert_eq!(bob.next_event().await?["event"], "fire-and-forget");
    let _: i64 = redis::cmd("PUBLISH").arg("notify:demo:publish").arg("not json").query_async(&mut r).await?;
    eventually(|| {
        let mut r = r.clone();
        async move {
            let n: i64 = redis::cmd("XLEN").arg("notify:demo:dead").query_async(&mut r).await?;
            Ok(n == 2)
        }
    })
    .await?;

    // When bob leaves, node B unsubscribes after the delay; the channel stays.
    drop(bob);
    eventually(|| {
        let mut r = r.clone();
        async move { Ok(numsub(&mut r, "notify:demo:u:bob").await? == 0) }
    })
    .await?;
    assert_eq!(numsub(&mut r, "notify:demo:c:news").await?, 3);
    Ok(())
}

#[tokio::test]
async fn redis_restart_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let hosts = cluster(&redis, 2).await?;
    let (a, b) = (&hosts[0], &hosts[1]);
    // Clients that resume when told to: after the outage, node B tells its clients to
    // reconnect and resume, since live events may have passed it by.
    let mut bob = Resuming::connect(b.addr, "bob").await?;
    let mut r = redis.conn().await?;
    let mut expected = BTreeSet::new();
    for i in 0..5 {
        let body = json!({ "users": ["bob"], "event": "before", "data": i }).to_string();
        expected.insert(format!("s-{}", xadd(&mut r, &body).await?));
    }
    // Killed with entries possibly still unread: they are on disk and read after the restart.
    redis.kill()?;

    // Local connections stay up; publishing reports the outage; nodes report not ready.
    let (status, body) = a.publish("demo-key", &json!({ "users": ["bob"], "event": "lost" })).await?;
    assert_eq!((status, body["error"]["code"].clone()), (503, json!("broker_unavailable")), "{body}");
    a.wait_ready(503).await?;
    b.wait_ready(503).await?;
    // A client connecting during the outage is served and its streams are subscribed on
    // reconnect.
    let mut late = Resuming::connect(b.addr, "late").await?;

    redis.restart().await?;
    a.wait_ready(200).await?;
    b.wait_ready(200).await?;
    let mut r = redis.conn().await?;
    for i in 0..5 {
        let body = json!({ "users": ["bob"], "event": "after", "data": i }).to_string();
        expected.insert(format!("s-{}", xadd(&mut r, &body).await?));
    }
    let mut seen = BTreeSet::new();
    while seen.len() < expected.len() {
        let ev = bob.next_event().await?;
        let id = ev["id"].as_str().context("id")?.to_owned();
        assert!(expected.contains(&id), "unexpected event {ev}");
        seen.insert(id);
    }
    a.publish_ok(&json!({ "users": ["bob"], "event": "resumed" })).await?;
    loop {
        // At-least-once: a duplicate of a stream entry may precede it.
        let ev = bob.next_event().await?;
        if ev["event"] == "resumed" {
            break;
        }
        assert!(expected.contains(ev["id"].as_str().unwrap_or_default()), "unexpected event {ev}");
    }
    // `late` connected while history was unreadable, so it has no position to resume
    // from: events reach it once it has reconnected.
    late.wait_reconnects(1).await?;
    a.publish_ok(&json!({ "users": ["late"], "event": "welcome-back" })).await?;
    assert_eq!(late.next_event().await?["event"], "welcome-back");
    assert!(a.metric("notify_broker_reconnects_total").await? >= 1.0);
    assert!(b.metric("notify_broker_resyncs_total").await? >= 1.0);
    // Redis kept its history (fsynced AOF), so bob resumed where he was.
    assert!(bob.reconnects >= 1 && bob.recovered.iter().all(|r| *r), "{:?}", bob.recovered);
    Ok(())
}

#[tokio::test]
async fn unresponsive_redis_is_detected_and_survived() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let hosts = cluster(&redis, 2).await?;
    let (a, b) = (&hosts[0], &hosts[1]);
    let mut gil = Resuming::connect(b.addr, "gil").await?;
    let mut watcher = b.connect_user("watcher").await?;

    // Stopped, Redis keeps its sockets open and answers nothing.
    redis.signal("STOP")?;
    let (status, body) = a.publish("demo-key", &json!({ "users": ["gil"], "event": "stalled" })).await?;
    assert_eq!((status, body["error"]["code"].clone()), (503, json!("broker_unavailable")), "{body}");
    a.wait_ready(503).await?;
    b.wait_ready(503).await?;
    watcher.send_json(&json!({ "type": "ping" })).await?;
    assert_eq!(watcher.next_json().await?["type"], "pong", "local connections are still served");

    redis.signal("CONT")?;
    a.wait_ready(200).await?;
    b.wait_ready(200).await?;
    a.publish_ok(&json!({ "users": ["gil"], "event": "back" })).await?;
    // A publish that timed out is ambiguous: Redis may still carry it once it wakes up.
    let mut ev = gil.next_event().await?;
    if ev["event"] == "stalled" {
        ev = gil.next_event().await?;
    }
    assert_eq!(ev["event"], "back");
    Ok(())
}

#[tokio::test]
async fn a_redis_that_stalls_for_a_while_does_not_send_clients_away() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let hosts = cluster(&redis, 2).await?;
    let (a, b) = (&hosts[0], &hosts[1]);
    let mut watcher = b.connect_user("watcher").await?;

    // Longer than `broker.timeout` (2 s), shorter than the patience of an open pub/sub
    // connection: pings go unanswered meanwhile, and nothing is lost on the open connection.
    redis.signal("STOP")?;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    redis.signal("CONT")?;
    a.wait_ready(200).await?;
    b.wait_ready(200).await?;

    a.publish_ok(&json!({ "users": ["watcher"], "event": "after" })).await?;
    let frame = watcher.next_json().await?;
    assert_eq!((frame["type"].clone(), frame["event"].clone()), (json!("event"), json!("after")), "{frame}");
    assert_eq!(b.metric("notify_broker_resyncs_total").await?, 0.0);
    assert_eq!(b.metric("notify_broker_reconnects_total").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn entries_left_pending_by_a_dead_node_are_claimed() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut r = redis.conn().await?;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("notify:demo:ingest")
        .arg("notify")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut r)
        .await?;
    let mut expected = BTreeSet::new();
    for i in 0..3 {
        let body = json!({ "users": ["carol"], "event": "orphan", "data": i }).to_string();
        expected.insert(format!("s-{}", xadd(&mut r, &body).await?));
    }
    // A node reads the entries and dies before acknowledging them.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("notify")
        .arg("dead-node")
        .arg("STREAMS")
        .arg("notify:demo:ingest")
        .arg(">")
        .query_async(&mut r)
        .await?;
    let hosts = cluster(&redis, 1).await?;
    let mut carol = hosts[0].connect_user("carol").await?;
    let mut seen = BTreeSet::new();
    while seen.len() < expected.len() {
        let ev = carol.next_event().await?;
        assert_eq!(ev["event"], "orphan");
        seen.insert(ev["id"].as_str().context("id")?.to_owned());
    }
    assert_eq!(seen, expected);
    assert_eq!(hosts[0].metric("notify_ingest_claimed_total").await?, 3.0);
    Ok(())
}

/// Calls of one Redis command so far (INFO commandstats).
async fn calls(conn: &mut MultiplexedConnection, command: &str) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
    let prefix = format!("cmdstat_{command}:calls=");
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(Ok(0), str::parse)?)
}

#[tokio::test]
async fn connection_churn_does_not_become_subscription_churn() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut r = redis.conn().await?;
    let toml =
        format!("{DEMO}\n{}", redis.broker_toml()).replace("unsubscribe_delay = \"1s\"", "unsubscribe_delay = \"60s\"");
    let host = TestHost::start(&toml).await?;
    host.wait_ready(200).await?;
    // The node also subscribes to the tenant's publish channel once it holds the ingest
    // lease, which may come just after it is ready: count from then on.
    notify_tests::eventually(|| {
        let mut r = r.clone();
        async move {
            let (_, n): (String, i64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg("notify:demo:publish").query_async(&mut r).await?;
            Ok(n == 1)
        }
    })
    .await?;
    let (subscribes, unsubscribes) = (calls(&mut r, "subscribe").await?, calls(&mut r, "unsubscribe").await?);
    for _ in 0..20 {
        let mut c = host.connect_user("flaky").await?;
        assert_eq!(c.subscribe("room").await?["type"], "subscribed");
        drop(c);
    }
    // One SUBSCRIBE for the user, the broadcast and the channel at the first connection (two
    // commands at most: the channel is subscribed when the client asks); none after that.
    let more = calls(&mut r, "subscribe").await? - subscribes;
    assert!((1..=2).contains(&more), "{more} SUBSCRIBE commands for 20 connections");
    assert_eq!(calls(&mut r, "unsubscribe").await?, unsubscribes);
    Ok(())
}
