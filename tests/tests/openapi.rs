//! The OpenAPI document a live node serves at `/v1/openapi.json`: every example in it
//! validates against its schema and is accepted by the API, and the API's real answers
//! validate against the schemas documented for their route and status. (That the document
//! and the router list the same routes is a unit test of the host: `api::tests`.)

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use notify_tests::{Req, TestHost, hs256_token, plugin_bytes};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123";

/// The served document, and checks against it.
struct Spec {
    doc: Value,
    /// Answers checked, for the test's own sanity.
    checked: std::cell::Cell<usize>,
}

impl Spec {
    async fn fetch(addr: SocketAddr) -> anyhow::Result<Self> {
        let (status, doc) = Req::get("/v1/openapi.json").reply(addr).await?;
        assert_eq!(status, 200);
        Ok(Self { doc, checked: 0.into() })
    }

    /// Validates `instance` against the schema at `pointer` (references resolve within the
    /// whole document).
    fn validate(&self, pointer: &str, instance: &Value) -> anyhow::Result<()> {
        let mut root = self.doc.clone();
        root["$ref"] = json!(format!("#{}", pointer.replace('{', "%7B").replace('}', "%7D")));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .with_context(|| format!("compiling {pointer}"))?;
        let errors: Vec<String> =
            validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
        if !errors.is_empty() {
            bail!("{instance} does not validate against {pointer}: {errors:?}");
        }
        Ok(())
    }

    /// Checks a real answer: its status is documented for the route, and its body matches
    /// the documented JSON schema (or is empty where none is documented).
    fn check(&self, method: &str, route: &str, status: u16, body: &Value) -> anyhow::Result<()> {
        let escaped = route.replace('~', "~0").replace('/', "~1");
        let pointer = format!("/paths/{escaped}/{}/responses/{status}", method.to_lowercase());
        let response = self
            .doc
            .pointer(&pointer)
            .with_context(|| format!("{method} {route} answered {status}: {body}, undocumented"))?;
        match response.pointer("/content/application~1json/schema") {
            Some(_) => self.validate(&format!("{pointer}/content/application~1json/schema"), body)?,
            None => assert!(body.is_null(), "{method} {route} {status} documents no JSON body but sent {body}"),
        }
        self.checked.set(self.checked.get() + 1);
        Ok(())
    }

    /// The example of a component schema.
    fn example(&self, schema: &str) -> Value {
        self.doc["components"]["schemas"][schema]["example"].clone()
    }
}

/// Every JSON pointer under `value` at which a schema carries an `example`.
fn examples(value: &Value, pointer: String, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("example") && (map.contains_key("type") || map.contains_key("properties")) {
                found.push(pointer.clone());
            }
            for (key, v) in map.iter().filter(|(k, _)| *k != "example") {
                examples(v, format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1")), found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                examples(v, format!("{pointer}/{i}"), found);
            }
        }
        _ => {}
    }
}

