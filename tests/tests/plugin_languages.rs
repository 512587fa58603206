//! Plugins written in JavaScript (componentize-js) and Python (componentize-py): the
//! `redact` transform of plugins/javascript and plugins/python, uploaded through the admin
//! API with the host's default limits, acts on traffic as the Rust one does.

use notify_tests::{Client, PATIENCE, TestHost, http, http_within, plugin_bytes};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123";

async fn upload(host: &TestHost, tenant: &str, plugin: &str) -> anyhow::Result<Value> {
    let headers =
        [("authorization", format!("Bearer {ADMIN}")), ("notify-plugin-config", r#"{"fields":"ssn,card"}"#.into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = format!("/v1/admin/tenants/{tenant}/plugins/transform");
    let (status, body) = http_within(host.addr, "PUT", &path, &headers, plugin_bytes(plugin).into(), PATIENCE).await?;
    anyhow::ensure!(status == 201, "uploading {plugin}: {status} {body}");
    Ok(body)
}

async fn publish(host: &TestHost, key: &str, data: Value) -> anyhow::Result<()> {
    let body = json!({ "users": ["alice"], "event": "e", "data": data });
    let (status, answer) = http(host.addr, "POST", "/v1/publish", Some(key), body.to_string().into()).await?;
    anyhow::ensure!(status == 202, "{status} {answer}");
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
            http(host.addr, "POST", "/v1/admin/tenants", Some(ADMIN), spec.to_string().into()).await?;
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
        let (_, listed) = http(host.addr, "GET", &path, Some(ADMIN), Default::default()).await?;
        let active = &listed["plugins"][0]["active"];
        assert_eq!((active["calls"].as_u64(), active["failures"].as_u64()), (Some(2), Some(0)), "{listed}");
    }
    Ok(())
}
