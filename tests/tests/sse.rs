//! `GET /v1/sse/{tenant}`: Server-Sent Events with the WebSocket's credentials, hub, limits
//! and resume. Clients: the harness's SSE client (an `EventSource`-style parser over hyper)
//! and curl.

use anyhow::Context as _;
use bytes::Bytes;
use notify_tests::{Client, DEMO, JWT_SECRET, RedisServer, Req, Sse, SseClient, TestHost, hs256_token, jwt_tenant};
use serde_json::{Value, json};

const FAST_HEARTBEATS: &str = "[connections]\nheartbeat_interval = \"200ms\"\n";

#[tokio::test]
async fn events_of_every_stream_arrive_with_ids_and_heartbeats_are_comments() -> anyhow::Result<()> {
    let host = TestHost::start(&format!("{FAST_HEARTBEATS}{DEMO}")).await?;
    let mut sse = SseClient::connect(host.addr, "/v1/sse/demo?user=ann&channels=news,sport", &[]).await?;
    assert_eq!(sse.headers["cache-control"], "no-cache, no-store");
    let welcome = sse.next_json().await?;
    assert_eq!((welcome["type"].as_str(), welcome["user"].as_str()), (Some("welcome"), Some("ann")));
    for channel in ["news", "sport"] {
        let subscribed = sse.next_json().await?;
        assert_eq!((subscribed["type"].as_str(), subscribed["channel"].as_str()), (Some("subscribed"), Some(channel)));
    }
    host.publish_ok(&json!({ "users": ["ann"], "event": "dm", "data": { "text": "line one\nline two" } })).await?;
    host.publish_ok(&json!({ "channels": ["sport"], "event": "goal", "data": 1 })).await?;
    host.publish_ok(&json!({ "broadcast": true, "event": "all", "data": [1, 2] })).await?;
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Sse::Message { id, data, .. } = sse.next().await?.context("stream ended")?
            && data["type"] == "event"
        {
            got.push((id.context("events carry an id")?, data));
        }
    }
    assert_eq!(got[0].1["data"], json!({ "text": "line one\nline two" }));
    assert_eq!((got[1].1["channel"].as_str(), got[1].1["data"].clone()), (Some("sport"), json!(1)));
    assert_eq!(got[2].1["broadcast"], true);
    let last = &got[2].0;
    for stream in ["user:", ",broadcast:", ",channel:news:", ",channel:sport:"] {
        assert!(last.contains(stream), "the id names every stream: {last}");
    }
    assert!(last.contains(&format!("channel:sport:{}:1", got[1].1["epoch"].as_str().context("epoch")?)), "{last}");
    loop {
        if let Some(Sse::Comment(c)) = sse.next().await? {
            assert_eq!(c, "ping");
            break;
        }
    }
    Ok(())
}

#[tokio::test]
async fn last_event_id_resumes_every_stream_without_duplicates() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let path = "/v1/sse/demo?user=bo&channels=news";
    let mut sse = SseClient::connect(host.addr, path, &[]).await?;
    host.publish_ok(&json!({ "users": ["bo"], "event": "seen" })).await?;
    assert_eq!(sse.next_event().await?["event"], "seen");
    let last_id = sse.last_id.clone().context("an id")?;
    drop(sse);

    host.publish_ok(&json!({ "users": ["bo"], "event": "missed-user" })).await?;
    host.publish_ok(&json!({ "channels": ["news"], "event": "missed-news" })).await?;
    host.publish_ok(&json!({ "broadcast": true, "event": "missed-all" })).await?;
    let mut sse = SseClient::connect(host.addr, path, &[("last-event-id", &last_id)]).await?;
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(sse.next_event().await?["event"].as_str().context("event")?.to_owned());
    }
    missed.sort();
    assert_eq!(missed, ["missed-all", "missed-news", "missed-user"]);
    host.publish_ok(&json!({ "users": ["bo"], "event": "live" })).await?;
    assert_eq!(sse.next_event().await?["event"], "live", "nothing replayed twice, then live events");

    // The same cursor as a query parameter, for clients that cannot set headers.
    let query = format!("{path}&last_event_id={}", urlencode(&last_id));
    let mut again = SseClient::connect(host.addr, &query, &[]).await?;
    assert_eq!(again.next_event().await?["event"], "missed-user");
    Ok(())
}

