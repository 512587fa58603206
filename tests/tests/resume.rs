//! Positions, history and resume (memory broker): a client that reconnects with its last
//! positions gets exactly what it missed, in order, then live events; trimmed history or
//! another epoch is reported as `recovered: false`, with what history still holds replayed.

use anyhow::Context as _;
use notify_tests::{Client, DEMO, Req, TestHost, position};
use serde_json::json;

#[tokio::test]
async fn reconnect_with_since_replays_exactly_what_was_missed() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let (mut ann, welcome) = host.join("demo", "user=ann").await?;
    assert_eq!(welcome["streams"]["user"]["offset"], 0);
    host.publish_ok(&json!({ "users": ["ann"], "event": "seen", "data": 0 })).await?;
    let seen = ann.next_event().await?;
    assert_eq!(seen["offset"], 1);
    let since = position(&seen)?;
    drop(ann);

    for i in 1..=100 {
        host.publish_ok(&json!({ "users": ["ann"], "event": "missed", "data": i })).await?;
    }
    let (mut ann, welcome) = host.join("demo", &format!("user=ann&user_since={since}")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], true);
    assert_eq!(welcome["streams"]["user"]["offset"], 101);
    for i in 1..=100 {
        let ev = ann.next_event().await?;
        assert_eq!(
            (ev["event"].clone(), ev["data"].clone(), ev["offset"].clone()),
            (json!("missed"), json!(i), json!(i + 1))
        );
    }
    host.publish_ok(&json!({ "users": ["ann"], "event": "live" })).await?;
    let ev = ann.next_event().await?;
    assert_eq!((ev["event"].clone(), ev["offset"].clone()), (json!("live"), json!(102)));
    Ok(())
}

#[tokio::test]
async fn a_user_offline_during_publishing_gets_everything_at_the_next_connect() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    // The client learned its position from an earlier session's welcome (nothing yet).
    let (first, welcome) = host.join("demo", "user=olga").await?;
    let epoch = welcome["streams"]["user"]["epoch"].as_str().context("epoch")?.to_owned();
    drop(first);
    for i in 0..10 {
        host.publish_ok(&json!({ "users": ["olga"], "event": "while-offline", "data": i })).await?;
    }
    let (mut olga, welcome) = host.join("demo", &format!("user=olga&user_since={epoch}:0")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], true);
    for i in 0..10 {
        assert_eq!(olga.next_event().await?["data"], i);
    }
    Ok(())
}

#[tokio::test]
async fn trimmed_history_or_another_epoch_is_not_recovered() -> anyhow::Result<()> {
    let toml = format!("{DEMO}history = {{ size = 5 }}\n");
    let host = TestHost::start(&toml).await?;
    let (mut ted, _) = host.join("demo", "user=ted").await?;
    host.publish_ok(&json!({ "users": ["ted"], "event": "first" })).await?;
    let first = ted.next_event().await?;
    assert_eq!(first["offset"], 1);
    let epoch = first["epoch"].as_str().context("epoch")?.to_owned();
    drop(ted);
    for i in 0..10 {
        host.publish_ok(&json!({ "users": ["ted"], "event": "later", "data": i })).await?;
    }
    // Only offsets 7..=11 are kept: resuming after 1 cannot be complete.
    let (mut ted, welcome) = host.join("demo", &format!("user=ted&user_since={epoch}:1")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], false);
    assert_eq!(ted.next_event().await?["offset"], 7, "what history still has is replayed");
    drop(ted);
    let (mut ted, welcome) = host.join("demo", "user=ted&user_since=0123456789abcdef:3").await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], false, "another epoch");
    assert_eq!(ted.next_event().await?["offset"], 7, "another epoch gets everything history has");
    drop(ted);
    let refused = Client::try_connect(&host.ws_url("demo", "user=ted&user_since=nonsense"), &[]).await?;
    let refused = refused.err().context("a malformed position is refused")?;
    assert_eq!(refused.status, 400);
    Ok(())
}

