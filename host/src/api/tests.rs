//! Routing, credential extraction and error bodies, in process: requests go through the
//! router with `oneshot`, without sockets.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::code::ErrorCode;
use crate::app::App;
use crate::config::Config;

const CONFIG: &str = r#"
[server]
admin_token = "admin-secret-token"
max_publish_bytes = 1024
[tenants.demo]
publish_key = "demo-key"
management_key = "demo-manager-key"
auth = { mode = "insecure" }
[tenants.other]
publish_key = "other-key"
auth = { mode = "insecure" }
history = { acks = true }
"#;

async fn app() -> App {
    let config = Config::from_toml(CONFIG, "test", []).unwrap();
    App::new(config).await.unwrap().0
}

struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let mut req = req;
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    Answer { status, headers, body }
}

fn request(method: &str, uri: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(body.into()).unwrap()
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    request("GET", uri, token, Body::empty())
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let router = super::router(app().await);
    let a = send(&router, get("/healthz", None)).await;
    assert_eq!((a.status, a.body), (StatusCode::OK, json!({ "status": "ok" })));
    let a = send(&router, get("/nowhere", None)).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
    let a = send(&router, get("/v1/publish", Some("demo-key"))).await;
    assert_eq!((a.status, a.code()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    let a = send(&router, request("POST", "/readyz", None, Body::empty())).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn publishing_checks_the_key_then_the_body() {
    let app = app().await;
    let router = super::router(app.clone());
    let body = r#"{"users":["alice"],"event":"e"}"#;
    let a = send(&router, request("POST", "/v1/publish", None, body)).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let a = send(&router, request("POST", "/v1/publish", Some("nope"), body)).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let a = send(&router, request("POST", "/v1/publish", Some("demo-key"), r#"{"users":["a"]}"#)).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_field"));
    assert_eq!(a.body["error"]["field"], "event");
    let a = send(&router, request("POST", "/v1/publish", Some("demo-key"), "x".repeat(2000))).await;
    assert_eq!((a.status, a.code()), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
    let a = send(&router, request("POST", "/v1/publish", Some("demo-key"), body)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert!(a.body["id"].is_string());
    let batch = format!("[{body},{body}]");
    let a = send(&router, request("POST", "/v1/publish/batch", Some("demo-key"), batch)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(a.body["ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(app.metrics().publish_rejected.load(Relaxed), 4);
    assert_eq!(app.tenants().get("demo").unwrap().metrics.events_published.load(Relaxed), 3);
}

#[tokio::test]
async fn a_draining_node_refuses_publishes_before_reading_credentials() {
    let app = app().await;
    let router = super::router(app.clone());
    app.lifecycle().drain.start();
    let a = send(&router, request("POST", "/v1/publish", None, "{}")).await;
    assert_eq!((a.status, a.code()), (StatusCode::SERVICE_UNAVAILABLE, "draining"));
    let a = send(&router, get("/readyz", None)).await;
    assert_eq!((a.status, a.body), (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "draining" })));
}

#[tokio::test]
async fn user_routes_take_the_publish_key_and_a_valid_user() {
    let router = super::router(app().await);
    let a = send(&router, get("/v1/presence/alice", None)).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let a = send(&router, get("/v1/presence/bad%20name", Some("demo-key"))).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "bad_request"));
    assert!(a.body["error"]["message"].as_str().unwrap().contains("GET /v1/presence/{user}"));
    let a = send(&router, get("/v1/presence/a%40b", Some("demo-key"))).await;
    assert_eq!(a.body, json!({ "user": "a@b", "online": false, "connections": 0 }));
    let a = send(&router, get("/v1/users/alice/unread", Some("demo-key"))).await;
    assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "acks_disabled"));
    let a = send(&router, get("/v1/users/alice/unread", Some("other-key"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!((a.body["user"].clone(), a.body["unread"].clone()), (json!("alice"), json!(0)));
}

#[tokio::test]
async fn admin_routes_check_tenant_then_credential_then_hook() {
    let router = super::router(app().await);
    let a = send(&router, get("/v1/admin/tenants/nope/plugins", Some("admin-secret-token"))).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "unknown_tenant"));
    let a = send(&router, get("/v1/admin/tenants/demo/plugins", None)).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let a = send(&router, get("/v1/admin/tenants/demo/plugins", Some("demo-key"))).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let a = send(&router, get("/v1/admin/tenants/other/plugins", Some("demo-manager-key"))).await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "forbidden"), "a management key is per tenant");
    for token in ["admin-secret-token", "demo-manager-key"] {
        let a = send(&router, get("/v1/admin/tenants/demo/plugins", Some(token))).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body["tenant"], "demo");
    }
    let a =
        send(&router, request("DELETE", "/v1/admin/tenants/demo/plugins/colour", Some("demo-manager-key"), "")).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "unknown_hook"));
    let uri = "/v1/admin/tenants/demo/plugins/auth?on_failure=skip";
    let a = send(&router, request("PUT", uri, Some("demo-manager-key"), "")).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_policy"));
    let uri = "/v1/admin/tenants/demo/plugins/transform/rollback";
    let a = send(&router, request("POST", uri, Some("demo-manager-key"), "")).await;
    assert_eq!((a.status, a.code()), (StatusCode::CONFLICT, "no_plugin"));
    let uri = "/v1/admin/tenants/demo/plugins/route";
    let a = send(&router, request("PUT", uri, Some("demo-manager-key"), "not wasm")).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_plugin"));
}