#[tokio::test]
async fn refusals_are_http_errors_before_the_stream() -> anyhow::Result<()> {
    let limits = "limits = { max_connections_per_user = 1 }\n";
    let host = TestHost::start(&format!("{DEMO}{limits}\n{}", jwt_tenant())).await?;
    let refused = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let addr = host.addr;
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = SseClient::try_connect(addr, path, &headers).await?.err().context("expected a refusal")?;
            anyhow::Ok((r.status, r.body["error"]["code"].as_str().unwrap_or_default().to_owned()))
        }
    };
    assert_eq!(refused("/v1/sse/nobody?user=a", vec![]).await?, (404, "unknown_tenant".into()));
    let origin = ("origin", "https://app.example.com".to_owned());
    assert_eq!(refused("/v1/sse/secure", vec![origin.clone()]).await?, (401, "unauthorized".into()));
    let evil = ("origin", "https://evil.example.com".to_owned());
    assert_eq!(refused("/v1/sse/secure", vec![evil]).await?, (403, "forbidden_origin".into()));
    assert_eq!(refused("/v1/sse/demo?user=a&channels=a%20b", vec![]).await?, (400, "invalid_channel".into()));
    assert_eq!(refused("/v1/sse/demo?user=a&user_since=x", vec![]).await?, (400, "bad_request".into()));
    let bad_id = ("last-event-id", "user:nope".to_owned());
    assert_eq!(refused("/v1/sse/demo?user=a", vec![bad_id]).await?, (400, "bad_request".into()));

    // A token's channel grants hold for ?channels= as for subscribe frames.
    let token = hs256_token("eve", 600, Some(&["orders.*"]), JWT_SECRET);
    let auth = ("authorization", format!("Bearer {token}"));
    let (status, code) = refused("/v1/sse/secure?channels=news", vec![auth.clone(), origin.clone()]).await?;
    assert_eq!((status, code.as_str()), (403, "forbidden_channel"));
    let mut granted = SseClient::connect(
        host.addr,
        "/v1/sse/secure?channels=orders.1",
        &[("authorization", &auth.1), ("origin", &origin.1)],
    )
    .await?;
    assert_eq!(granted.headers["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(granted.next_json().await?["user"], "eve");

    // SSE and WebSocket connections share the tenant's quotas.
    let _ws = host.connect_user("quota").await?;
    assert_eq!(refused("/v1/sse/demo?user=quota", vec![]).await?, (429, "too_many_user_connections".into()));
    Ok(())
}

/// A page on any origin can read every answer of the client routes, refusals included, so
/// it learns why it cannot connect (a forbidden origin, an unknown tenant) instead of
/// retrying blindly; the origin check itself still refuses a forbidden origin.
#[tokio::test]
async fn every_client_answer_is_readable_by_the_page_that_asked() -> anyhow::Result<()> {
    let host = TestHost::start(&format!("{DEMO}\n{}", jwt_tenant())).await?;
    let ask = |method: &'static str, path: &'static str, origin: &'static str| {
        let addr = host.addr;
        async move {
            let headers = [("origin", origin), ("access-control-request-headers", "authorization")];
            let (status, headers, body) = Req::new(method, path).headers(&headers).send(addr).await?;
            let allowed = headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
            let code = serde_json::from_slice::<Value>(&body).ok().map(|v| v["error"]["code"].clone());
            anyhow::Ok((status, allowed, code.unwrap_or_default()))
        }
    };
    let (app, evil) = ("https://app.example.com", "https://evil.example.com");
    for origin in [app, evil] {
        let (status, allowed, _) = ask("OPTIONS", "/v1/sse/secure", origin).await?;
        assert_eq!((status, allowed.as_deref()), (204, Some(origin)), "preflights answer any origin");
    }
    let cases = [
        ("GET", "/v1/sse/secure", evil, 403, "forbidden_origin"),
        ("GET", "/v1/ws/secure", evil, 403, "forbidden_origin"),
        ("GET", "/v1/sse/nobody?user=a", evil, 404, "unknown_tenant"),
        ("GET", "/v1/ws/nobody?user=a", app, 404, "unknown_tenant"),
        ("GET", "/v1/ws/secure", app, 401, "unauthorized"),
        ("GET", "/v1/ws/demo?user=a", app, 400, "not_websocket"),
        ("POST", "/v1/sse/secure/ack", evil, 403, "forbidden_origin"),
    ];
    for (method, path, origin, status, code) in cases {
        let answer = ask(method, path, origin).await?;
        assert_eq!(answer, (status, Some(origin.to_owned()), json!(code)), "{method} {path} from {origin}");
    }
    Ok(())
}

