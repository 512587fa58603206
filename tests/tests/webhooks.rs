//! Outbound webhooks against a real receiver on loopback: presence transitions on one node
//! (online once, offline once after the debounce, nothing for a quick reconnect), read
//! cursors that move (once per move, also when two nodes take the same ack at once),
//! Standard Webhooks signatures, retries with a stable `webhook-id`, dead letters replayed
//! through the admin API, and endpoints at private addresses refused unless allowed.

use anyhow::Context as _;
use notify_tests::{Client, DEMO, Received, Receiver, RedisServer, Req, TestHost, eventually, ready_hosts};
use serde_json::{Value, json};
use standardwebhooks::Webhook;

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN: &str = "admin-token-123";

/// A host whose tenant `demo` sends its webhooks to `url`, with quick retries.
async fn host(url: &str, extra: &str) -> anyhow::Result<TestHost> {
    TestHost::start(&format!(
        r#"
[server]
admin_token = "{ADMIN}"
[broker]
kind = "memory"
presence_debounce = "1s"
[webhooks]
allow_private = true
initial_backoff = "50ms"
max_backoff = "100ms"
{extra}
[tenants.demo]
publish_key = "demo-key"
auth = {{ mode = "insecure" }}
history = {{ acks = true }}
webhooks = [{{ url = "{url}", secret = "{SECRET}", batch = {{ max_events = 10, max_wait = "50ms" }} }}]
"#
    ))
    .await
}

/// The events of tenant `demo`'s request whose signature verifies, with its `webhook-id`.
pub(crate) fn verified(request: &Received) -> anyhow::Result<(String, Vec<Value>)> {
    verified_for(request, "demo")
}

/// [`verified`] for `tenant`'s request.
pub(crate) fn verified_for(request: &Received, tenant: &str) -> anyhow::Result<(String, Vec<Value>)> {
    Webhook::new(SECRET)?.verify(&request.body, &request.headers).context("signature")?;
    let body: Value = serde_json::from_slice(&request.body)?;
    anyhow::ensure!(body["type"] == "notify.batch" && body["data"]["tenant"] == tenant, "{body}");
    let id = request.headers.get("webhook-id").context("webhook-id")?.to_str()?.to_owned();
    Ok((id, body["data"]["events"].as_array().context("events")?.clone()))
}

