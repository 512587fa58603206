//! Pusher connections are notify connections underneath: the tenant's quotas refuse them
//! with Pusher's code, its transform plugin rewrites what they get, notify's own clients and
//! Pusher's get the same events, and the metrics count them. (The clients themselves are
//! tested with pusher-js, Laravel Echo and the official server libraries in
//! clients/js/test/pusher-client.test.js and tests/python/pusher_test.py.)

use futures_util::SinkExt;
use notify_tests::{Client, TestHost, plugin_path};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const APP: &str = "pusher = { app_id = \"5\", key = \"app-key\", secret = \"app-secret-0123456789\" }";

fn config(extra: &str) -> String {
    format!(
        "[tenants.demo]\npublish_key = \"demo-key\"\nauth = {{ mode = \"insecure\" }}\n{APP}\n\
         limits = {{ max_connections = 2 }}\n{extra}"
    )
}

async fn pusher(host: &TestHost) -> anyhow::Result<Client> {
    let mut c = Client::connect(&format!("ws://{}/app/app-key?protocol=7", host.addr), &[]).await?;
    assert_eq!(c.next_json().await?["event"], "pusher:connection_established");
    Ok(c)
}

/// The data of a Pusher event frame: a JSON string holding the event's data.
fn data(frame: &Value) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(frame["data"].as_str().unwrap_or("null"))?)
}

#[tokio::test]
async fn pusher_connections_pass_the_tenants_quota_plugins_and_metrics() -> anyhow::Result<()> {
    let plugin = format!(
        "[tenants.demo.plugins.transform]\npath = \"{}\"\nconfig = {{ fields = \"ssn\" }}\n",
        plugin_path("redact")
    );
    let host = TestHost::start(&config(&plugin)).await?;
    let mut p = pusher(&host).await?;
    p.send_json(&json!({"event": "pusher:subscribe", "data": {"channel": "orders"}})).await?;
    assert_eq!(p.next_json().await?["event"], "pusher_internal:subscription_succeeded");
    let (mut native, _) = host.join("demo", "user=ann&channels=orders").await?;

    // The quota counts Pusher and native connections alike: a third is refused with 4004.
    let mut third = Client::connect(&format!("ws://{}/app/app-key?protocol=7", host.addr), &[]).await?;
    let refusal = third.next_json().await?;
    assert_eq!((refusal["event"].as_str(), refusal["data"]["code"].as_u64()), (Some("pusher:error"), Some(4004)));
    assert_eq!(third.close_code().await?, 4004);

    // One publish reaches both, through the tenant's transform.
    let body = json!({"channels": ["orders"], "event": "placed", "data": {"id": 7, "ssn": "123-45-6789"}});
    assert_eq!(host.publish("demo-key", &body).await?.0, 202);
    let to_pusher = p.next_json().await?;
    assert_eq!((to_pusher["event"].as_str(), to_pusher["channel"].as_str()), (Some("placed"), Some("orders")));
    let (seen_by_pusher, seen_by_native) = (data(&to_pusher)?, native.next_event().await?["data"].clone());
    assert_eq!(seen_by_pusher, seen_by_native, "the same event, encoded for each protocol");
    assert_eq!(seen_by_pusher["id"], 7);
    assert_ne!(seen_by_pusher["ssn"], "123-45-6789", "the transform redacted it");

    assert_eq!(host.metric("notify_connections{tenant=\"demo\"}").await?, 2.0);
    assert!(host.metric("notify_frames_enqueued_total{tenant=\"demo\"}").await? >= 2.0);
    Ok(())
}

#[tokio::test]
async fn bad_pusher_frames_get_errors_and_the_connection_stays() -> anyhow::Result<()> {
    let host = TestHost::start(&config("")).await?;
    let mut p = pusher(&host).await?;
    for bad in ["not json", r#"{"event":"pusher:subscribe","data":{}}"#, r#"{"no":"event"}"#] {
        p.ws.send(Message::text(bad)).await?;
        let error = p.next_json().await?;
        assert_eq!(error["event"], "pusher:error", "{bad}: {error}");
    }
    p.send_json(&json!({"event": "pusher:subscribe", "data": {"channel": "bad channel!"}})).await?;
    let refused = p.next_json().await?;
    assert_eq!(
        (refused["event"].as_str(), refused["data"]["type"].as_str()),
        (Some("pusher:subscription_error"), Some("InvalidChannel"))
    );
    p.send_json(&json!({"event": "pusher:ping", "data": {}})).await?;
    assert_eq!(p.next_json().await?["event"], "pusher:pong", "still served");
    let mut missing = Client::connect(&format!("ws://{}/app/app-key", host.addr), &[]).await?;
    assert_eq!(missing.next_json().await?["data"]["code"], 4008, "no protocol version");
    Ok(())
}
