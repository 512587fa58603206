//! Positions, history and resume in cluster mode: history lives in Redis, appended and
//! published in one script, so a client resumes on any node; a flushed Redis is a new epoch.
//! A stream that never held an event has no keys.

use anyhow::Context as _;
use notify_tests::{Client, DEMO, HostProcess, RedisServer, Req, Resuming, TestHost, host_bin, metric, position};
use serde_json::{Value, json};

async fn two_nodes(redis: &RedisServer) -> anyhow::Result<(TestHost, TestHost)> {
    two_nodes_with(redis, DEMO).await
}

async fn two_nodes_with(redis: &RedisServer, tenants: &str) -> anyhow::Result<(TestHost, TestHost)> {
    let toml = format!("{tenants}\n{}", redis.broker_toml());
    let (a, b) = (TestHost::start(&toml).await?, TestHost::start(&toml).await?);
    a.wait_ready(200).await?;
    b.wait_ready(200).await?;
    Ok((a, b))
}

#[tokio::test]
async fn a_client_resumes_on_another_node_from_redis_history() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (a, b) = two_nodes(&redis).await?;
    let (mut ann, welcome) = a.join("demo", "user=ann").await?;
    assert_eq!(welcome["streams"]["user"]["offset"], 0);
    b.publish_ok(&json!({ "users": ["ann"], "event": "seen", "data": 0 })).await?;
    let seen = ann.next_event().await?;
    assert_eq!(seen["offset"], 1);
    let since = position(&seen)?;
    drop(ann);

    // Published through both nodes while ann is away; one payload needs a 16-bit frame
    // length and one a 64-bit one, which the history script writes itself.
    let (medium, large) = ("m".repeat(300), "l".repeat(70_000));
    for i in 1..=100 {
        let data = match i {
            50 => json!(medium),
            60 => json!(large),
            _ => json!(i),
        };
        let node = if i % 2 == 0 { &a } else { &b };
        node.publish_ok(&json!({ "users": ["ann"], "event": "missed", "data": data })).await?;
    }
    let (mut ann, welcome) = b.join("demo", &format!("user=ann&user_since={since}")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], true);
    assert_eq!(welcome["streams"]["user"]["offset"], 101);
    for i in 1..=100u64 {
        let ev = ann.next_event().await?;
        assert_eq!((ev["event"].as_str(), ev["offset"].as_u64()), (Some("missed"), Some(i + 1)));
        match i {
            50 => assert_eq!(ev["data"], json!(medium)),
            60 => assert_eq!(ev["data"], json!(large)),
            _ => assert_eq!(ev["data"], json!(i)),
        }
    }
    a.publish_ok(&json!({ "users": ["ann"], "event": "live" })).await?;
    let ev = ann.next_event().await?;
    assert_eq!((ev["event"].as_str(), ev["offset"].as_u64()), (Some("live"), Some(102)));

    // Channels resume on subscribe, on any node.
    let mut reader = a.connect_user("reader").await?;
    assert_eq!(reader.subscribe("news").await?["offset"], 0);
    let mut news_epoch = String::new();
    for i in 1..=3 {
        b.publish_ok(&json!({ "channels": ["news"], "event": "headline", "data": i })).await?;
        let ev = reader.next_event().await?;
        assert_eq!(ev["offset"], i);
        news_epoch = ev["epoch"].as_str().context("epoch")?.to_owned();
    }
    drop(reader);
    for i in 4..=6 {
        a.publish_ok(&json!({ "channels": ["news"], "event": "headline", "data": i })).await?;
    }
    let mut reader = b.connect_user("reader").await?;
    let since = json!({ "epoch": news_epoch, "offset": 3 });
    reader.send_json(&json!({ "type": "subscribe", "channel": "news", "since": since })).await?;
    let subscribed = reader.next_json().await?;
    assert_eq!((subscribed["recovered"].as_bool(), subscribed["offset"].as_u64()), (Some(true), Some(6)));
    for i in 4..=6 {
        let ev = reader.next_event().await?;
        assert_eq!((ev["data"].as_u64(), ev["offset"].as_u64()), (Some(i), Some(i)));
    }
    Ok(())
}