/// `type user` (or `type channel`) of every event delivered (answered 2xx) so far.
pub(crate) fn delivered(receiver: &Receiver) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for request in receiver.received().iter().filter(|r| r.status == 200) {
        for event in verified(request)?.1 {
            let data = &event["data"];
            let subject = data["user"].as_str().or(data["channel"].as_str()).context("user or channel")?;
            out.push(format!("{} {subject}", event["type"].as_str().context("type")?));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn a_user_comes_online_once_and_goes_offline_once_after_the_debounce() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let host = host(&receiver.url("/hooks"), "").await?;
    let (phone, _) = host.join("demo", "user=ann").await?;
    let (laptop, _) = host.join("demo", "user=ann").await?;
    eventually(|| async { Ok(delivered(&receiver)? == ["user.online ann"]) }).await?;
    drop(phone);
    drop(laptop);
    eventually(|| async { Ok(delivered(&receiver)? == ["user.online ann", "user.offline ann"]) }).await?;

    // Gone and back within the debounce: the reconnect is neither offline nor online, so
    // leaving for good after it is the next event.
    let (again, _) = host.join("demo", "user=ann").await?;
    eventually(|| async { Ok(delivered(&receiver)?.len() == 3) }).await?;
    drop(again);
    let (back, _) = host.join("demo", "user=ann").await?;
    drop(back);
    let expected = ["user.online ann", "user.offline ann", "user.online ann", "user.offline ann"];
    eventually(|| async { Ok(delivered(&receiver)?.len() == 4) }).await?;
    assert_eq!(delivered(&receiver)?, expected);
    let request = &receiver.received()[0];
    let (_, events) = verified(request)?;
    assert!(events[0]["id"].as_str().context("id")?.starts_with("evt_"));
    assert_eq!(request.headers.get("content-type").context("content-type")?, "application/json");
    Ok(())
}

#[tokio::test]
async fn a_channel_is_occupied_once_and_vacated_once_and_subscriptions_are_told_when_asked_for() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let events = r#"events = ["channel.occupied", "channel.vacated", "subscription.added", "subscription.removed"], "#;
    let config = |events: &str| {
        format!(
            "[broker]\nkind = \"memory\"\npresence_debounce = \"1s\"\n[webhooks]\nallow_private = true\n\
             [tenants.demo]\npublish_key = \"demo-key\"\nauth = {{ mode = \"insecure\" }}\n\
             webhooks = [{{ url = \"{}\", secret = \"{SECRET}\", {events}batch = {{ max_wait = \"20ms\" }} }}]\n",
            receiver.url("/hooks")
        )
    };
    let host = TestHost::start(&config(events)).await?;
    let (mut ann, _) = host.join("demo", "user=ann").await?;
    let (mut bob, _) = host.join("demo", "user=bob").await?;
    ann.subscribe("match").await?;
    bob.subscribe("match").await?;
    eventually(|| async { Ok(delivered(&receiver)?.len() == 3) }).await?;
    ann.send_json(&json!({"type": "unsubscribe", "channel": "match"})).await?;
    while ann.next_json().await?["type"] != "unsubscribed" {}
    drop(bob);
    let expected = [
        "channel.occupied match",
        "subscription.added ann",
        "subscription.added bob",
        "subscription.removed ann",
        "subscription.removed bob",
        "channel.vacated match",
    ];
    eventually(|| async { Ok(delivered(&receiver)?.len() == expected.len()) }).await?;
    assert_eq!(delivered(&receiver)?, expected);
    let added = receiver.received().iter().flat_map(|r| verified(r).map(|v| v.1).unwrap_or_default()).nth(1);
    let added = added.context("subscription.added")?;
    assert_eq!((added["data"]["channel"].as_str(), added["data"]["connection"].is_u64()), (Some("match"), true));

    // Endpoints that list no events get occupancy but not the high-volume subscription events.
    let quiet = Receiver::start().await?;
    let host = TestHost::start(&config("").replace(&receiver.url("/hooks"), &quiet.url("/hooks"))).await?;
    let (mut cy, _) = host.join("demo", "user=cy").await?;
    cy.subscribe("lobby").await?;
    eventually(|| async { Ok(delivered(&quiet)? == ["user.online cy", "channel.occupied lobby"]) }).await?;
    Ok(())
}

#[tokio::test]
async fn a_plugin_breaker_opening_and_a_fixed_version_are_told() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let extra = format!(
        "[plugins]\nbreaker_threshold = 2\n[tenants.demo.plugins.transform]\npath = \"{}\"\non_failure = \"skip\"\n",
        notify_tests::plugin_path("hostile_trap")
    );
    let url = receiver.url("/hooks");
    let host = TestHost::start(&format!(
        "[server]\nadmin_token = \"{ADMIN}\"\n[webhooks]\nallow_private = true\n{extra}\n\
         [tenants.demo]\npublish_key = \"demo-key\"\n\
         webhooks = [{{ url = \"{url}\", secret = \"{SECRET}\", events = [\"plugin.disabled\", \"plugin.enabled\"] }}]\n"
    ))
    .await?;
    for _ in 0..3 {
        host.publish_ok(&json!({"broadcast": true, "event": "e"})).await?;
    }
    let told = || async {
        let mut events = Vec::new();
        for request in receiver.received().iter().filter(|r| r.status == 200) {
            events.extend(verified(request)?.1);
        }
        Ok::<_, anyhow::Error>(events)
    };
    eventually(|| async { Ok(told().await?.len() == 1) }).await?;
    let disabled = &told().await?[0];
    assert_eq!(
        (disabled["type"].as_str(), disabled["data"]["hook"].as_str()),
        (Some("plugin.disabled"), Some("transform"))
    );
    assert!(disabled["data"]["reason"].as_str().context("reason")?.contains("2 consecutive failures"), "{disabled}");
    assert!(disabled["data"]["node"].is_string() && disabled["data"]["version"].is_string(), "{disabled}");

    let (status, body) = Req::put("/v1/admin/tenants/demo/plugins/transform")
        .auth(Some(ADMIN))
        .body(notify_tests::plugin_bytes("redact").into())
        .reply(host.addr)
        .await?;
    assert_eq!(status, 201, "{body}");
    eventually(|| async { Ok(told().await?.len() == 2) }).await?;
    let enabled = &told().await?[1];
    assert_eq!(enabled["type"], "plugin.enabled");
    assert_eq!(enabled["data"]["version"], body["hash"], "{body}");
    Ok(())
}

