//! Three host processes over one Redis run the same plugins: an upload, a rollback or a
//! delete on any node acts on every node's live traffic, without dropping a connection, and
//! a node that starts (or restarts) runs the current plugins before it is ready.

use std::net::SocketAddr;

use notify_tests::{
    Client, HostProcess, RedisServer, Req, eventually, host_bin, plugin_bytes, publish_to, publish_until,
};
use serde_json::{Value, json};

const MANAGER: &str = "shop-management-key-1";

fn config(redis: &RedisServer) -> String {
    format!(
        "[server]\nadmin_token = \"admin-token-123\"\n\
         [tenants.shop]\npublish_key = \"shop-key\"\nmanagement_key = \"{MANAGER}\"\n{}",
        redis.broker_toml()
    )
}

async fn start(toml: &str) -> anyhow::Result<HostProcess> {
    let host = HostProcess::start(host_bin!(), toml).await?;
    eventually(|| async { Ok(Req::get("/readyz").body(Vec::new().into()).reply(host.addr).await?.0 == 200) }).await?;
    Ok(host)
}

async fn plugins(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let auth = format!("Bearer {MANAGER}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    Req::new(method, format!("/v1/admin/tenants/shop/plugins{path}")).headers(&all).body(body.into()).reply(addr).await
}

async fn upload(addr: SocketAddr, stamp: &str) -> anyhow::Result<String> {
    let config = format!(r#"{{"stamp":"{stamp}"}}"#);
    let headers = [("notify-plugin-config", config.as_str())];
    let (status, body) = plugins(addr, "PUT", "/transform", &headers, plugin_bytes("redact")).await?;
    anyhow::ensure!(status == 201, "{status} {body}");
    Ok(body["hash"].as_str().unwrap_or_default().to_owned())
}

/// Publishes `{}` to `user` through `node` and returns the data the user receives.
async fn published(node: SocketAddr, user: &str, client: &mut Client) -> anyhow::Result<Value> {
    let body = json!({ "users": [user], "event": "e", "data": {} });
    let (status, res) = publish_to(node, "shop-key", &body).await?;
    anyhow::ensure!(status == 202, "{status} {res}");
    Ok(client.next_event().await?["data"].clone())
}

async fn connect(node: SocketAddr, user: &str) -> anyhow::Result<Client> {
    let mut c = Client::connect(&format!("ws://{node}/v1/ws/shop?user={user}"), &[]).await?;
    anyhow::ensure!(c.next_json().await?["type"] == "welcome");
    Ok(c)
}

/// Waits until events published through each node arrive as `expected`.
async fn every_node_delivers(
    nodes: &[SocketAddr],
    client: &mut Client,
    user: &str,
    expected: &Value,
) -> anyhow::Result<()> {
    for node in nodes {
        publish_until(*node, "shop-key", user, client, expected).await?;
    }
    Ok(())
}

#[tokio::test]
async fn plugin_changes_on_any_node_act_on_every_node() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = config(&redis);
    let (a, b, c) = (start(&toml).await?, start(&toml).await?, start(&toml).await?);
    let nodes = [a.addr, b.addr, c.addr];
    let mut bob = connect(b.addr, "bob").await?;
    assert_eq!(published(c.addr, "bob", &mut bob).await?, json!({}));

    // Uploaded on A: B and C transform with it.
    let v1 = upload(a.addr, "v1").await?;
    every_node_delivers(&nodes, &mut bob, "bob", &json!({ "v1": true })).await?;
    let v2 = upload(a.addr, "v2").await?;
    every_node_delivers(&nodes, &mut bob, "bob", &json!({ "v2": true })).await?;

    // Every live node reports the version it runs.
    eventually(|| async {
        let (_, list) = plugins(b.addr, "GET", "", &[], Vec::new()).await?;
        let nodes = list["nodes"].as_array().cloned().unwrap_or_default();
        Ok(nodes.len() == 3 && nodes.iter().all(|n| n["plugins"][0]["hash"] == v2.as_str()))
    })
    .await?;

    // Rolled back on C: A and B follow.
    let (status, res) = plugins(c.addr, "POST", "/transform/rollback", &[], Vec::new()).await?;
    assert_eq!((status, res["hash"].as_str()), (200, Some(v1.as_str())), "{res}");
    every_node_delivers(&nodes, &mut bob, "bob", &json!({ "v1": true })).await?;

    // A node that starts now downloads and runs the plugin before it is ready.
    let d = start(&toml).await?;
    assert_eq!(published(d.addr, "bob", &mut bob).await?, json!({ "v1": true }));

    // Deleted on B: nobody transforms.
    let (status, _) = plugins(b.addr, "DELETE", "/transform", &[], Vec::new()).await?;
    assert_eq!(status, 204);
    every_node_delivers(&[a.addr, b.addr, c.addr, d.addr], &mut bob, "bob", &json!({})).await?;

    // Bob's connection lived through every change (he got every event above).
    let (_, list) = plugins(a.addr, "GET", "", &[], Vec::new()).await?;
    assert_eq!(list["plugins"][0]["active"], Value::Null, "{list}");
    let history = &list["plugins"][0]["history"];
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!((history[0]["hash"].as_str(), history[0]["source"].as_str()), (Some(v1.as_str()), Some("upload")));
    assert_eq!((history[0]["on_failure"].as_str(), &history[0]["config_keys"]), (Some("retry"), &json!(["stamp"])));
    assert_eq!(list["nodes"].as_array().map(Vec::len), Some(4), "{list}");
    Ok(())
}