#[tokio::test]
async fn a_flushed_redis_starts_a_new_epoch_and_resuming_is_not_recovered_but_replays_it() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut r = redis.conn().await?;
    let (a, b) = two_nodes(&redis).await?;
    let (mut ann, _) = a.join("demo", "user=ann").await?;
    let mut last = Value::Null;
    for i in 1..=3 {
        a.publish_ok(&json!({ "users": ["ann"], "event": "before", "data": i })).await?;
        last = ann.next_event().await?;
    }
    let since = position(&last)?;
    drop(ann);

    redis::cmd("FLUSHALL").query_async::<()>(&mut r).await?;
    for i in 1..=2 {
        b.publish_ok(&json!({ "users": ["ann"], "event": "after", "data": i })).await?;
    }
    let (mut ann, welcome) = b.join("demo", &format!("user=ann&user_since={since}")).await?;
    let user = &welcome["streams"]["user"];
    assert_eq!(user["recovered"], false, "{welcome}");
    assert_ne!(user["epoch"], last["epoch"]);
    assert_eq!(user["offset"], 2);
    // What the new epoch holds is replayed: the client's history is gone, this one is new.
    for i in 1..=2 {
        let ev = ann.next_event().await?;
        assert_eq!(
            (ev["event"].clone(), ev["data"].clone(), ev["offset"].clone()),
            (json!("after"), json!(i), json!(i))
        );
    }
    // Live events continue in the new epoch.
    a.publish_ok(&json!({ "users": ["ann"], "event": "live" })).await?;
    let ev = ann.next_event().await?;
    assert_eq!(
        (ev["event"].clone(), ev["epoch"].clone(), ev["offset"].clone()),
        (json!("live"), user["epoch"].clone(), json!(3))
    );
    Ok(())
}

#[tokio::test]
async fn a_resume_that_cannot_read_history_is_sent_back_and_recovers_later() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("{DEMO}\n{}", redis.broker_toml()).replace("timeout = \"2s\"", "timeout = \"1s\"");
    let host = TestHost::start(&toml).await?;
    host.wait_ready(200).await?;
    let (mut ann, _) = host.join("demo", "user=ann").await?;
    host.publish_ok(&json!({ "users": ["ann"], "event": "seen" })).await?;
    let since = position(&ann.next_event().await?)?;
    drop(ann);
    host.publish_ok(&json!({ "users": ["ann"], "event": "missed" })).await?;

    // Redis answers nothing: what ann missed is out of reach for now, not gone. She is sent
    // back to retry later, not welcomed with `recovered: false`.
    redis.signal("STOP")?;
    let mut ann = Client::connect(&host.ws_url("demo", &format!("user=ann&user_since={since}")), &[]).await?;
    let first = ann.next_json().await?;
    assert_eq!(
        (first["type"].as_str(), first["reason"].as_str()),
        (Some("reconnect"), Some("history unavailable")),
        "{first}"
    );
    assert!(first["retry_after_ms"].as_u64().is_some_and(|ms| ms <= 2000), "{first}");
    assert_eq!(ann.close_code().await?, 1013);
    assert!(host.metric("notify_history_errors_total{tenant=\"demo\"}").await? >= 1.0);
    // A first connection has nothing to resume, so it is still welcomed.
    let (_, welcome) = host.join("demo", "user=bob").await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], false, "{welcome}");

    redis.signal("CONT")?;
    host.wait_ready(200).await?;
    let (mut ann, welcome) = host.join("demo", &format!("user=ann&user_since={since}")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], true, "{welcome}");
    assert_eq!(ann.next_event().await?["event"], "missed");
    Ok(())
}