#[tokio::test]
async fn refused_connects_are_summed_up_by_reason_when_asked_for() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let url = receiver.url("/hooks");
    let host = TestHost::start(&format!(
        "[webhooks]\nallow_private = true\nrefusals_every = \"200ms\"\n\
         [tenants.demo]\npublish_key = \"demo-key\"\nauth = {{ mode = \"insecure\" }}\n\
         webhooks = [{{ url = \"{url}\", secret = \"{SECRET}\", events = [\"connection.refused\"] }}]\n"
    ))
    .await?;
    for _ in 0..3 {
        let refused = notify_tests::Client::try_connect(&host.ws_url("demo", "user=bad%20user"), &[]).await?;
        assert_eq!(refused.err().context("refused")?.status, 401);
    }
    let summed = || -> anyhow::Result<(u64, Vec<Value>)> {
        let mut events = Vec::new();
        for request in receiver.received().iter().filter(|r| r.status == 200) {
            events.extend(verified(request)?.1);
        }
        let unauthorized = events.iter().filter_map(|e| e["data"]["refused"]["unauthorized"].as_u64()).sum();
        Ok((unauthorized, events))
    };
    eventually(|| async { Ok(summed()?.0 == 3) }).await?;
    let (_, events) = summed()?;
    for (event, next) in events.iter().zip(events.iter().skip(1).map(Some).chain([None])) {
        let data = &event["data"];
        if let Some(next) = next {
            assert_eq!(data["until"], next["data"]["from"], "each event counts from where the last stopped");
        }
        assert_eq!(event["type"], "connection.refused");
        assert!(data["node"].is_string() && data["from"].as_u64() < data["until"].as_u64(), "{event}");
        assert_eq!(data["refused"].as_object().map(|r| r.len()), Some(1), "only reasons that happened: {event}");
    }
    Ok(())
}

/// The config of nodes on `redis` whose tenant `demo` (with `tenant_extra`) sends `event`
/// webhooks to `receiver`.
fn on_redis(redis: &RedisServer, receiver: &Receiver, event: &str, tenant_extra: &str) -> String {
    let hooks = format!(
        "webhooks = [{{ url = \"{}\", secret = \"{SECRET}\", events = [\"{event}\"] }}]",
        receiver.url("/hooks")
    );
    format!("{DEMO}{tenant_extra}\n{hooks}\n[webhooks]\nallow_private = true\n{}", redis.broker_toml())
}

/// The offsets of the `event.acked` events delivered so far, checking each one's fields.
fn acked_offsets(receiver: &Receiver) -> anyhow::Result<Vec<u64>> {
    let mut offsets = Vec::new();
    for request in receiver.received().iter().filter(|r| r.status == 200) {
        for event in verified(request)?.1.into_iter().filter(|e| e["type"] == "event.acked") {
            let data = &event["data"];
            anyhow::ensure!(data["user"] == "ann" && data["stream"] == "user" && data["epoch"].is_string(), "{event}");
            offsets.push(data["offset"].as_u64().context("offset")?);
        }
    }
    Ok(offsets)
}

/// Publishes one event to ann and reads it on every device; the position of it.
async fn note(host: &TestHost, devices: &mut [&mut Client]) -> anyhow::Result<Value> {
    host.publish_ok(&json!({"users": ["ann"], "event": "note"})).await?;
    let mut seen = Value::Null;
    for device in devices.iter_mut() {
        seen = device.next_event().await?;
    }
    Ok(json!({"type": "ack", "epoch": seen["epoch"], "offset": seen["offset"]}))
}

