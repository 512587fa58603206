//! Connection lifecycle: size limits, slow and silent clients, shutdown.

use notify_tests::{Client, DEMO, RawClient, Req, TestHost};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn oversized_message_is_closed_with_1009() -> anyhow::Result<()> {
    let host = TestHost::start(&format!("{DEMO}\n[connections]\nmax_message_bytes = 4096\n")).await?;
    let (status, mut raw) = RawClient::connect(host.addr, "/v1/ws/demo?user=big").await?;
    assert_eq!(status, 101);
    raw.send_frame(0x1, &vec![b'x'; 5000]).await?;
    assert_eq!(raw.close_code().await?, 1009);

    // A message at the limit is fine: it gets an error frame (not JSON), not a close.
    let mut c = host.connect_user("ok").await?;
    c.ws.send(Message::text("y".repeat(4000))).await?;
    assert_eq!(c.next_json().await?["code"], "bad_frame");
    Ok(())
}

#[tokio::test]
async fn client_that_stops_reading_is_disconnected_while_others_keep_receiving() -> anyhow::Result<()> {
    let toml = format!("{DEMO}\n[connections]\nsend_queue_frames = 64\nsend_queue_bytes = 262144\n");
    let host = TestHost::start(&toml).await?;
    // The stalled client shrinks its receive buffer so the backlog reaches the host's queue fast.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket.connect(host.addr).await?;
    let url = host.ws_url("demo", "user=slow");
    let (mut slow, _) = tokio_tungstenite::client_async(url, tcp).await?;
    let mut fast = host.connect_user("fast").await?;

    let data = "z".repeat(64 * 1024);
    let mut sent = 0u32;
    // Bounded: at most 2,000 events of 64 KiB, stopping once the host has dropped the client.
    while sent < 2000 {
        host.publish_ok(&json!({"broadcast": true, "event": "bulk", "data": {"n": sent, "pad": data}})).await?;
        let ev = fast.next_event().await?;
        assert_eq!(ev["data"]["n"], sent, "the fast client missed or reordered an event");
        sent += 1;
        if sent.is_multiple_of(4) && host.metric("notify_slow_client_disconnects_total{tenant=\"demo\"}").await? >= 1.0
        {
            break;
        }
    }
    assert!(sent < 2000, "the stalled client was never disconnected");
    host.wait_metric("notify_connections{tenant=\"demo\"}", |v| v == 1.0).await?;
    // The stalled client, reading at last, finds its stream ended: by close 4001 when the host
    // could still send it, or by the socket closing.
    let mut code = None;
    while let Some(Ok(msg)) = futures_util::StreamExt::next(&mut slow).await {
        if let Message::Close(frame) = msg {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    if let Some(code) = code {
        assert_eq!(code, 4001);
    }
    // And the fast one keeps receiving.
    host.publish_ok(&json!({"users": ["fast"], "event": "after"})).await?;
    assert_eq!(fast.next_event().await?["event"], "after");
    Ok(())
}

#[tokio::test]
async fn silent_client_is_closed_after_the_idle_timeout() -> anyhow::Result<()> {
    let toml = format!("{DEMO}\n[connections]\nheartbeat_interval = \"100ms\"\nidle_timeout = \"400ms\"\n");
    let host = TestHost::start(&toml).await?;
    // The raw client never answers pings.
    let (status, mut silent) = RawClient::connect(host.addr, "/v1/ws/demo?user=quiet").await?;
    assert_eq!(status, 101);
    let mut pings = 0;
    let code = loop {
        let (op, payload) = silent.read_frame().await?;
        match op {
            0x9 => pings += 1,
            0x8 => break u16::from_be_bytes([payload[0], payload[1]]),
            _ => {}
        }
    };
    assert_eq!(code, 4000);
    assert!(pings >= 1, "the host sent no heartbeat ping before giving up");

    // A client that answers pings (tungstenite does) stays connected past the idle timeout.
    let mut alive = host.connect_user("alive").await?;
    for _ in 0..12 {
        // Each wait is a real ping/pong round; reading drives tungstenite's automatic pongs.
        tokio::time::timeout(std::time::Duration::from_millis(100), futures_util::StreamExt::next(&mut alive.ws))
            .await
            .ok();
    }
    host.publish_ok(&json!({"users": ["alive"], "event": "still"})).await?;
    assert_eq!(alive.next_event().await?["event"], "still");
    Ok(())
}

#[tokio::test]
async fn shutdown_sends_1001_to_everyone_and_refuses_new_work() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(host.connect_user(&format!("s{i}")).await?);
    }
    host.publish_ok(&json!({"broadcast": true, "event": "last"})).await?;
    host.shutdown.shutdown();
    // While connections drain, the host says so and turns new work away.
    let (status, body) = Req::get("/readyz").reply(host.addr).await?;
    assert_eq!((status, body["status"].as_str()), (503, Some("draining")));
    let (status, _) = host.publish("demo-key", &json!({"users": ["s1"], "event": "late"})).await?;
    assert_eq!(status, 503);
    let refused = Client::try_connect(&host.ws_url("demo", "user=late"), &[]).await?.err().unwrap();
    assert_eq!(refused.status, 503);
    for c in &mut clients {
        // Queued events are flushed before the close, which a reconnect hint announces.
        assert_eq!(c.next_event().await?["event"], "last");
        let hint = c.next_json().await?;
        assert_eq!((hint["type"].as_str(), hint["reason"].as_str()), (Some("reconnect"), Some("server shutting down")));
        assert!(hint["retry_after_ms"].as_u64().is_some_and(|ms| ms <= 2000), "{hint}");
        assert_eq!(c.close_code().await?, 1001);
    }
    host.task.await?;
    Ok(())
}

