//! Delta updates: a subscriber that asks for them gets a channel's first event whole and the
//! next ones published with `delta` as Fossil deltas it applies to the previous data, on one
//! node and across two over Redis, after a resume too; a subscriber that did not ask gets
//! every event whole.

use anyhow::{Context as _, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use notify_tests::{Client, DEMO, RedisServer, Req, TestHost, position, ready_hosts};
use serde_json::{Value, json};

/// A 2 KB document whose `score` changes from one version to the next.
fn document(score: u32) -> Value {
    let players: Vec<Value> =
        (0..24).map(|i| json!({"name": format!("Spieler {i} — 選手"), "goals": i % 4, "minutes": 90 - i})).collect();
    json!({"match": "Rot-Weiß v Blau", "score": score, "players": players})
}

/// What a client keeps of a delta channel: the last event's id and data as sent.
#[derive(Default)]
struct Base(Option<(String, Vec<u8>)>);

impl Base {
    /// The event a frame carries (rebuilt from the base if it is a delta), whether it was a
    /// delta, and the frame's length.
    fn take(&mut self, text: &str) -> anyhow::Result<(Value, bool, usize)> {
        let mut frame: Value = serde_json::from_str(text)?;
        let (data, was_delta) = match frame.get("delta") {
            None => {
                let at = text.find(r#","data":"#).context("no data")?;
                (text.as_bytes()[at + 8..text.len() - 1].to_vec(), false)
            }
            Some(delta) => {
                let (id, base) = self.0.as_ref().context("a delta before any whole event")?;
                anyhow::ensure!(frame["base"] == id.as_str(), "a delta from {}, not {id}", frame["base"]);
                let delta = STANDARD.decode(delta.as_str().context("delta is a string")?)?;
                (fossil_delta::apply(base, delta).map_err(|e| anyhow!("bad delta: {e:?}"))?, true)
            }
        };
        frame["data"] = serde_json::from_slice(&data)?;
        self.0 = Some((frame["id"].as_str().context("id")?.to_owned(), data));
        Ok((frame, was_delta, text.len()))
    }
}

/// The next event frame's text.
async fn next_event_text(client: &mut Client) -> anyhow::Result<String> {
    loop {
        let text = client.next_text().await?;
        if text.starts_with(r#"{"type":"event""#) {
            return Ok(text);
        }
    }
}

/// Subscribes to `channel` asking for deltas (after `since`); the reply.
async fn subscribe_delta(client: &mut Client, channel: &str, since: Option<Value>) -> anyhow::Result<Value> {
    let mut frame = json!({"type": "subscribe", "channel": channel, "delta": "fossil"});
    if let Some(since) = since {
        frame["since"] = since;
    }
    client.send_json(&frame).await?;
    client.next_json().await
}

fn version(score: u32) -> Value {
    json!({"channels": ["match"], "event": "score", "data": document(score), "delta": true})
}

#[tokio::test]
async fn a_delta_subscriber_gets_differences_it_applies_and_others_get_whole_events() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let (mut fan, _) = host.join("demo", "user=ann").await?;
    let (mut plain, _) = host.join("demo", "user=bob").await?;
    assert_eq!(subscribe_delta(&mut fan, "match", None).await?["type"], "subscribed");
    assert_eq!(plain.subscribe("match").await?["type"], "subscribed");
    for score in 0..4 {
        host.publish_ok(&version(score)).await?;
    }
    let mut base = Base::default();
    for score in 0..4 {
        let (event, was_delta, len) = base.take(&next_event_text(&mut fan).await?)?;
        assert_eq!(event["data"], document(score));
        assert_eq!(was_delta, score > 0, "the first event whole, the others as deltas");
        let whole = plain.next_event().await?;
        assert_eq!((&whole["data"], &whole["offset"]), (&event["data"], &event["offset"]));
        assert!(whole.get("delta").is_none());
        if was_delta {
            let full = serde_json::to_string(&whole)?.len();
            assert!(len * 100 < full * 15, "a delta of {len} bytes against {full} whole");
        }
    }
    assert_eq!(host.metric("notify_deltas_total").await?, 3.0, "one delta per event");

    // Without `delta` from the publisher, the event goes whole and is the next base.
    host.publish_ok(&json!({"channels": ["match"], "event": "score", "data": document(9)})).await?;
    host.publish_ok(&version(10)).await?;
    let (event, was_delta, _) = base.take(&next_event_text(&mut fan).await?)?;
    assert_eq!((event["data"]["score"].as_u64(), was_delta), (Some(9), false));
    let (event, was_delta, _) = base.take(&next_event_text(&mut fan).await?)?;
    assert_eq!((event["data"]["score"].as_u64(), was_delta), (Some(10), true));

    fan.send_json(&json!({"type": "subscribe", "channel": "other", "delta": "xdelta"})).await?;
    let error = fan.next_json().await?;
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("bad_frame")));
    Ok(())
}