/// Sends `ack` and waits for the `acked` reply.
async fn ack(device: &mut Client, ack: &Value) -> anyhow::Result<()> {
    device.send_json(ack).await?;
    acked(device).await
}

/// Waits for an `acked` reply.
async fn acked(device: &mut Client) -> anyhow::Result<()> {
    while device.next_json().await?["type"] != "acked" {}
    Ok(())
}

#[tokio::test]
async fn an_ack_that_moves_the_read_cursor_is_one_event_acked() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let host = host(&receiver.url("/hooks"), "").await?;
    let (mut phone, _) = host.join("demo", "user=ann").await?;
    let (mut laptop, _) = host.join("demo", "user=ann").await?;
    let first = note(&host, &mut [&mut phone, &mut laptop]).await?;
    let second = note(&host, &mut [&mut phone, &mut laptop]).await?;
    ack(&mut phone, &second).await?;
    // Neither the same ack from another device nor an older one moves the cursor.
    ack(&mut laptop, &second).await?;
    ack(&mut phone, &first).await?;
    let third = note(&host, &mut [&mut phone, &mut laptop]).await?;
    ack(&mut laptop, &third).await?;
    eventually(|| async { Ok(acked_offsets(&receiver)?.len() == 2) }).await?;
    assert_eq!(acked_offsets(&receiver)?, [2, 3], "one event per move of the cursor, in order");
    Ok(())
}

#[tokio::test]
async fn the_same_ack_on_two_nodes_at_once_is_one_event_acked() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let redis = RedisServer::start().await?;
    let [a, b] = ready_hosts::<2>(&on_redis(&redis, &receiver, "event.acked", "history = { acks = true }")).await?;
    let (mut on_a, _) = a.join("demo", "user=ann").await?;
    let (mut on_b, _) = b.join("demo", "user=ann").await?;
    let first = note(&a, &mut [&mut on_a, &mut on_b]).await?;
    on_a.send_json(&first).await?;
    on_b.send_json(&first).await?;
    acked(&mut on_a).await?;
    acked(&mut on_b).await?;
    // A later move through each node comes after anything either node sent for the first
    // ack: each endpoint keeps its order.
    let second = note(&a, &mut [&mut on_a, &mut on_b]).await?;
    ack(&mut on_b, &second).await?;
    let third = note(&a, &mut [&mut on_a, &mut on_b]).await?;
    ack(&mut on_a, &third).await?;
    eventually(|| async {
        let offsets = acked_offsets(&receiver)?;
        Ok(offsets.contains(&2) && offsets.contains(&3))
    })
    .await?;
    let mut offsets = acked_offsets(&receiver)?;
    offsets.sort_unstable();
    assert_eq!(offsets, [1, 2, 3], "the racing acks moved the cursor once");
    Ok(())
}