async fn node() -> anyhow::Result<TestHost> {
    TestHost::start(&format!("[server]\nadmin_token = \"{ADMIN}\"\n{}", notify_tests::DEMO)).await
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_its_examples_validate() -> anyhow::Result<()> {
    let host = node().await?;
    let spec = Spec::fetch(host.addr).await?;
    assert!(spec.doc["openapi"].as_str().unwrap().starts_with("3.1."), "{}", spec.doc["openapi"]);
    for scheme in ["publish_key", "management_key", "admin_token"] {
        assert_eq!(spec.doc["components"]["securitySchemes"][scheme]["scheme"], "bearer", "{scheme}");
    }
    assert!(spec.doc["paths"].get("/demo").is_none(), "a node without server.demo serves no demo");
    let mut found = Vec::new();
    examples(&spec.doc["components"], "/components".into(), &mut found);
    assert!(found.len() >= 10, "examples: {found:?}");
    for pointer in &found {
        let example = spec.doc.pointer(&format!("{pointer}/example")).unwrap();
        spec.validate(pointer, example)?;
    }
    // A wrong example is caught: the check is not vacuous.
    let mut wrong = spec.example("Publish");
    wrong["broadcast"] = json!("yes");
    assert!(spec.validate("/components/schemas/Publish", &wrong).is_err());
    Ok(())
}

#[tokio::test]
async fn real_answers_match_the_documented_schemas() -> anyhow::Result<()> {
    let host = node().await?;
    let spec = Spec::fetch(host.addr).await?;
    let addr = host.addr;
    let admin = format!("Bearer {ADMIN}");
    let admin = [("authorization", admin.as_str())];
    let send = async |method: &str, path: &str, headers: &[(&str, &str)], body: &Value| {
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        Req::new(method, path).headers(headers).body(body.into()).reply(addr).await
    };

    for route in ["/healthz", "/readyz", "/v1/openapi.json"] {
        let (status, body) = send("GET", route, &[], &Value::Null).await?;
        spec.check("GET", route, status, &body)?;
    }
    let (status, body) = send("GET", "/metrics", &[], &Value::Null).await?;
    assert_eq!(status, 401, "the client port has metrics for the admin token only");
    spec.check("GET", "/metrics", status, &body)?;
    let (status, metrics) = Req::get("/metrics").key(ADMIN).raw(addr).await?;
    assert!(String::from_utf8_lossy(&metrics).contains("notify_connections"));
    assert!(
        spec.doc
            .pointer(&format!("/paths/~1metrics/get/responses/{status}/content/text~1plain; version=0.0.4"))
            .is_some()
    );

    // The tenant of the creation example, with its keys.
    let new_tenant = spec.example("NewTenant");
    let (status, created) = send("POST", "/v1/admin/tenants", &admin, &new_tenant).await?;
    assert_eq!(status, 201, "the documented example is accepted: {created}");
    spec.check("POST", "/v1/admin/tenants", status, &created)?;
    let tenant = new_tenant["id"].as_str().unwrap();
    let (status, body) = send("POST", "/v1/admin/tenants", &admin, &new_tenant).await?;
    assert_eq!(status, 409);
    spec.check("POST", "/v1/admin/tenants", status, &body)?;
    let key = format!("Bearer {}", created["publish_key"].as_str().unwrap());
    let publisher = [("authorization", key.as_str())];

    let (status, body) = send("GET", "/v1/admin/tenants", &admin, &Value::Null).await?;
    spec.check("GET", "/v1/admin/tenants", status, &body)?;
    let (status, body) = send("GET", "/v1/admin/tenants", &publisher, &Value::Null).await?;
    assert_eq!(status, 403);
    spec.check("GET", "/v1/admin/tenants", status, &body)?;
    let one = format!("/v1/admin/tenants/{tenant}");
    let (status, body) = send("GET", &one, &admin, &Value::Null).await?;
    spec.check("GET", "/v1/admin/tenants/{tenant}", status, &body)?;
    let (status, body) = send("PATCH", &one, &admin, &spec.example("Patch")).await?;
    assert_eq!(status, 200, "{body}");
    spec.check("PATCH", "/v1/admin/tenants/{tenant}", status, &body)?;
    let (status, body) = send("PATCH", "/v1/admin/tenants/demo", &admin, &spec.example("Patch")).await?;
    assert_eq!(status, 409);
    spec.check("PATCH", "/v1/admin/tenants/{tenant}", status, &body)?;
    let rotate = format!("/v1/admin/tenants/{tenant}/keys/management");
    let (status, body) = send("POST", &rotate, &admin, &spec.example("Rotation")).await?;
    assert_eq!(status, 200, "{body}");
    spec.check("POST", "/v1/admin/tenants/{tenant}/keys/{kind}", status, &body)?;

    let (status, body) = send("POST", "/v1/publish", &publisher, &spec.example("Publish")).await?;
    assert_eq!(status, 202, "the documented example is accepted: {body}");
    spec.check("POST", "/v1/publish", status, &body)?;
    let (status, body) = send("POST", "/v1/publish", &publisher, &json!({ "users": ["alice"] })).await?;
    assert_eq!((status, body["error"]["field"].clone()), (400, json!("event")));
    spec.check("POST", "/v1/publish", status, &body)?;
    let (status, body) = send("POST", "/v1/publish", &[], &spec.example("Publish")).await?;
    spec.check("POST", "/v1/publish", status, &body)?;
    let batch = json!([{ "users": ["alice"], "event": "a" }, { "broadcast": true, "event": "b" }]);
    let (status, body) = send("POST", "/v1/publish/batch", &publisher, &batch).await?;
    assert_eq!(status, 202, "{body}");
    spec.check("POST", "/v1/publish/batch", status, &body)?;

    for (route, path) in [
        ("/v1/presence/{user}", "/v1/presence/alice"),
        ("/v1/channels/{channel}/presence", "/v1/channels/news/presence"),
        ("/v1/users/{user}/unread", "/v1/users/alice/unread"),
        ("/v1/streams/users/{user}", "/v1/streams/users/alice"),
        ("/v1/streams/channels/{channel}", "/v1/streams/channels/news?limit=1"),
        ("/v1/streams/broadcast", "/v1/streams/broadcast"),
        ("/v1/streams/broadcast", "/v1/streams/broadcast?after=nonsense"),
    ] {
        let (status, body) = send("GET", path, &publisher, &Value::Null).await?;
        spec.check("GET", route, status, &body)?;
    }
    let (status, page) = send("GET", "/v1/streams/users/alice", &publisher, &Value::Null).await?;
    assert_eq!((status, page["events"].as_array().map(Vec::len)), (200, Some(2)), "{page}");

    let (status, body) = send("POST", "/v1/users/alice/subscriptions", &publisher, &spec.example("Subscribe")).await?;
    assert_eq!(status, 202, "{body}");
    spec.check("POST", "/v1/users/{user}/subscriptions", status, &body)?;
    let (status, body) = send("DELETE", "/v1/users/alice/subscriptions/news", &publisher, &Value::Null).await?;
    spec.check("DELETE", "/v1/users/{user}/subscriptions/{channel}", status, &body)?;
    let (status, body) = send("POST", "/v1/users/alice/disconnect", &publisher, &spec.example("Disconnect")).await?;
    assert_eq!(status, 202, "{body}");
    spec.check("POST", "/v1/users/{user}/disconnect", status, &body)?;

    // The example position is not this tenant's: the refusal is documented too.
    let token = hs256_token("bob", 300, None, new_tenant["auth"]["hs256_secret"].as_str().unwrap());
    let ack = format!("/v1/sse/{tenant}/ack?token={token}");
    let (status, body) = send("POST", &ack, &[], &spec.example("AckBody")).await?;
    spec.check("POST", "/v1/sse/{tenant}/ack", status, &body)?;

    plugins(&spec, addr, tenant, &admin).await?;
    let (status, body) = send("DELETE", &one, &admin, &Value::Null).await?;
    assert_eq!(status, 204);
    spec.check("DELETE", "/v1/admin/tenants/{tenant}", status, &body)?;
    let (status, body) = send("GET", &one, &admin, &Value::Null).await?;
    assert_eq!(status, 404);
    spec.check("GET", "/v1/admin/tenants/{tenant}", status, &body)?;
    assert!(spec.checked.get() >= 35, "{} answers checked", spec.checked.get());
    Ok(())
}

/// Upload, list, roll back and remove a plugin, checking every answer.
async fn plugins(spec: &Spec, addr: SocketAddr, tenant: &str, admin: &[(&str, &str)]) -> anyhow::Result<()> {
    let base = format!("/v1/admin/tenants/{tenant}/plugins");
    let hook = "/v1/admin/tenants/{tenant}/plugins/{hook}";
    let mut headers = admin.to_vec();
    headers.push(("notify-plugin-config", r#"{"fields":"ssn"}"#));
    let (status, body) =
        Req::put(format!("{base}/transform")).headers(&headers).body(plugin_bytes("redact").into()).reply(addr).await?;
    assert_eq!(status, 201, "{body}");
    spec.check("PUT", hook, status, &body)?;
    let (status, body) =
        Req::put(format!("{base}/transform")).headers(admin).body(b"not wasm".to_vec().into()).reply(addr).await?;
    assert_eq!(status, 400);
    spec.check("PUT", hook, status, &body)?;
    let (status, body) = Req::get(&base).headers(admin).reply(addr).await?;
    assert_eq!(body["plugins"][0]["active"]["state"], "active", "{body}");
    spec.check("GET", "/v1/admin/tenants/{tenant}/plugins", status, &body)?;
    let rollback = "/v1/admin/tenants/{tenant}/plugins/{hook}/rollback";
    let (status, body) = Req::post(format!("{base}/transform/rollback")).headers(admin).reply(addr).await?;
    spec.check("POST", rollback, status, &body)?;
    let (status, body) = Req::post(format!("{base}/transform/rollback")).headers(admin).reply(addr).await?;
    spec.check("POST", rollback, status, &body)?;
    let (status, body) = Req::delete(format!("{base}/route")).headers(admin).reply(addr).await?;
    spec.check("DELETE", hook, status, &body)?;
    let (status, body) = Req::delete(format!("{base}/nope")).headers(admin).reply(addr).await?;
    assert_eq!(status, 404);
    spec.check("DELETE", hook, status, &body)?;
    Ok(())
}
