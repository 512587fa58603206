//! Plugins written in JavaScript (componentize-js) and Python (componentize-py): the
//! examples of plugins/javascript and plugins/python, one per hook, uploaded through the
//! admin API with the host's default limits, act on traffic as the Rust ones do.

use anyhow::Context as _;
use notify_tests::{Client, PATIENCE, Req, TestHost, plugin_bytes, publish_to};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123";

async fn upload(host: &TestHost, tenant: &str, plugin: &str) -> anyhow::Result<Value> {
    upload_to(host, tenant, "transform", plugin, r#"{"fields":"ssn,card"}"#).await
}

async fn upload_to(host: &TestHost, tenant: &str, hook: &str, plugin: &str, config: &str) -> anyhow::Result<Value> {
    let headers = [("authorization", format!("Bearer {ADMIN}")), ("notify-plugin-config", config.into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = format!("/v1/admin/tenants/{tenant}/plugins/{hook}");
    let (status, body) =
        Req::put(&path).headers(&headers).body(plugin_bytes(plugin).into()).within(PATIENCE).reply(host.addr).await?;
    anyhow::ensure!(status == 201, "uploading {plugin}: {status} {body}");
    Ok(body)
}

async fn publish(host: &TestHost, key: &str, data: Value) -> anyhow::Result<()> {
    let body = json!({ "users": ["alice"], "event": "e", "data": data });
    let (status, answer) = publish_to(host.addr, key, &body).await?;
    anyhow::ensure!(status == 202, "{status} {answer}");
    Ok(())
}

/// A tenant made through the admin API; its publish key.
async fn tenant(host: &TestHost, id: &str) -> anyhow::Result<String> {
    let spec = json!({ "id": id, "auth": { "mode": "insecure" } });
    let (status, created) =
        Req::post("/v1/admin/tenants").key(ADMIN).body(spec.to_string().into()).reply(host.addr).await?;
    anyhow::ensure!(status == 201, "{created}");
    Ok(created["publish_key"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn javascript_and_python_auth_and_route_plugins_decide() -> anyhow::Result<()> {
    let host = TestHost::start(&format!("[server]\nadmin_token = \"{ADMIN}\"\n")).await?;
    for (id, lang) in [("js", "js"), ("py", "py")] {
        let key = tenant(&host, id).await?;
        upload_to(&host, id, "auth", &format!("auth_{lang}"), r#"{"key":"open-sesame"}"#).await?;
        upload_to(&host, id, "route", &format!("route_{lang}"), "{}").await?;
        let url = |query: &str| format!("ws://{}/v1/ws/{id}?{query}", host.addr);

        let refused = Client::try_connect(&url("key=wrong&user=pia"), &[]).await?.err().context("refused")?;
        assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (401, Some("denied")), "{lang}");
        assert_eq!(refused.body["error"]["message"], "a valid key is required", "{lang}");
        let refused = Client::try_connect(&url("key=open-sesame"), &[]).await?.err().context("refused")?;
        assert_eq!(refused.status, 403, "{lang}: no user");

        let mut pia = Client::connect(&url("key=open-sesame&user=pia&plan=pro"), &[]).await?;
        let welcome = pia.next_json().await?;
        assert_eq!(
            (welcome["user"].as_str(), &welcome["attributes"]),
            (Some("pia"), &json!({"plan": "pro"})),
            "{lang}"
        );
        let mut fay = Client::connect(&url("key=open-sesame&user=fay"), &[]).await?;
        assert_eq!(fay.next_json().await?["attributes"], json!({"plan": "free"}), "{lang}");
        assert_eq!(pia.subscribe("news").await?["type"], "subscribed", "{lang}: granted by the plugin");
        assert_eq!(fay.subscribe("sports").await?["type"], "error", "{lang}: not granted");

        let publish = |body: Value| {
            let key = key.clone();
            let host = &host;
            async move {
                let (status, answer) = publish_to(host.addr, &key, &body).await?;
                anyhow::ensure!(status == 202, "{status} {answer}");
                Ok::<_, anyhow::Error>(())
            }
        };
        publish(json!({ "broadcast": true, "event": "internal.audit" })).await?;
        publish(json!({ "broadcast": true, "event": "pro-only", "attributes": { "plan": "pro,team" } })).await?;
        publish(json!({ "users": ["fay"], "event": "to-news", "attributes": { "channel": "news" } })).await?;
        publish(json!({ "broadcast": true, "event": "everyone" })).await?;
        for expected in ["pro-only", "to-news", "everyone"] {
            assert_eq!(pia.next_event().await?["event"], expected, "{lang}");
        }
        assert_eq!(fay.next_event().await?["event"], "everyone", "{lang}: filtered, redirected and dropped events");
    }
    Ok(())
}

#[tokio::test]
async fn javascript_and_python_transforms_act_on_traffic() -> anyhow::Result<()> {
    // The default plugin limits.
    let config = format!("[server]\nadmin_token = \"{ADMIN}\"\n");
    let host = TestHost::start(&config).await?;
    for (tenant, plugin) in [("js", "redact_js"), ("py", "redact_py")] {
        let spec = json!({ "id": tenant, "auth": { "mode": "insecure" } });
        let (status, created) =
            Req::post("/v1/admin/tenants").key(ADMIN).body(spec.to_string().into()).reply(host.addr).await?;
        assert_eq!(status, 201, "{created}");
        let key = created["publish_key"].as_str().unwrap().to_owned();
        let installed = upload(&host, tenant, plugin).await?;
        assert_eq!(installed["state"], "active", "{installed}");

        let mut alice = Client::connect(&format!("ws://{}/v1/ws/{tenant}?user=alice", host.addr), &[]).await?;
        assert_eq!(alice.next_json().await?["type"], "welcome");
        publish(&host, &key, json!({ "ssn": "123", "card": 4111, "order": 7, "nested": { "ssn": "kept" } })).await?;
        let expected = json!({ "order": 7, "nested": { "ssn": "kept" }, "redacted": true });
        assert_eq!(alice.next_event().await?["data"], expected, "{plugin}");
        publish(&host, &key, json!([1, 2, 3])).await?;
        assert_eq!(alice.next_event().await?["data"], json!([1, 2, 3]), "{plugin} keeps what is not an object");

        let path = format!("/v1/admin/tenants/{tenant}/plugins");
        let (_, listed) = Req::get(&path).key(ADMIN).reply(host.addr).await?;
        let active = &listed["plugins"][0]["active"];
        assert_eq!((active["calls"].as_u64(), active["failures"].as_u64()), (Some(2), Some(0)), "{listed}");
    }
    Ok(())
}