#[tokio::test]
async fn an_event_refused_by_redis_ingest_is_told_with_its_reason() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let redis = RedisServer::start().await?;
    let [_node] = ready_hosts::<1>(&on_redis(&redis, &receiver, "event.dead_lettered", "")).await?;
    let mut r = redis.conn().await?;
    let entry: String = redis::cmd("XADD")
        .arg("notify:demo:ingest")
        .arg("*")
        .arg("event")
        .arg(r#"{"users":["bob"],"event":""}"#)
        .query_async(&mut r)
        .await?;
    eventually(|| async { Ok(receiver.received().iter().any(|r| r.status == 200)) }).await?;
    let (_, events) = verified(&receiver.received()[0])?;
    assert_eq!(events.len(), 1);
    let data = &events[0]["data"];
    assert_eq!(
        (events[0]["type"].as_str(), data["source"].as_str(), data["entry"].as_str()),
        (Some("event.dead_lettered"), Some("ingest"), Some(entry.as_str()))
    );
    assert!(data["reason"].as_str().context("reason")?.contains("event"), "the reason names the field: {data}");
    assert_eq!(
        (data["event"].as_str(), &data["truncated"]),
        (Some(r#"{"users":["bob"],"event":""}"#), &Value::Bool(false))
    );
    Ok(())
}

#[tokio::test]
async fn an_event_a_plugin_drops_is_told_as_dead_lettered_over_http_and_redis_ingest() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let redis = RedisServer::start().await?;
    let plugin = format!(
        "plugins.transform = {{ path = \"{}\", config = {{ drop_event = \"internal\" }} }}\n",
        notify_tests::plugin_path("redact")
    );
    let [node] = ready_hosts::<1>(&on_redis(&redis, &receiver, "event.dead_lettered", &plugin)).await?;
    let id = node.publish_ok(&json!({"broadcast": true, "event": "internal"})).await?;
    node.publish_ok(&json!({"broadcast": true, "event": "kept"})).await?;
    let entry: String = redis::cmd("XADD")
        .arg("notify:demo:ingest")
        .arg("*")
        .arg("event")
        .arg(r#"{"broadcast":true,"event":"internal"}"#)
        .query_async(&mut redis.conn().await?)
        .await?;
    let told = || -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        for request in receiver.received().iter().filter(|r| r.status == 200) {
            events.extend(verified(request)?.1.into_iter().map(|e| e["data"].clone()));
        }
        Ok(events)
    };
    eventually(|| async { Ok(told()?.len() == 2) }).await?;
    let mut events = told()?;
    events.sort_by_key(|e| e["source"].as_str().map(str::to_owned));
    let [http, ingest] = &events[..] else { anyhow::bail!("{events:?}") };
    assert_eq!((http["source"].as_str(), http["id"].as_str()), (Some("http"), Some(id.as_str())), "{http}");
    assert!(http["reason"].as_str().context("reason")?.starts_with("plugin_refused: the transform plugin"), "{http}");
    assert_eq!((ingest["source"].as_str(), ingest["entry"].as_str()), (Some("ingest"), Some(entry.as_str())));
    assert!(ingest["reason"].as_str().context("reason")?.starts_with("plugin_refused"), "{ingest}");
    assert_eq!(ingest["event"], r#"{"broadcast":true,"event":"internal"}"#);
    let dead: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("notify:demo:dead").arg("-").arg("+").query_async(&mut redis.conn().await?).await?;
    assert_eq!(dead.len(), 1, "the ingested one is in the dead-letter stream too");
    Ok(())
}

#[tokio::test]
async fn a_failing_receiver_gets_the_batch_again_with_the_same_webhook_id() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.answer(&[500, 503, 404]);
    let host = host(&receiver.url("/hooks"), "").await?;
    let (_ann, _) = host.join("demo", "user=ann").await?;
    eventually(|| async { Ok(receiver.received().iter().any(|r| r.status == 200)) }).await?;
    let requests = receiver.received();
    let ids: Vec<String> = requests.iter().map(|r| verified(r).map(|v| v.0)).collect::<Result<_, _>>()?;
    assert_eq!(requests.iter().map(|r| r.status).collect::<Vec<_>>(), [500, 503, 404, 200]);
    assert!(ids.iter().all(|id| *id == ids[0]), "one webhook-id for every attempt: {ids:?}");
    let events: Vec<Value> =
        requests.iter().map(|r| verified(r).map(|v| v.1[0]["id"].clone())).collect::<Result<_, _>>()?;
    assert!(events.iter().all(|e| *e == events[0]), "and one event id");
    assert_eq!(host.metric("notify_webhook_requests_retried_total{tenant=\"demo\",endpoint=\"0\"}").await?, 3.0);
    assert_eq!(host.metric("notify_webhook_events_sent_total{tenant=\"demo\",endpoint=\"0\"}").await?, 1.0);
    Ok(())
}

#[tokio::test]
async fn a_batch_retried_too_long_is_dead_lettered_and_replays_through_the_admin_api() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.answer(&[500; 100]);
    let host = host(&receiver.url("/hooks"), "retry_for = \"300ms\"").await?;
    let (_ann, _) = host.join("demo", "user=ann").await?;
    let path = "/v1/admin/tenants/demo/webhooks/dead-letters";
    let list = || async {
        let (status, body) = Req::get(path).auth(Some(ADMIN)).reply(host.addr).await?;
        anyhow::ensure!(status == 200, "{status} {body}");
        Ok(body["dead_letters"].as_array().cloned().unwrap_or_default())
    };
    eventually(|| async { Ok(!list().await?.is_empty()) }).await?;
    let letter = list().await?[0].clone();
    assert_eq!(letter["events"][0]["type"], "user.online");
    assert!(letter["reason"].as_str().context("reason")?.contains("500"), "{letter}");
    assert_eq!(host.metric("notify_webhook_events_dead_lettered_total{tenant=\"demo\",endpoint=\"0\"}").await?, 1.0);
    let (status, body) = Req::get(path).auth(Some("wrong-token")).reply(host.addr).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));

    receiver.recover();
    let (status, body) = Req::post(format!("{path}/msg_nope/replay")).auth(Some(ADMIN)).reply(host.addr).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_dead_letter")));
    let id = letter["id"].as_str().context("id")?;
    let (status, _) = Req::post(format!("{path}/{id}/replay")).auth(Some(ADMIN)).reply(host.addr).await?;
    assert_eq!(status, 202);
    eventually(|| async { Ok(delivered(&receiver)? == ["user.online ann"]) }).await?;
    let request = receiver.received().into_iter().find(|r| r.status == 200).context("delivered")?;
    let (webhook_id, events) = verified(&request)?;
    assert_eq!(events[0]["id"], letter["events"][0]["id"], "the event keeps its id");
    assert_ne!(webhook_id, id, "a new request");
    assert!(list().await?.is_empty(), "it left the dead letters");
    Ok(())
}