#[tokio::test]
async fn websocket_refusals_come_before_the_upgrade() {
    let router = super::router(app().await);
    let a = send(&router, get("/v1/ws/demo?user=alice", None)).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "not_websocket"));
    // Without the upgrade, the same URL still says what is wrong with the credentials.
    let a = send(&router, get("/v1/ws/nope?user=alice", None)).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "unknown_tenant"));
    let a = send(&router, get("/v1/ws/demo", None)).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let upgrade = |uri: &str, version: &str| {
        Request::get(uri)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, version)
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Body::empty())
            .unwrap()
    };
    let a = send(&router, upgrade("/v1/ws/demo?user=alice", "12")).await;
    assert_eq!((a.status, a.code()), (StatusCode::UPGRADE_REQUIRED, "unsupported_version"));
    assert_eq!(a.headers[header::SEC_WEBSOCKET_VERSION], "13");
    let a = send(&router, upgrade("/v1/ws/nope?user=alice", "13")).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "unknown_tenant"));
    let a = send(&router, upgrade("/v1/ws/demo", "13")).await;
    assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let a = send(&router, upgrade("/v1/ws/demo?user=alice&user_since=garbage", "13")).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "bad_request"));
    let a = send(&router, upgrade("/v1/ws/demo?user=alice", "13")).await;
    assert_eq!(a.status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(a.headers[header::SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/// The (path, method) pairs the router serves, read from its `Debug` output: axum has no
/// other way to list its routes.
fn served<S>(router: &Router<S>) -> BTreeSet<(String, String)> {
    let debug = format!("{router:?}");
    let main = debug.split("fallback_router").next().unwrap();
    let (mut paths, mut methods) = (HashMap::new(), HashMap::new());
    for part in main.split("RouteId(").skip(1) {
        let (id, rest) = part.split_once("): ").unwrap();
        if let Some(path) = rest.strip_prefix('"') {
            paths.insert(id, path.split('"').next().unwrap().to_owned());
        } else if let Some(fields) = rest.strip_prefix("MethodRouter(MethodRouter { ") {
            let fields = fields.split(", fallback").next().unwrap();
            let set: Vec<String> = fields
                .split(", ")
                .filter_map(|f| f.split_once(": "))
                .filter(|(m, handler)| *handler != "None" && *m != "head")
                .map(|(m, _)| m.to_owned())
                .collect();
            methods.insert(id, set);
        }
    }
    let mut table = BTreeSet::new();
    for (id, path) in paths {
        for method in methods.remove(id).unwrap_or_else(|| panic!("no methods for {path} in {debug}")) {
            table.insert((path.clone(), method));
        }
    }
    table
}

fn documented(value: &Value) -> BTreeSet<(String, String)> {
    let mut table = BTreeSet::new();
    for (path, item) in value["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
            table.insert((path.clone(), method.clone()));
        }
    }
    table
}

#[test]
fn every_route_is_documented_and_every_documented_route_is_served() {
    for demo in [false, true] {
        let (router, document) = super::routes(demo).split_for_parts();
        let document = super::openapi::to_json(&document);
        let (served, documented) = (served(&router), documented(&document));
        assert!(served.len() >= 28, "the router lists its routes: {served:?}");
        assert_eq!(served, documented, "demo = {demo}");
        assert_eq!(documented.contains(&("/demo".into(), "get".into())), demo);
        assert_eq!(super::document(demo), document);
    }
}

#[test]
fn operation_ids_are_unique_and_error_answers_name_their_codes() {
    let document = super::document(true);
    let mut ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no id"));
            assert!(ids.insert(id.to_owned()), "operation id {id} is used twice");
            for (status, response) in operation["responses"].as_object().unwrap() {
                let body = &response["content"]["application/json"]["schema"];
                if status.as_str() >= "400" && body.get("allOf").is_some() {
                    let schema = &response["content"]["application/json"]["schema"]["allOf"][1];
                    let codes = &schema["properties"]["error"]["properties"]["code"]["enum"];
                    assert!(codes.as_array().is_some_and(|c| !c.is_empty()), "{method} {path} {status}");
                }
            }
        }
    }
    assert!(ids.len() > 30, "{ids:?}");
}

/// docs/PROTOCOL.md's table of error codes lists every code with its status, and nothing
/// else.
#[test]
fn the_protocol_documents_every_error_code() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md")).unwrap();
    let section = text.split("## Error codes").nth(1).expect("PROTOCOL.md has an Error codes section");
    let section = section.split("\n## ").next().unwrap();
    let mut documented = std::collections::BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `") && !l.starts_with("| `code`")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let code = cells[1].trim_matches('`');
        assert!(documented.insert(code.to_owned(), cells[2].to_owned()).is_none(), "{code} is listed twice");
    }
    for code in ErrorCode::ALL {
        let status = documented.remove(code.as_str()).unwrap_or_else(|| panic!("{} is not documented", code.as_str()));
        assert!(status.starts_with(&code.status().as_u16().to_string()), "{}: documented as {status}", code.as_str());
        assert!(!code.meaning().is_empty());
    }
    assert!(documented.is_empty(), "documented codes the host never answers: {documented:?}");
}