#[tokio::test]
async fn channel_resume_on_subscribe() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let (mut cy, _) = host.join("demo", "user=cy").await?;
    cy.subscribe("news").await?;
    host.publish_ok(&json!({ "channels": ["news"], "event": "one" })).await?;
    let since = cy.next_event().await?;
    drop(cy);
    for i in 0..3 {
        host.publish_ok(&json!({ "channels": ["news"], "event": "missed", "data": i })).await?;
    }
    let (mut cy, _) = host.join("demo", "user=cy").await?;
    cy.send_json(&json!({ "type": "subscribe", "channel": "news", "since": { "epoch": since["epoch"], "offset": since["offset"] } }))
        .await?;
    let subscribed = cy.next_json().await?;
    assert_eq!(
        (subscribed["type"].clone(), subscribed["recovered"].clone(), subscribed["offset"].clone()),
        (json!("subscribed"), json!(true), json!(4))
    );
    for i in 0..3 {
        let ev = cy.next_event().await?;
        assert_eq!((ev["channel"].clone(), ev["data"].clone()), (json!("news"), json!(i)));
    }
    host.publish_ok(&json!({ "broadcast": true, "event": "live" })).await?;
    let ev = cy.next_event().await?;
    assert_eq!((ev["event"].clone(), ev["broadcast"].clone()), (json!("live"), json!(true)));
    Ok(())
}

#[tokio::test]
async fn a_replay_larger_than_the_send_queue_is_a_catch_up_not_a_slow_client() -> anyhow::Result<()> {
    let toml = format!("{DEMO}history = {{ size = 500 }}\n[connections]\nsend_queue_frames = 16\n");
    let host = TestHost::start(&toml).await?;
    let (dee, welcome) = host.join("demo", "user=dee").await?;
    let epoch = welcome["streams"]["user"]["epoch"].as_str().context("epoch")?.to_owned();
    drop(dee);
    let batch: Vec<_> = (0..400).map(|i| json!({ "users": ["dee"], "event": "e", "data": i })).collect();
    let (status, body) =
        Req::post("/v1/publish/batch").key("demo-key").body(json!(batch).to_string().into()).reply(host.addr).await?;
    assert_eq!(status, 202, "{body}");
    let (mut dee, welcome) = host.join("demo", &format!("user=dee&user_since={epoch}:0")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], true);
    for i in 0..400u64 {
        assert_eq!(dee.next_event().await?["offset"], i + 1);
    }
    // Live events after the catch-up are held to the limits again, and flow.
    host.publish_ok(&json!({ "users": ["dee"], "event": "live" })).await?;
    assert_eq!(dee.next_event().await?["event"], "live");
    assert_eq!(host.metric("notify_slow_client_disconnects_total{tenant=\"demo\"}").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn users_who_never_received_an_event_keep_nothing_and_still_resume_from_welcome() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut clients = Vec::new();
    let mut welcomes = Vec::new();
    for i in 0..50 {
        let (client, welcome) = host.join("demo", &format!("user=quiet{i}")).await?;
        welcomes.push(welcome["streams"]["user"].clone());
        clients.push(client);
    }
    assert_eq!(host.metric("notify_history_streams").await?, 0.0, "joining keeps no stream");
    drop(clients);
    host.wait_metric("notify_connections{tenant=\"demo\"}", |n| n == 0.0).await?;
    assert_eq!(host.metric("notify_history_streams").await?, 0.0, "leaving keeps none either");

    // An event for one of them while offline creates that stream only; resuming from the
    // welcome's position replays it as nothing missed.
    host.publish_ok(&json!({ "users": ["quiet7"], "event": "while-away" })).await?;
    assert_eq!(host.metric("notify_history_streams").await?, 1.0);
    let since = format!("{}:{}", welcomes[7]["epoch"].as_str().context("epoch")?, welcomes[7]["offset"]);
    let (mut quiet, welcome) = host.join("demo", &format!("user=quiet7&user_since={since}")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], true);
    let ev = quiet.next_event().await?;
    assert_eq!((ev["event"].clone(), ev["offset"].clone()), (json!("while-away"), json!(1)));
    // A position from another host (another store) is not taken for this one's.
    let other = TestHost::start(DEMO).await?;
    let (_, elsewhere) = other.join("demo", "user=quiet8").await?;
    let since = format!("{}:0", elsewhere["streams"]["user"]["epoch"].as_str().context("epoch")?);
    host.publish_ok(&json!({ "users": ["quiet8"], "event": "while-away" })).await?;
    let (_, welcome) = host.join("demo", &format!("user=quiet8&user_since={since}")).await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], false);
    Ok(())
}
