//! Tenants created and deleted at runtime through the admin API, on one node with the file
//! control-plane store.

use notify_tests::{Client, HostProcess, Req, TempDir, TestHost, host_bin};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123";

fn config(data_dir: Option<&std::path::Path>) -> String {
    let data = data_dir.map(|d| format!("data_dir = \"{}\"\n", d.display())).unwrap_or_default();
    format!("[server]\nadmin_token = \"{ADMIN}\"\n{data}\n{}", notify_tests::DEMO)
}

async fn admin(host: std::net::SocketAddr, method: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    Req::new(method, format!("/v1/admin/tenants{path}")).key(ADMIN).body(body.into()).reply(host).await
}

#[tokio::test]
async fn a_created_tenant_connects_publishes_and_is_deleted() -> anyhow::Result<()> {
    let host = TestHost::start(&config(None)).await?;
    let spec = json!({ "id": "acme", "auth": { "mode": "insecure" }, "history": { "size": 10 } });
    let (status, created) = admin(host.addr, "POST", "", spec.clone()).await?;
    assert_eq!(status, 201, "{created}");
    let publish_key = created["publish_key"].as_str().unwrap().to_owned();
    assert!(publish_key.starts_with("pk_") && publish_key.len() > 60);
    assert!(created["management_key"].as_str().unwrap().starts_with("mk_"));
    assert_eq!((created["id"].clone(), created["source"].clone()), (json!("acme"), json!("api")));

    let (status, again) = admin(host.addr, "POST", "", spec).await?;
    assert_eq!((status, again["error"]["code"].clone()), (409, json!("tenant_exists")));
    let (_, list) = admin(host.addr, "GET", "", Value::Null).await?;
    let listed = list.to_string();
    assert!(!listed.contains(&publish_key) && !listed.contains("mk_"), "no secret is ever listed: {listed}");
    let ids: Vec<_> = list["tenants"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    assert_eq!(ids, [json!("acme"), json!("demo")]);
    let (_, one) = admin(host.addr, "GET", "/acme", Value::Null).await?;
    assert_eq!(one["publish_key_fingerprint"], created["publish_key_fingerprint"]);

    let (mut client, welcome) = host.join("acme", "user=alice").await?;
    assert_eq!(welcome["tenant"], "acme");
    let (status, _) = host.publish(&publish_key, &json!({ "users": ["alice"], "event": "hello" })).await?;
    assert_eq!(status, 202);
    assert_eq!(client.next_event().await?["event"], "hello");
    let (status, _) = host.publish("demo-key", &json!({ "users": ["alice"], "event": "other-tenant" })).await?;
    assert_eq!(status, 202);

    let (status, _) = admin(host.addr, "DELETE", "/acme", Value::Null).await?;
    assert_eq!(status, 204);
    assert_eq!(client.close_code().await?, 4004);
    let (status, _) = host.publish(&publish_key, &json!({ "users": ["alice"], "event": "late" })).await?;
    assert_eq!(status, 401, "a deleted tenant's key is refused");
    let refused = Client::try_connect(&host.ws_url("acme", "user=alice"), &[]).await?.err().unwrap();
    assert_eq!(refused.status, 404);
    let (status, _) = admin(host.addr, "GET", "/acme", Value::Null).await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn configured_tenants_are_read_only_and_bad_requests_name_the_field() -> anyhow::Result<()> {
    let host = TestHost::start(&config(None)).await?;
    let (status, body) = admin(host.addr, "DELETE", "/demo", Value::Null).await?;
    assert_eq!((status, body["error"]["code"].clone()), (409, json!("managed_by_config")));
    let (status, body) = admin(host.addr, "POST", "", json!({ "id": "demo" })).await?;
    assert_eq!((status, body["error"]["code"].clone()), (409, json!("tenant_exists")));
    let (status, body) = admin(host.addr, "POST", "", json!({ "id": "Bad Id" })).await?;
    assert_eq!((status, body["error"]["field"].clone()), (400, json!("id")));
    let (status, body) =
        admin(host.addr, "POST", "", json!({ "id": "x", "history": { "size": 0, "acks": true } })).await?;
    assert_eq!((status, body["error"]["field"].clone()), (400, json!("history.acks")), "{body}");
    // A tenant's plugin instances live in the node's memory slots: its cap may only be lower.
    let over = json!({ "id": "x", "limits": { "plugin_memory_bytes": 64 << 20 } });
    let (status, body) = admin(host.addr, "POST", "", over).await?;
    assert_eq!((status, body["error"]["field"].clone()), (400, json!("limits.plugin_memory_bytes")), "{body}");
    // Nor may it have more calls in progress than the node has instances.
    let over = json!({ "id": "x", "limits": { "plugin_instances": 1_000_000 } });
    let (status, body) = admin(host.addr, "POST", "", over).await?;
    assert_eq!((status, body["error"]["field"].clone()), (400, json!("limits.plugin_instances")), "{body}");
    let (status, body) = admin(host.addr, "POST", "", json!({ "id": "x", "colour": 1 })).await?;
    assert_eq!((status, body["error"]["code"].clone()), (400, json!("invalid_field")));
    let (status, _) = Req::get("/v1/admin/tenants").key("demo-key").body(Vec::new().into()).reply(host.addr).await?;
    assert_eq!(status, 403, "only the admin token manages tenants");
    let (status, _) = Req::get("/v1/admin/tenants").body(Vec::new().into()).reply(host.addr).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn api_tenants_survive_a_restart_with_the_file_store() -> anyhow::Result<()> {
    let data = TempDir::new("tenant-data")?;
    let toml = config(Some(&data.path));
    let mut host = HostProcess::start(host_bin!(), &toml).await?;
    let (status, created) = admin(host.addr, "POST", "", json!({ "id": "kept" })).await?;
    assert_eq!(status, 201);
    let (status, _) = admin(host.addr, "POST", "", json!({ "id": "dropped" })).await?;
    assert_eq!(status, 201);
    let (status, _) = admin(host.addr, "DELETE", "/dropped", Value::Null).await?;
    assert_eq!(status, 204);
    let publish_key = created["publish_key"].as_str().unwrap().to_owned();
    let manager = format!("Bearer {}", created["management_key"].as_str().unwrap());
    let plugins = "/v1/admin/tenants/kept/plugins";
    let upload = notify_tests::plugin_bytes("redact");
    let (status, _) = Req::put(format!("{plugins}/transform"))
        .headers(&[("authorization", &manager)])
        .body(upload.into())
        .reply(host.addr)
        .await?;
    assert_eq!(status, 201, "the tenant's own management key uploads plugins");
    let stored = std::fs::read_to_string(data.path.join("control-plane.json"))?;
    assert!(stored.contains("kept") && !stored.contains(&publish_key), "keys are stored as digests only");
    host.signal("TERM")?;
    assert_eq!(host.child.wait().await?.code(), Some(0));

    let host = HostProcess::start(host_bin!(), &toml).await?;
    let (_, list) = admin(host.addr, "GET", "", Value::Null).await?;
    let ids: Vec<_> = list["tenants"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    assert_eq!(ids, [json!("demo"), json!("kept")]);
    let body = json!({ "broadcast": true, "event": "still-here" }).to_string();
    let (status, _) = Req::post("/v1/publish").key(&publish_key).body(body.into()).reply(host.addr).await?;
    assert_eq!(status, 202, "the key works after the restart");
    let (_, list) =
        Req::get(plugins).headers(&[("authorization", &manager)]).body(Vec::new().into()).reply(host.addr).await?;
    assert_eq!(list["plugins"][0]["active"]["state"], "active", "its uploaded plugin came back too: {list}");
    Ok(())
}

#[tokio::test]
async fn rotated_keys_overlap_then_stop() -> anyhow::Result<()> {
    let host = TestHost::start(&config(None)).await?;
    let (_, created) = admin(host.addr, "POST", "", json!({ "id": "acme" })).await?;
    let first = created["publish_key"].as_str().unwrap().to_owned();
    let manager = created["management_key"].as_str().unwrap().to_owned();
    let publish = |key: String| {
        let addr = host.addr;
        async move {
            let body = json!({ "broadcast": true, "event": "e" }).to_string();
            Ok::<_, anyhow::Error>(Req::post("/v1/publish").key(&key).body(body.into()).reply(addr).await?.0)
        }
    };

    let (status, rotated) = admin(host.addr, "POST", "/acme/keys/publish", json!({ "overlap": "1h" })).await?;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!((publish(first.clone()).await?, publish(second.clone()).await?), (202, 202), "both work in the overlap");
    let (_, one) = admin(host.addr, "GET", "/acme", Value::Null).await?;
    let keys = one["publish_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys[0]["expires_at"].is_null() && keys[1]["expires_at"].is_u64(), "{one}");
    assert!(!one.to_string().contains(&second), "the new key is shown once, at the rotation");

    let (status, rotated) = admin(host.addr, "POST", "/acme/keys/publish", Value::Null).await?;
    assert_eq!(status, 200);
    let third = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(publish(third).await?, 202);
    assert_eq!((publish(first).await?, publish(second).await?), (401, 401), "no overlap: the old keys stop at once");

    let plugins = "/v1/admin/tenants/acme/plugins";
    let (status, _) = Req::get(plugins).key(&manager).body(Vec::new().into()).reply(host.addr).await?;
    assert_eq!(status, 200);
    let (_, rotated) = admin(host.addr, "POST", "/acme/keys/management", Value::Null).await?;
    let (status, _) = Req::get(plugins).key(&manager).body(Vec::new().into()).reply(host.addr).await?;
    assert_eq!(status, 403, "the old management key no longer manages the tenant");
    let new_manager = rotated["key"].as_str().unwrap();
    let (status, _) = Req::get(plugins).key(new_manager).body(Vec::new().into()).reply(host.addr).await?;
    assert_eq!(status, 200);

    let (status, body) = admin(host.addr, "POST", "/demo/keys/publish", Value::Null).await?;
    assert_eq!((status, body["error"]["code"].clone()), (409, json!("managed_by_config")));
    let (status, _) = admin(host.addr, "POST", "/acme/keys/other", Value::Null).await?;
    assert_eq!(status, 404);
    let (status, body) = admin(host.addr, "POST", "/acme/keys/publish", json!({ "overlap": "soon" })).await?;
    assert_eq!((status, body["error"]["field"].clone()), (400, json!("overlap")));
    Ok(())
}

#[tokio::test]
async fn settings_change_for_new_connections_and_conflicting_changes_are_refused() -> anyhow::Result<()> {
    let host = TestHost::start(&config(None)).await?;
    let (_, created) =
        admin(host.addr, "POST", "", json!({ "id": "acme", "limits": { "max_connections": 1 } })).await?;
    let publish_key = created["publish_key"].as_str().unwrap().to_owned();
    let (first, _) = host.join("acme", "user=u1").await?;
    let refused = Client::try_connect(&host.ws_url("acme", "user=u2"), &[]).await?.err().expect("at its quota");
    assert_eq!(refused.status, 429);

    let (status, headers, _) =
        Req::get("/v1/admin/tenants/acme").key(ADMIN).body(Vec::new().into()).full(host.addr).await?;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str()?.to_owned();
    let patch = json!({ "limits": { "max_connections": 2 }, "allowed_origins": ["https://acme.example"] });
    let (status, patched) = Req::patch("/v1/admin/tenants/acme")
        .headers(&[("authorization", &format!("Bearer {ADMIN}")), ("if-match", &etag)])
        .body(patch.to_string().into())
        .reply(host.addr)
        .await?;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["limits"]["max_connections"], 2);
    assert_eq!(patched["revision"], 1);
    let origin = [("origin", "https://acme.example")];
    let _second = Client::connect(&host.ws_url("acme", "user=u2"), &origin).await?;
    let refused = Client::try_connect(&host.ws_url("acme", "user=u3"), &origin).await?.err().expect("at the new quota");
    assert_eq!(refused.status, 429, "the raised limit counts the connection admitted before the change");
    let wrong = Client::try_connect(&host.ws_url("acme", "user=u4"), &[("origin", "https://evil.example")]).await?;
    assert_eq!(wrong.err().expect("origin refused").status, 403, "new connections see the new origins");
    let (status, _) = host.publish(&publish_key, &json!({ "broadcast": true, "event": "e" })).await?;
    assert_eq!(status, 202, "the keys are unchanged");

    let (status, body) = Req::patch("/v1/admin/tenants/acme")
        .headers(&[("authorization", &format!("Bearer {ADMIN}")), ("if-match", &etag)])
        .body(json!({ "slow_client": "drop_oldest" }).to_string().into())
        .reply(host.addr)
        .await?;
    assert_eq!((status, body["error"]["code"].clone()), (409, json!("version_conflict")), "a stale version");
    let (status, body) = admin(host.addr, "PATCH", "/acme", json!({ "history": { "size": 0, "acks": true } })).await?;
    assert_eq!((status, body["error"]["field"].clone()), (400, json!("history.acks")));
    let (status, body) = admin(host.addr, "PATCH", "/demo", json!({ "allowed_origins": [] })).await?;
    assert_eq!((status, body["error"]["code"].clone()), (409, json!("managed_by_config")));
    drop(first);
    Ok(())
}

fn token(kid: Option<&str>, secret: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims = json!({ "sub": "alice", "exp": exp });
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[tokio::test]
async fn jwt_keys_rotate_by_kid() -> anyhow::Result<()> {
    const OLD: &str = "old-secret-0123456789";
    const NEW: &str = "new-secret-0123456789";
    let host = TestHost::start(&config(None)).await?;
    let auth = |keys: serde_json::Value| json!({ "auth": { "mode": "jwt", "keys": keys } });
    let mut spec = auth(json!([{ "kid": "old", "hs256_secret": OLD }]));
    spec["id"] = json!("acme");
    let (status, created) = admin(host.addr, "POST", "", spec).await?;
    assert_eq!(status, 201, "{created}");
    assert!(!created.to_string().contains(OLD), "secrets are never shown");
    let connects = |kid: Option<&'static str>, secret: &'static str| {
        let url = host.ws_url("acme", &format!("token={}", token(kid, secret)));
        async move {
            Ok::<_, anyhow::Error>(Client::try_connect(&url, &[]).await?.map(|_| 101).unwrap_or_else(|r| r.status))
        }
    };
    assert_eq!(connects(Some("old"), OLD).await?, 101);
    assert_eq!(connects(Some("new"), NEW).await?, 401, "no key named new yet");

    let both = auth(json!([{ "kid": "new", "hs256_secret": NEW }, { "kid": "old", "hs256_secret": OLD }]));
    let (status, _) = admin(host.addr, "PATCH", "/acme", both).await?;
    assert_eq!(status, 200);
    assert_eq!((connects(Some("old"), OLD).await?, connects(Some("new"), NEW).await?), (101, 101));
    assert_eq!(connects(None, NEW).await?, 101, "a token without kid is tried against every key");
    assert_eq!(connects(Some("old"), NEW).await?, 401, "the kid picks the key");

    let (status, _) = admin(host.addr, "PATCH", "/acme", auth(json!([{ "kid": "new", "hs256_secret": NEW }]))).await?;
    assert_eq!(status, 200);
    assert_eq!((connects(Some("old"), OLD).await?, connects(Some("new"), NEW).await?), (401, 101));
    let dup = auth(json!([{ "kid": "k", "hs256_secret": NEW }, { "kid": "k", "hs256_secret": OLD }]));
    let (status, body) = admin(host.addr, "PATCH", "/acme", dup).await?;
    assert_eq!((status, body["error"]["field"].clone()), (400, json!("auth.keys[1].kid")));
    Ok(())
}
