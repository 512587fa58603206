//! Fan-out over real sockets: user streams, channels, broadcast.

use notify_tests::{DEMO, Req, TestHost};
use serde_json::json;

#[tokio::test]
async fn user_event_reaches_every_device_of_that_user_and_nobody_else() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut phone = host.connect_user("alice").await?;
    let mut laptop = host.connect_user("alice").await?;
    let mut bob = host.connect_user("bob").await?;

    let id = host.publish_ok(&json!({"users": ["alice"], "event": "order.updated", "data": {"order": 7}})).await?;
    for device in [&mut phone, &mut laptop] {
        let ev = device.next_event().await?;
        assert_eq!(ev["id"], id);
        assert_eq!(ev["event"], "order.updated");
        assert_eq!(ev["user"], "alice");
        assert_eq!(ev["data"], json!({"order": 7}));
        assert!(ev["ts"].as_u64().unwrap() > 0);
    }
    // Bob's next frame is the broadcast marker published afterwards, not alice's event.
    host.publish_ok(&json!({"broadcast": true, "event": "marker"})).await?;
    assert_eq!(bob.next_event().await?["event"], "marker");
    Ok(())
}

#[tokio::test]
async fn channel_subscribe_and_unsubscribe() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut a = host.connect_user("a").await?;
    let mut b = host.connect_user("b").await?;
    let subscribed = a.subscribe("news").await?;
    assert_eq!((subscribed["type"].clone(), subscribed["channel"].clone()), (json!("subscribed"), json!("news")));
    // The channel's position so far (no event yet) and that nothing was missed.
    assert_eq!((subscribed["offset"].clone(), subscribed["recovered"].clone()), (json!(0), json!(true)));
    assert_eq!(b.subscribe("news").await?["type"], "subscribed");

    host.publish_ok(&json!({"channels": ["news"], "event": "headline", "data": "hello"})).await?;
    for c in [&mut a, &mut b] {
        let ev = c.next_event().await?;
        assert_eq!(ev["channel"], "news");
        assert_eq!(ev["data"], "hello");
    }

    b.send_json(&json!({"type": "unsubscribe", "channel": "news"})).await?;
    assert_eq!(b.next_json().await?, json!({"type": "unsubscribed", "channel": "news"}));
    host.publish_ok(&json!({"channels": ["news"], "event": "second"})).await?;
    assert_eq!(a.next_event().await?["event"], "second");
    host.publish_ok(&json!({"users": ["b"], "event": "marker"})).await?;
    assert_eq!(b.next_event().await?["event"], "marker", "b still got the channel event");
    Ok(())
}

#[tokio::test]
async fn broadcast_reaches_every_connection_of_the_tenant() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(host.connect_user(&format!("u{i}")).await?);
    }
    let id = host.publish_ok(&json!({"broadcast": true, "event": "maintenance", "data": {"in": 5}})).await?;
    for c in &mut clients {
        let ev = c.next_event().await?;
        assert_eq!(ev["id"], id);
        assert_eq!(ev["broadcast"], true);
    }
    Ok(())
}

#[tokio::test]
async fn batch_publish_delivers_in_order() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut c = host.connect_user("carol").await?;
    let batch: Vec<_> = (0..50).map(|i| json!({"users": ["carol"], "event": "n", "data": i})).collect();
    let (status, res) =
        Req::post("/v1/publish/batch").key("demo-key").body(json!(batch).to_string().into()).reply(host.addr).await?;
    assert_eq!(status, 202, "{res}");
    assert_eq!(res["ids"].as_array().unwrap().len(), 50);
    for i in 0..50 {
        assert_eq!(c.next_event().await?["data"], i);
    }
    Ok(())
}

#[tokio::test]
async fn tenants_are_isolated() -> anyhow::Result<()> {
    let toml = format!("{DEMO}\n[tenants.other]\npublish_key = \"other-key\"\n");
    let host = TestHost::start(&toml).await?;
    let mut demo_alice = host.connect_user("alice").await?;
    let mut other_alice = notify_tests::Client::connect(&host.ws_url("other", "user=alice"), &[]).await?;
    other_alice.next_json().await?;
    let (status, _) =
        host.publish("other-key", &json!({"users": ["alice"], "broadcast": true, "event": "theirs"})).await?;
    assert_eq!(status, 202);
    assert_eq!(other_alice.next_event().await?["event"], "theirs");
    assert_eq!(other_alice.next_event().await?["event"], "theirs");
    host.publish_ok(&json!({"users": ["alice"], "event": "ours"})).await?;
    assert_eq!(demo_alice.next_event().await?["event"], "ours", "demo's alice saw the other tenant's event");
    Ok(())
}

#[tokio::test]
async fn bad_client_frames_get_error_frames_and_the_connection_stays() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut c = host.connect_user("dave").await?;
    c.ws.send(tokio_tungstenite::tungstenite::Message::text("{nope")).await?;
    let e = c.next_json().await?;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("bad_frame")));
    let e = c.subscribe("bad name").await?;
    assert_eq!(e["code"], "invalid_channel");
    c.send_json(&json!({"type": "ping"})).await?;
    assert_eq!(c.next_json().await?, json!({"type": "pong"}));
    host.publish_ok(&json!({"users": ["dave"], "event": "still-here"})).await?;
    assert_eq!(c.next_event().await?["event"], "still-here");
    Ok(())
}

use futures_util::SinkExt as _;

/// Events are written to the socket by the fan-out itself while tungstenite answers pings
/// on the same socket: every frame must arrive whole, in order, with every pong.
#[tokio::test]
async fn events_written_by_the_fan_out_never_interleave_with_pongs() -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let host = TestHost::start(DEMO).await?;
    let client = host.connect_user("pinger").await?;
    let (mut tx, mut rx) = client.ws.split();
    let publisher = async {
        for i in 0..200 {
            host.publish_ok(&json!({"broadcast": true, "event": "tick", "data": {"n": i, "pad": "x".repeat(i * 50)}}))
                .await?;
        }
        anyhow::Ok(())
    };
    let pinger = async {
        for i in 0..200u32 {
            tx.send(Message::Ping(i.to_be_bytes().to_vec().into())).await?;
        }
        anyhow::Ok(())
    };
    let reader = async {
        let (mut events, mut pongs) = (Vec::new(), Vec::new());
        while events.len() < 200 || pongs.len() < 200 {
            let msg = tokio::time::timeout(std::time::Duration::from_secs(10), rx.next()).await?;
            match msg.ok_or_else(|| anyhow::anyhow!("connection ended"))?? {
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(&t)?;
                    if v["type"] == "event" {
                        events.push(v["data"]["n"].as_u64().unwrap_or(u64::MAX));
                    }
                }
                Message::Pong(p) => pongs.push(u32::from_be_bytes(p[..].try_into()?)),
                other => anyhow::bail!("unexpected frame {other:?}"),
            }
        }
        anyhow::Ok((events, pongs))
    };
    let (published, pinged, received) = tokio::join!(publisher, pinger, reader);
    published?;
    pinged?;
    let (events, pongs) = received?;
    assert_eq!(events, (0..200).collect::<Vec<_>>());
    assert_eq!(pongs, (0..200).collect::<Vec<_>>());
    Ok(())
}
