//! Live plugin management: upload, validation, rollback, removal, and restarts.

use notify_tests::{Client, HostProcess, Req, TempDir, TestHost, host_bin, plugin_bytes};
use serde_json::{Value, json};

const MANAGER: &str = "shop-management-key-1";
const SECRET: &str = "plugin-secret-0123456789";

fn shop(extra: &str) -> String {
    format!(
        "[server]\nadmin_token = \"admin-token-123\"\n{extra}\n\
         [plugins]\nauth_deadline = \"250ms\"\nhook_deadline = \"250ms\"\n\
         [tenants.shop]\npublish_key = \"shop-key\"\nmanagement_key = \"{MANAGER}\"\n\
         [tenants.other]\npublish_key = \"other-key\"\n"
    )
}

async fn admin(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let auth = format!("Bearer {token}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    Req::new(method, format!("/v1/admin/tenants/shop{path}")).headers(&all).body(body.into()).reply(addr).await
}

async fn publish(addr: std::net::SocketAddr, body: Value) -> anyhow::Result<()> {
    notify_tests::published(addr, "shop-key", &body).await.map(drop)
}

async fn connect(addr: std::net::SocketAddr, query: &str) -> anyhow::Result<Client> {
    let mut c = Client::connect(&format!("ws://{addr}/v1/ws/shop?{query}"), &[]).await?;
    anyhow::ensure!(c.next_json().await?["type"] == "welcome");
    Ok(c)
}

fn token(sub: &str) -> String {
    notify_tests::hs256_token(sub, 300, None, SECRET)
}

#[tokio::test]
async fn live_upload_changes_new_traffic_and_keeps_connections() -> anyhow::Result<()> {
    let host = TestHost::start(&shop("")).await?;
    let mut alice = connect(host.addr, "user=alice").await?;
    publish(host.addr, json!({"users": ["alice"], "event": "before", "data": {"ssn": 1}})).await?;
    assert_eq!(alice.next_event().await?["data"], json!({"ssn": 1}));

    let (status, res) = admin(
        host.addr,
        "PUT",
        "/plugins/transform?on_failure=drop",
        MANAGER,
        &[("notify-plugin-config", r#"{"fields":"ssn"}"#)],
        plugin_bytes("redact"),
    )
    .await?;
    assert_eq!(status, 201, "{res}");
    assert_eq!(res["hook"], "transform");
    assert_eq!(res["on_failure"], "drop");
    assert_eq!(res["hash"].as_str().unwrap().len(), 64);
    publish(host.addr, json!({"users": ["alice"], "event": "after", "data": {"ssn": 2, "n": 1}})).await?;
    assert_eq!(alice.next_event().await?["data"], json!({"n": 1, "redacted": true}), "same connection, new behaviour");

    // An auth plugin applies to new connections; existing ones stay up.
    let (status, res) = admin(
        host.addr,
        "PUT",
        "/plugins/auth",
        "admin-token-123",
        &[("notify-plugin-config", &format!(r#"{{"secret":"{SECRET}"}}"#))],
        plugin_bytes("jwt_auth"),
    )
    .await?;
    assert_eq!(status, 201, "{res}");
    let refused =
        Client::try_connect(&format!("ws://{}/v1/ws/shop?user=mallory", host.addr), &[]).await?.err().unwrap();
    assert_eq!(refused.status, 401);
    let mut bob = connect(host.addr, &format!("token={}", token("bob"))).await?;
    publish(host.addr, json!({"users": ["alice", "bob"], "event": "both", "data": {}})).await?;
    assert_eq!(alice.next_event().await?["event"], "both");
    assert_eq!(bob.next_event().await?["event"], "both");
    Ok(())
}

#[tokio::test]
async fn invalid_uploads_are_rejected_with_a_reason() -> anyhow::Result<()> {
    let host = TestHost::start(&shop("")).await?;
    let (status, res) =
        admin(host.addr, "PUT", "/plugins/transform", MANAGER, &[], b"not wasm at all".to_vec()).await?;
    assert_eq!(status, 400);
    assert_eq!(res["error"]["code"], "invalid_plugin");
    assert!(res["error"]["message"].as_str().unwrap().contains("not a WebAssembly component"), "{res}");

    let (status, res) = admin(host.addr, "PUT", "/plugins/auth", MANAGER, &[], plugin_bytes("segment_router")).await?;
    assert_eq!(status, 400);
    assert!(res["error"]["message"].as_str().unwrap().contains("`authenticator` world"), "{res}");

    // A core module (not a component) is refused too.
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let (status, _) = admin(host.addr, "PUT", "/plugins/route", MANAGER, &[], core_module).await?;
    assert_eq!(status, 400);

    let (status, _) =
        admin(host.addr, "PUT", "/plugins/route", "wrong-token-123", &[], plugin_bytes("segment_router")).await?;
    assert_eq!(status, 403);
    let (status, _) = Req::put("/v1/admin/tenants/shop/plugins/route")
        .body(plugin_bytes("segment_router").into())
        .reply(host.addr)
        .await?;
    assert_eq!(status, 401);
    let (status, res) = admin(host.addr, "PUT", "/plugins/bogus", MANAGER, &[], plugin_bytes("redact")).await?;
    assert_eq!((status, res["error"]["code"].as_str()), (404, Some("unknown_hook")));
    let (status, res) =
        admin(host.addr, "PUT", "/plugins/auth?on_failure=skip", MANAGER, &[], plugin_bytes("jwt_auth")).await?;
    assert_eq!((status, res["error"]["code"].as_str()), (400, Some("invalid_policy")));
    // The other tenant's management key does not manage shop.
    let (status, _) = admin(host.addr, "GET", "/plugins", "other-key", &[], Vec::new()).await?;
    assert_eq!(status, 403);
    let (_, list) = admin(host.addr, "GET", "/plugins", MANAGER, &[], Vec::new()).await?;
    assert_eq!(list["plugins"], json!([]), "nothing was installed");
    Ok(())
}

#[tokio::test]
async fn rollback_and_delete() -> anyhow::Result<()> {
    let host = TestHost::start(&shop("")).await?;
    let mut c = connect(host.addr, "user=cy").await?;
    for (stamp, policy) in [("v1", "skip"), ("v2", "drop")] {
        let config = format!(r#"{{"stamp":"{stamp}"}}"#);
        let (status, _) = admin(
            host.addr,
            "PUT",
            &format!("/plugins/transform?on_failure={policy}"),
            MANAGER,
            &[("notify-plugin-config", &config)],
            plugin_bytes("redact"),
        )
        .await?;
        assert_eq!(status, 201);
    }
    publish(host.addr, json!({"users": ["cy"], "event": "e", "data": {}})).await?;
    assert_eq!(c.next_event().await?["data"], json!({"v2": true}));
    // The same bytes twice: the rollback target is told apart by its policy and config.
    let (_, list) = admin(host.addr, "GET", "/plugins", MANAGER, &[], Vec::new()).await?;
    let (active, earlier) = (&list["plugins"][0]["active"], &list["plugins"][0]["history"][0]);
    assert_eq!(active["hash"], earlier["hash"]);
    assert_eq!((active["on_failure"].as_str(), earlier["on_failure"].as_str()), (Some("drop"), Some("skip")));
    assert_eq!(earlier["config_keys"], json!(["stamp"]));
    assert_ne!(active["config_fingerprint"], earlier["config_fingerprint"], "{list}");
    assert!(!list.to_string().contains("v1"), "config values are never shown: {list}");

    let (status, res) = admin(host.addr, "POST", "/plugins/transform/rollback", MANAGER, &[], Vec::new()).await?;
    assert_eq!(status, 200, "{res}");
    publish(host.addr, json!({"users": ["cy"], "event": "e", "data": {}})).await?;
    assert_eq!(c.next_event().await?["data"], json!({"v1": true}));

    let (_, list) = admin(host.addr, "GET", "/plugins", MANAGER, &[], Vec::new()).await?;
    let transform = &list["plugins"][0];
    assert_eq!(transform["hook"], "transform");
    assert_eq!(transform["active"]["config_keys"], json!(["stamp"]));
    assert_eq!(transform["active"]["calls"], 1);
    assert_eq!(transform["history"].as_array().unwrap().len(), 0);

    let (status, res) = admin(host.addr, "POST", "/plugins/transform/rollback", MANAGER, &[], Vec::new()).await?;
    assert_eq!((status, res["error"]["code"].as_str()), (409, Some("no_plugin")));

    let (status, _) = admin(host.addr, "DELETE", "/plugins/transform", MANAGER, &[], Vec::new()).await?;
    assert_eq!(status, 204);
    publish(host.addr, json!({"users": ["cy"], "event": "e", "data": {"raw": 1}})).await?;
    assert_eq!(c.next_event().await?["data"], json!({"raw": 1}));
    let (status, _) = admin(host.addr, "DELETE", "/plugins/transform", MANAGER, &[], Vec::new()).await?;
    assert_eq!(status, 409);
    Ok(())
}

#[tokio::test]
async fn uploaded_plugins_survive_a_restart() -> anyhow::Result<()> {
    let data = TempDir::new("plugin-data")?;
    let toml = shop(&format!("data_dir = \"{}\"", data.path.display()));
    let mut host = HostProcess::start(host_bin!(), &toml).await?;
    let (status, _) = admin(
        host.addr,
        "PUT",
        "/plugins/transform",
        MANAGER,
        &[("notify-plugin-config", r#"{"fields":"pin","stamp":"kept"}"#)],
        plugin_bytes("redact"),
    )
    .await?;
    assert_eq!(status, 201);
    let (status, _) = admin(host.addr, "PUT", "/plugins/route", MANAGER, &[], plugin_bytes("segment_router")).await?;
    assert_eq!(status, 201);
    let (status, _) = admin(host.addr, "DELETE", "/plugins/route", MANAGER, &[], Vec::new()).await?;
    assert_eq!(status, 204);
    host.signal("TERM")?;
    assert_eq!(host.child.wait().await?.code(), Some(0));

    let host = HostProcess::start(host_bin!(), &toml).await?;
    let (_, list) = admin(host.addr, "GET", "/plugins", MANAGER, &[], Vec::new()).await?;
    let plugins = list["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 2, "{list}");
    assert_eq!(plugins[0]["hook"], "transform");
    assert_eq!(plugins[0]["active"]["source"], "upload");
    assert_eq!(plugins[1]["hook"], "route");
    assert_eq!(plugins[1]["active"], Value::Null, "a deleted hook stays deleted");
    assert_eq!(plugins[1]["history"].as_array().unwrap().len(), 1);
    let mut c = connect(host.addr, "user=dee").await?;
    publish(host.addr, json!({"users": ["dee"], "event": "e", "data": {"pin": 1234, "a": 1}})).await?;
    assert_eq!(c.next_event().await?["data"], json!({"a": 1, "kept": true}));
    Ok(())
}

#[tokio::test]
async fn only_running_versions_stay_compiled_in_memory_and_a_rollback_loads_from_disk() -> anyhow::Result<()> {
    let parent = TempDir::new("plugin-artifacts")?;
    let toml = shop("").replace("[plugins]\n", &format!("[plugins]\nartifacts_dir = \"{}\"\n", parent.path.display()));
    let host = TestHost::start(&toml).await?;
    let mut c = connect(host.addr, "user=cy").await?;
    let held = async || -> anyhow::Result<[f64; 4]> {
        Ok([
            host.metric("notify_plugin_components{where=\"memory\"}").await?,
            host.metric("notify_plugin_components{where=\"disk\"}").await?,
            host.metric("notify_plugin_component_loads_total{from=\"compile\"}").await?,
            host.metric("notify_plugin_component_loads_total{from=\"disk\"}").await?,
        ])
    };
    let stamp = [("notify-plugin-config", r#"{"stamp":"v1"}"#)];
    let (status, _) = admin(host.addr, "PUT", "/plugins/transform", MANAGER, &stamp, plugin_bytes("redact")).await?;
    assert_eq!(status, 201);
    let (status, _) = admin(host.addr, "PUT", "/plugins/transform", MANAGER, &[], plugin_bytes("slow_start")).await?;
    assert_eq!(status, 201);
    publish(host.addr, json!({"users": ["cy"], "event": "e", "data": {}})).await?;
    assert_eq!(c.next_event().await?["data"], json!({"call": 1}));
    assert_eq!(held().await?, [1.0, 2.0, 2.0, 0.0], "the replaced version is on disk only");
    let dirs: Vec<_> = std::fs::read_dir(&parent.path)?.collect::<Result<_, _>>()?;
    assert_eq!(dirs.len(), 1, "one private directory for the node");
    let mut kept: Vec<String> = std::fs::read_dir(dirs[0].path())?
        .map(|f| Ok(f?.path().extension().unwrap_or_default().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    kept.sort();
    assert_eq!(kept, ["cwasm", "cwasm", "wasm", "wasm"], "each version's bytes and its compiled form");

    let (status, res) = admin(host.addr, "POST", "/plugins/transform/rollback", MANAGER, &[], Vec::new()).await?;
    assert_eq!(status, 200, "{res}");
    publish(host.addr, json!({"users": ["cy"], "event": "e", "data": {}})).await?;
    assert_eq!(c.next_event().await?["data"], json!({"v1": true}));
    assert_eq!(held().await?, [1.0, 1.0, 2.0, 1.0], "restored from disk; the version rolled back from is gone");

    let (status, _) = admin(host.addr, "DELETE", "/plugins/transform", MANAGER, &[], Vec::new()).await?;
    assert_eq!(status, 204);
    assert_eq!(held().await?, [0.0, 1.0, 2.0, 1.0], "a removed plugin leaves memory, not the disk");
    let (status, res) = admin(host.addr, "POST", "/plugins/transform/rollback", MANAGER, &[], Vec::new()).await?;
    assert_eq!(status, 200, "{res}");
    publish(host.addr, json!({"users": ["cy"], "event": "e", "data": {}})).await?;
    assert_eq!(c.next_event().await?["data"], json!({"v1": true}));
    assert_eq!(held().await?, [1.0, 1.0, 2.0, 2.0]);
    Ok(())
}