#[tokio::test]
async fn trimmed_redis_history_is_not_recovered() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!(
        "[tenants.demo]\npublish_key = \"demo-key\"\nauth = {{ mode = \"insecure\" }}\nhistory = {{ size = 5 }}\n{}",
        redis.broker_toml()
    );
    let host = TestHost::start(&toml).await?;
    host.wait_ready(200).await?;
    for i in 1..=10 {
        host.publish_ok(&json!({ "users": ["ann"], "event": "e", "data": i })).await?;
    }
    let (ann, welcome) = host.join("demo", "user=ann").await?;
    let epoch = welcome["streams"]["user"]["epoch"].as_str().context("epoch")?.to_owned();
    drop(ann);
    // Only offsets 6..=10 are kept: resuming after 2 misses 3..=5 and says so, then gets
    // what is kept, in order.
    let (mut ann, welcome) = host.join("demo", &format!("user=ann&user_since={epoch}:2")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], false);
    for offset in 6..=10 {
        assert_eq!(ann.next_event().await?["offset"], offset);
    }
    drop(ann);
    let (_, welcome) = host.join("demo", &format!("user=ann&user_since={epoch}:5")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], true);
    Ok(())
}

#[tokio::test]
async fn clients_resume_when_their_node_lost_its_subscriptions() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut r = redis.conn().await?;
    // History holds all 300 events, since the client reads only after they were published.
    let tenant =
        "[tenants.demo]\npublish_key = \"demo-key\"\nauth = { mode = \"insecure\" }\nhistory = { size = 1000 }\n";
    let (a, b) = two_nodes_with(&redis, tenant).await?;
    let mut ann = Resuming::connect(a.addr, "ann").await?;
    // Redis drops every pub/sub connection (as it does to subscribers over their output
    // buffer limit) while events keep coming: node A misses some live, and tells its clients
    // to resume once it has resubscribed.
    for i in 0..300 {
        if i == 100 {
            redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async::<()>(&mut r).await?;
        }
        b.publish_ok(&json!({ "users": ["ann"], "event": "seq", "data": i })).await?;
    }
    for i in 0..300 {
        let ev = ann.next_event().await?;
        assert_eq!((ev["data"].as_u64(), ev["offset"].as_u64()), (Some(i), Some(i + 1)));
    }
    assert!(a.metric("notify_broker_resyncs_total").await? >= 1.0);
    assert!(ann.reconnects >= 1 && ann.recovered.iter().all(|r| *r), "{:?}", ann.recovered);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_redis_disconnects_for_its_output_buffer_resumes_its_clients() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut r = redis.conn().await?;
    // A pub/sub client more than 256 KiB behind is disconnected at once.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 262144 131072 1")
        .query_async::<()>(&mut r)
        .await?;
    let tenant =
        "[tenants.demo]\npublish_key = \"demo-key\"\nauth = { mode = \"insecure\" }\nhistory = { size = 2000 }\n";
    let toml = format!("{tenant}\n{}", redis.broker_toml());
    let a = HostProcess::start(host_bin!(), &toml).await?;
    let b = TestHost::start(&toml).await?;
    b.wait_ready(200).await?;
    let mut ann = Resuming::connect(a.addr, "ann").await?;
    // Node A is subscribed to ann's stream once an event reaches her through it.
    b.publish_ok(&json!({ "users": ["ann"], "event": "seq", "data": 0 })).await?;
    assert_eq!(ann.next_event().await?["data"], 0);

    // A stops reading (its process is stopped) while 10 MB of events go out: more than the
    // socket buffers hold, so Redis's output buffer for A's subscription passes the limit.
    a.signal("STOP")?;
    let pad = "x".repeat(10_000);
    let published = async {
        for i in 1..=1000 {
            b.publish_ok(&json!({ "users": ["ann"], "event": "seq", "data": {"i": i, "pad": pad} })).await?;
        }
        anyhow::Ok(())
    }
    .await;
    a.signal("CONT")?;
    published?;

    for i in 1..=1000 {
        let ev = ann.next_event().await?;
        assert_eq!((ev["data"]["i"].as_u64(), ev["offset"].as_u64()), (Some(i), Some(i + 1)), "in order, once");
    }
    assert!(metric(a.metrics, "notify_broker_resyncs_total").await? >= 1.0, "Redis dropped A's subscription");
    assert!(ann.reconnects >= 1 && ann.recovered.iter().all(|r| *r), "{:?}", ann.recovered);
    Ok(())
}

/// The keys of Redis that name one of `user`'s streams (history, presence hashes aside).
async fn keys_of(r: &mut redis::aio::MultiplexedConnection, user: &str) -> anyhow::Result<Vec<String>> {
    Ok(redis::cmd("KEYS").arg(format!("*:u:{user}*")).query_async(r).await?)
}