#[tokio::test]
async fn channels_subscribed_at_connect_get_deltas_with_delta_fossil() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let (mut fan, _) = host.join("demo", "user=ann&channels=match&delta=fossil").await?;
    assert_eq!(fan.next_json().await?["type"], "subscribed");
    let mut base = Base::default();
    for score in 0..3 {
        host.publish_ok(&version(score)).await?;
        let (event, was_delta, _) = base.take(&next_event_text(&mut fan).await?)?;
        assert_eq!((&event["data"], was_delta), (&document(score), score > 0));
    }
    for (path, why) in [
        ("/v1/ws/demo?user=ann&channels=match&delta=vcdiff", "delta must be fossil"),
        ("/v1/sse/demo?user=ann&channels=match&delta=fossil", "WebSocket only"),
    ] {
        let (status, body) = Req::get(path).header("Upgrade", "websocket").reply(host.addr).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{path}");
        assert!(body["error"]["message"].as_str().context("message")?.contains(why), "{body}");
    }
    Ok(())
}

#[tokio::test]
async fn deltas_cross_nodes_over_redis_and_a_resumed_subscriber_starts_whole() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let [a, b] = ready_hosts::<2>(&format!("{DEMO}\n{}", redis.broker_toml())).await?;
    let (mut fan, _) = b.join("demo", "user=ann").await?;
    subscribe_delta(&mut fan, "match", None).await?;
    let mut base = Base::default();
    let mut last = None;
    for score in 0..3 {
        a.publish_ok(&version(score)).await?;
        let (event, was_delta, _) = base.take(&next_event_text(&mut fan).await?)?;
        assert_eq!((&event["data"], was_delta), (&document(score), score > 0));
        last = Some(event);
    }
    drop(fan);

    // Away for two versions; back on the other node, resuming: the replay is whole, and so is
    // the first live event (the new subscription holds no base), then deltas again.
    a.publish_ok(&version(3)).await?;
    b.publish_ok(&version(4)).await?;
    let last = last.context("events")?;
    let since = json!({"epoch": last["epoch"], "offset": last["offset"]});
    let (mut fan, _) = a.join("demo", "user=ann").await?;
    fan.send_json(&json!({"type": "subscribe", "channel": "match", "since": since, "delta": "fossil"})).await?;
    let mut base = Base::default();
    for score in 3..5 {
        let (event, was_delta, _) = base.take(&next_event_text(&mut fan).await?)?;
        assert_eq!((&event["data"], was_delta), (&document(score), false), "replayed whole");
    }
    for score in 5..7 {
        b.publish_ok(&version(score)).await?;
        let (event, was_delta, _) = base.take(&next_event_text(&mut fan).await?)?;
        assert_eq!((&event["data"], was_delta), (&document(score), score > 5));
        assert_eq!(position(&event)?, format!("{}:{}", last["epoch"].as_str().context("epoch")?, score + 1));
    }
    Ok(())
}