use futures_util::SinkExt as _;

#[tokio::test]
async fn sigterm_drains_with_1001_and_exits_zero() -> anyhow::Result<()> {
    let mut host = notify_tests::HostProcess::start(notify_tests::host_bin!(), DEMO).await?;
    let mut clients = Vec::new();
    for i in 0..5 {
        let url = format!("ws://{}/v1/ws/demo?user=p{i}", host.addr);
        let mut c = Client::connect(&url, &[]).await?;
        assert_eq!(c.next_json().await?["type"], "welcome");
        clients.push(c);
    }
    host.signal("TERM")?;
    for c in &mut clients {
        assert_eq!(c.close_code().await?, 1001);
    }
    let status = tokio::time::timeout(notify_tests::STEP, host.child.wait()).await??;
    assert_eq!(status.code(), Some(0));
    Ok(())
}

#[tokio::test]
async fn drop_oldest_policy_keeps_a_stalled_client_and_its_newest_events() -> anyhow::Result<()> {
    let toml = DEMO.replace("[tenants.demo]", "[tenants.demo]\nslow_client = \"drop_oldest\"")
        + "\n[connections]\nsend_queue_frames = 8\nsend_queue_bytes = 1048576\n";
    let host = TestHost::start(&toml).await?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket.connect(host.addr).await?;
    let (mut stalled, _) = tokio_tungstenite::client_async(host.ws_url("demo", "user=lagging"), tcp).await?;
    host.wait_metric("notify_connections{tenant=\"demo\"}", |v| v == 1.0).await?;

    let data = "d".repeat(64 * 1024);
    let mut sent = 0u32;
    // Bounded: stop once the host has discarded frames for the stalled client.
    while sent < 2000 {
        host.publish_ok(&json!({"users": ["lagging"], "event": "bulk", "data": {"n": sent, "pad": data}})).await?;
        sent += 1;
        if sent.is_multiple_of(4) && host.metric("notify_frames_dropped_total{tenant=\"demo\"}").await? >= 1.0 {
            break;
        }
    }
    assert!(sent < 2000, "nothing was ever dropped");
    host.publish_ok(&json!({"users": ["lagging"], "event": "newest"})).await?;
    assert_eq!(host.metric("notify_slow_client_disconnects_total{tenant=\"demo\"}").await?, 0.0);

    // Reading again, the client gets an in-order subsequence ending with the newest event.
    let mut last = None;
    let mut skipped = false;
    loop {
        let msg = tokio::time::timeout(notify_tests::STEP, futures_util::StreamExt::next(&mut stalled))
            .await?
            .expect("stream open")?;
        let Message::Text(text) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(&text)?;
        if v["event"] == "newest" {
            break;
        }
        if v["event"] == "bulk" {
            let n = v["data"]["n"].as_u64().unwrap();
            if let Some(prev) = last {
                assert!(n > prev, "out of order: {n} after {prev}");
                skipped |= n > prev + 1;
            }
            last = Some(n);
        }
    }
    assert!(skipped || last.is_none_or(|l| l + 1 < u64::from(sent)), "no gap although frames were dropped");
    Ok(())
}