#[tokio::test]
async fn users_who_never_received_an_event_leave_no_keys_in_redis_and_still_resume() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut r = redis.conn().await?;
    let acks =
        "[tenants.demo]\npublish_key = \"demo-key\"\nauth = { mode = \"insecure\" }\nhistory = { acks = true }\n";
    let (a, b) = two_nodes_with(&redis, acks).await?;
    let (mut quiet, welcome) = a.join("demo", "user=quiet").await?;
    let look = welcome["streams"]["user"].clone();
    assert_eq!((look["offset"].as_u64(), look["recovered"].as_bool()), (Some(0), Some(true)), "{welcome}");
    // Acking the look and asking for unread counts keep nothing either.
    let epoch = look["epoch"].as_str().context("epoch")?.to_owned();
    quiet.send_json(&json!({ "type": "ack", "epoch": epoch, "offset": 0 })).await?;
    assert_eq!(quiet.next_json().await?["type"], "acked");
    let (status, unread) = Req::get("/v1/users/quiet/unread").key("demo-key").reply(b.addr).await?;
    assert_eq!((status, unread["unread"].as_u64()), (200, Some(0)), "{unread}");
    drop(quiet);
    let (_, again) = b.join("demo", &format!("user=quiet&user_since={epoch}:0")).await?;
    assert_eq!(again["streams"]["user"]["recovered"], true);
    assert_eq!(keys_of(&mut r, "quiet").await?, Vec::<String>::new());

    // An event while away creates the stream; resuming from the look, on the other node,
    // replays it as nothing missed.
    b.publish_ok(&json!({ "users": ["quiet"], "event": "while-away" })).await?;
    assert_eq!(keys_of(&mut r, "quiet").await?.len(), 2);
    let (mut quiet, welcome) = b.join("demo", &format!("user=quiet&user_since={epoch}:0")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], true, "{welcome}");
    let ev = quiet.next_event().await?;
    assert_eq!((ev["event"].clone(), ev["offset"].clone()), (json!("while-away"), json!(1)));

    // Acking the look now is taken as offset 0 of the stream: it moves nothing.
    quiet.send_json(&json!({ "type": "ack", "epoch": epoch, "offset": 0 })).await?;
    let acked = quiet.next_json().await?;
    assert_eq!((acked["type"].as_str(), acked["unread"].as_u64()), (Some("acked"), Some(1)), "{acked}");

    // The look covers a stream created from its second on, for less than a stream's
    // lifetime (ttl 10 minutes plus a day, less a second for rounding) after it.
    let looked = u64::from_str_radix(&epoch[16..], 16)?;
    let lifetime = 600 + 24 * 3600 - 1;
    for (created, covered) in
        [(looked - 1, false), (looked, true), (looked + lifetime - 1, true), (looked + lifetime, false)]
    {
        redis::cmd("HSET")
            .arg("{notify:demo:u:quiet}:pos")
            .arg("created")
            .arg(created)
            .query_async::<()>(&mut r)
            .await?;
        let (_, welcome) = a.join("demo", &format!("user=quiet&user_since={epoch}:0")).await?;
        assert_eq!(welcome["streams"]["user"]["recovered"], covered, "created {created}, looked {looked}");
    }

    // A look from before a flush is not taken for one of the new store.
    let (_, welcome) = a.join("demo", "user=later").await?;
    let since = format!("{}:0", welcome["streams"]["user"]["epoch"].as_str().context("epoch")?);
    a.publish_ok(&json!({ "users": ["later"], "event": "lost" })).await?;
    redis::cmd("FLUSHALL").query_async::<()>(&mut r).await?;
    // Scripts sent by hash are sent again when Redis forgot them.
    redis::cmd("SCRIPT").arg("FLUSH").query_async::<()>(&mut r).await?;
    a.publish_ok(&json!({ "users": ["later"], "event": "after" })).await?;
    let (mut later, welcome) = b.join("demo", &format!("user=later&user_since={since}")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], false, "{welcome}");
    assert_eq!(later.next_event().await?["event"], "after");
    Ok(())
}