#[tokio::test]
async fn the_host_ends_streams_with_a_close_event() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut sse = SseClient::connect(host.addr, "/v1/sse/demo?user=cy", &[]).await?;
    assert_eq!(sse.next_json().await?["type"], "welcome");
    let (status, _) = Req::post("/v1/users/cy/disconnect")
        .key("demo-key")
        .body(r#"{"reason":"bye"}"#.into())
        .reply(host.addr)
        .await?;
    assert_eq!(status, 202);
    assert_eq!(sse.next_json().await?, json!({ "type": "disconnected", "reason": "bye" }));
    assert_eq!(sse.close_code().await?, 4005);

    // Draining: a reconnect frame with `retry:`, then 1001.
    let mut sse = SseClient::connect(host.addr, "/v1/sse/demo?user=cy", &[]).await?;
    assert_eq!(sse.next_json().await?["type"], "welcome");
    host.shutdown.shutdown();
    match sse.next().await?.context("stream ended")? {
        Sse::Message { retry, data, .. } => {
            assert_eq!(data["type"], "reconnect");
            assert_eq!(retry, Some(data["retry_after_ms"].as_u64().context("retry_after_ms")?.max(1)));
        }
        other => anyhow::bail!("expected the reconnect frame, got {other:?}"),
    }
    assert_eq!(sse.close_code().await?, 1001);
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_slow() -> anyhow::Result<()> {
    let toml = format!("[connections]\nsend_queue_frames = 8\nwrite_timeout = \"500ms\"\n{DEMO}");
    let host = TestHost::start(&toml).await?;
    let _stalled = SseClient::connect(host.addr, "/v1/sse/demo?user=slow", &[]).await?;
    let big = "x".repeat(60_000);
    let mut publishes = 0;
    while host.metric("notify_slow_client_disconnects_total{tenant=\"demo\"}").await? < 1.0 {
        anyhow::ensure!(publishes < 2000, "never closed as slow");
        host.publish_ok(&json!({ "users": ["slow"], "event": "big", "data": big })).await?;
        publishes += 1;
    }
    host.wait_metric("notify_connections{tenant=\"demo\"}", |v| v == 0.0).await?;
    Ok(())
}

/// Reads from `tcp` until what it received contains `needle`; returns all of it.
async fn read_until(tcp: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, needle: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt as _;
    while !String::from_utf8_lossy(seen).contains(needle) {
        let mut buf = [0; 4096];
        let n = tokio::time::timeout(notify_tests::STEP, tcp.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before {needle:?}: {}", String::from_utf8_lossy(seen));
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(seen).into_owned())
}

#[tokio::test]
async fn a_stream_is_the_connection_itself_and_its_end_is_seen_without_a_write() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let host = TestHost::start(DEMO).await?;
    let mut tcp = tokio::net::TcpStream::connect(host.addr).await?;
    let origin = "https://app.example";
    let request = format!("GET /v1/sse/demo?user=raw HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\n\r\n", host.addr);
    tcp.write_all(request.as_bytes()).await?;
    let mut seen = Vec::new();
    let text = read_until(&mut tcp, &mut seen, "\"welcome\"").await?;
    let (head, body) = text.split_once("\r\n\r\n").context("a head")?;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in
        ["content-type: text/event-stream", "connection: close", &format!("access-control-allow-origin: {origin}")]
    {
        assert!(head.contains(line), "{line:?} in {head}");
    }
    // No length and no chunks: the stream's bytes follow the head as they are.
    assert!(!head.contains("transfer-encoding") && !head.contains("content-length"), "{head}");
    assert!(body.starts_with("id: user:") && body.contains("\ndata: {\"type\":\"welcome\""), "{body}");
    host.publish_ok(&json!({ "users": ["raw"], "event": "dm", "data": { "n": 1 } })).await?;
    let text = read_until(&mut tcp, &mut seen, "\"event\":\"dm\"").await?;
    let event = text.rsplit("\n\n").find(|e| e.contains("\"dm\"")).context("the event")?;
    let (id, data) = event.split_once('\n').context("id and data")?;
    let data: Value = serde_json::from_str(data.strip_prefix("data: ").context("data")?)?;
    let epoch = data["epoch"].as_str().context("epoch")?;
    assert!(id.starts_with(&format!("id: user:{epoch}:1,broadcast:")), "{event}");
    assert_eq!((data["type"].as_str(), data["data"].clone()), (Some("event"), json!({ "n": 1 })));
    assert_eq!(host.metric("notify_connections{tenant=\"demo\"}").await?, 1.0);
    // The client goes away while the stream is idle: the host notices without writing.
    drop(tcp);
    host.wait_metric("notify_connections{tenant=\"demo\"}", |v| v == 0.0).await?;
    Ok(())
}

#[tokio::test]
async fn across_nodes_curl_receives_what_another_node_published() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let [a, b] = notify_tests::ready_hosts(&format!("{DEMO}\n{}", redis.broker_toml())).await?;
    let url = format!("http://{}/v1/sse/demo?user=dee&channels=news", b.addr);
    let mut curl = tokio::process::Command::new("curl")
        .args(["--silent", "--no-buffer", "--max-time", "20", &url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("curl")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(curl.stdout.take().context("stdout")?));
    let mut next_data = async || -> anyhow::Result<serde_json::Value> {
        loop {
            let line = tokio::time::timeout(notify_tests::STEP, lines.next_line()).await??.context("curl ended")?;
            if let Some(data) = line.strip_prefix("data: ") {
                return Ok(serde_json::from_str(data)?);
            }
        }
    };
    assert_eq!(next_data().await?["type"], "welcome");
    assert_eq!(next_data().await?["type"], "subscribed");
    a.publish_ok(&json!({ "channels": ["news"], "event": "from-a", "data": "hi" })).await?;
    let event = next_data().await?;
    assert_eq!((event["event"].as_str(), event["channel"].as_str()), (Some("from-a"), Some("news")));
    // The backend's disconnect, sent to node a, ends curl's stream on node b.
    let (status, _) = Req::post("/v1/users/dee/disconnect").key("demo-key").reply(a.addr).await?;
    assert_eq!(status, 202);
    assert_eq!(next_data().await?["type"], "disconnected");
    assert_eq!(next_data().await?["code"], 4005);
    assert!(curl.wait().await?.success(), "curl saw the stream end cleanly");
    // A WebSocket client of the same user is unaffected by the SSE one having been there.
    let mut ws = Client::connect(&b.ws_url("demo", "user=dee"), &[]).await?;
    assert_eq!(ws.next_json().await?["type"], "welcome");
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn acks_go_back_over_http_with_the_streams_credentials() -> anyhow::Result<()> {
    let toml = "[tenants.demo]\npublish_key = \"demo-key\"\nauth = { mode = \"insecure\" }\nhistory = { size = 100, ttl = \"10m\", acks = true }\n";
    let host = TestHost::start(toml).await?;
    let mut sse = SseClient::connect(host.addr, "/v1/sse/demo?user=ed", &[]).await?;
    for n in 1..=3 {
        host.publish_ok(&json!({ "users": ["ed"], "event": "n", "data": n })).await?;
    }
    let mut last = json!(null);
    for _ in 0..3 {
        last = sse.next_event().await?;
    }
    let second = json!({ "epoch": last["epoch"], "offset": 2 }).to_string();
    let (status, acked) = Req::post("/v1/sse/demo/ack?user=ed").body(second.into()).reply(host.addr).await?;
    assert_eq!((status, acked), (200, json!({ "epoch": last["epoch"], "offset": 2, "unread": 1 })));
    let (status, unread) = Req::get("/v1/users/ed/unread").key("demo-key").reply(host.addr).await?;
    assert_eq!((status, unread["unread"].clone()), (200, json!(1)));
    let stale = json!({ "epoch": "other", "offset": 1 }).to_string();
    assert_eq!(Req::post("/v1/sse/demo/ack?user=ed").body(stale.into()).reply(host.addr).await?.0, 409);
    assert_eq!(Req::post("/v1/sse/demo/ack").body(Bytes::from("{}")).reply(host.addr).await?.0, 401);
    Ok(())
}