#[tokio::test]
async fn an_endpoint_at_a_private_address_is_refused_unless_allowed() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let host = TestHost::start(&format!(
        "[tenants.demo]\npublish_key = \"demo-key\"\nauth = {{ mode = \"insecure\" }}\n\
         webhooks = [{{ url = \"{}\", secret = \"{SECRET}\" }}]\n",
        receiver.url("/hooks")
    ))
    .await?;
    let (_ann, _) = host.join("demo", "user=ann").await?;
    let dead = "notify_webhook_events_dead_lettered_total{tenant=\"demo\",endpoint=\"0\"}";
    host.wait_metric(dead, |n| n == 1.0).await?;
    assert!(receiver.received().is_empty(), "nothing reached the loopback receiver");
    assert_eq!(
        host.metric("notify_webhook_requests_retried_total{tenant=\"demo\",endpoint=\"0\"}").await?,
        0.0,
        "not retried"
    );
    Ok(())
}

#[tokio::test]
async fn webhook_settings_are_checked_at_start() -> anyhow::Result<()> {
    let config =
        |endpoint: &str| format!("[tenants.demo]\npublish_key = \"demo-key\"\nwebhooks = [{{ {endpoint} }}]\n");
    for (endpoint, key) in [
        (format!("url = \"ftp://example.com\", secret = \"{SECRET}\""), "tenants.demo.webhooks[0].url"),
        ("url = \"https://example.com\", secret = \"not-a-secret\"".to_string(), "tenants.demo.webhooks[0].secret"),
        (
            format!("url = \"https://example.com\", secret = \"{SECRET}\", events = [\"user.away\"]"),
            "tenants.demo.webhooks[0].events",
        ),
        ("url = \"https://example.com\"".to_string(), "tenants.demo.webhooks[0].secret"),
        ("url = \"https://example.com\", format = \"pusher\"".to_string(), "tenants.demo.webhooks[0].format"),
        (
            format!("url = \"https://example.com\", format = \"pusher\", secret = \"{SECRET}\""),
            "tenants.demo.webhooks[0].secret",
        ),
    ] {
        let error = TestHost::start(&config(&endpoint)).await.err().context("refused")?.to_string();
        assert!(error.contains(key), "{error}");
    }
    Ok(())
}
