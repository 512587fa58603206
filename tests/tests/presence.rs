//! Presence: per-user connection counts and online status, on one node and across nodes, and
//! the debounced online/offline stream in Redis.

use std::time::Duration;

use anyhow::Context as _;
use notify_tests::{Client, DEMO, HostProcess, RedisServer, Req, STEP, TestHost, host_bin};
use serde_json::{Value, json};

async fn presence(host: &TestHost, user: &str) -> anyhow::Result<Value> {
    let (status, body) = Req::get(format!("/v1/presence/{user}")).key("demo-key").reply(host.addr).await?;
    anyhow::ensure!(status == 200, "presence returned {status}: {body}");
    Ok(body)
}

/// Polls until the user's connection count seen by `host` is `want`.
async fn wait_connections(host: &TestHost, user: &str, want: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let p = presence(host, user).await?;
        if p["connections"] == want {
            assert_eq!(p["online"], want > 0);
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{user} stuck at {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `(type, user)` pairs of the tenant's presence stream, once it holds `n` entries.
async fn presence_events(redis: &RedisServer, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut conn = redis.conn().await?;
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let entries: Vec<(String, Vec<(String, String)>)> =
            redis::cmd("XRANGE").arg("notify:demo:presence").arg("-").arg("+").query_async(&mut conn).await?;
        if entries.len() >= n {
            return entries
                .into_iter()
                .map(|(_, fields)| {
                    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone()).context("field");
                    Ok((get("type")?, get("user")?))
                })
                .collect();
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "presence stream has {} entries", entries.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn presence_on_one_node() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    assert_eq!(presence(&host, "ann").await?, json!({ "user": "ann", "online": false, "connections": 0 }));
    let phone = host.connect_user("ann").await?;
    let laptop = host.connect_user("ann").await?;
    assert_eq!(presence(&host, "ann").await?, json!({ "user": "ann", "online": true, "connections": 2 }));
    drop((phone, laptop));
    wait_connections(&host, "ann", 0).await?;
    let (status, _) = Req::get("/v1/presence/ann").key("wrong-key").reply(host.addr).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn presence_across_nodes_with_debounced_offline() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("{DEMO}\n{}", redis.broker_toml())
        .replace("presence_debounce = \"300ms\"", "presence_debounce = \"2s\"");
    let a = TestHost::start(&toml).await?;
    let b = TestHost::start(&toml).await?;

    let on_a = a.connect_user("dave").await?;
    let on_b = b.connect_user("dave").await?;
    wait_connections(&a, "dave", 2).await?;
    wait_connections(&b, "dave", 2).await?;
    drop(on_b);
    wait_connections(&a, "dave", 1).await?;
    // Still connected on A: no offline event.
    drop(on_a);
    wait_connections(&b, "dave", 0).await?;
    assert_eq!(
        presence_events(&redis, 2).await?,
        [("online".into(), "dave".into()), ("offline".into(), "dave".into())]
    );

    // A quick reconnect (within the debounce) is neither offline nor online.
    let first = b.connect_user("erin").await?;
    drop(first);
    let second = a.connect_user("erin").await?;
    wait_connections(&b, "erin", 1).await?;
    drop(second);
    let events = presence_events(&redis, 4).await?;
    assert_eq!(events[2..], [("online".into(), "erin".into()), ("offline".into(), "erin".into())]);
    Ok(())
}

#[tokio::test]
async fn a_killed_node_is_swept_and_its_users_reported_offline() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("{DEMO}\n{}", redis.broker_toml());
    let doomed = HostProcess::start(host_bin!(), &toml).await?;
    let survivor = TestHost::start(&toml).await?;

    let url = format!("ws://{}/v1/ws/demo?user=fred", doomed.addr);
    let mut fred = Client::connect(&url, &[]).await?;
    assert_eq!(fred.next_json().await?["type"], "welcome");
    wait_connections(&survivor, "fred", 1).await?;
    assert_eq!(presence_events(&redis, 1).await?, [("online".into(), "fred".into())]);

    // SIGKILL: no drain, no goodbye. Once its heartbeat is older than node_timeout, fred's
    // connection stops counting and the survivor reports him offline.
    doomed.signal("KILL")?;
    wait_connections(&survivor, "fred", 0).await?;
    assert_eq!(presence_events(&redis, 2).await?[1], ("offline".into(), "fred".into()));
    Ok(())
}

#[tokio::test]
async fn many_users_at_once_are_counted_and_rewritten_after_redis_lost_them() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let host = TestHost::start(&format!("{DEMO}\n{}", redis.broker_toml())).await?;
    host.wait_ready(200).await?;
    // Connecting all at once: the node reports them to Redis in batches.
    let users: Vec<String> = (0..600).map(|i| format!("u{i}")).collect();
    let connects = users.iter().chain([&users[7]]).map(|u| host.connect_user(u));
    let clients = futures_util::future::try_join_all(connects).await?;
    wait_connections(&host, "u7", 2).await?;
    wait_connections(&host, "u599", 1).await?;
    let onlines = |events: &[(String, String)]| {
        let users: std::collections::BTreeSet<&str> =
            events.iter().filter(|(t, _)| t == "online").map(|(_, u)| u.as_str()).collect();
        (events.len(), users.len())
    };
    assert_eq!(onlines(&presence_events(&redis, 600).await?), (600, 600), "each came online once");

    // Redis loses everything: the node notices at its next heartbeat and rewrites its counts,
    // reporting its users online again.
    redis::cmd("FLUSHALL").query_async::<()>(&mut redis.conn().await?).await?;
    wait_connections(&host, "u7", 2).await?;
    wait_connections(&host, "u599", 1).await?;
    assert_eq!(onlines(&presence_events(&redis, 600).await?), (600, 600));

    drop(clients);
    wait_connections(&host, "u7", 0).await?;
    wait_connections(&host, "u599", 0).await?;
    let events = presence_events(&redis, 1200).await?;
    assert!(events[600..].iter().all(|(t, _)| t == "offline"), "{:?}", &events[600..]);
    Ok(())
}
