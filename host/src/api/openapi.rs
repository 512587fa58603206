//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' annotations
//! and types as the router is built (`utoipa-axum`: a route cannot be registered without
//! its description), and served at `GET /v1/openapi.json`.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::code::ErrorCode;
use super::error::ErrorBody;
use crate::app::App;

/// The document's header: title, version, tags and the credentials routes name.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "notify",
        description = "Multi-tenant real-time notifications: publish events, manage tenants and plugins, \
                       read streams and presence. Clients connect over WebSocket or Server-Sent Events \
                       (docs/PROTOCOL.md).",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "publish", description = "Publishing events (a tenant's publish key)"),
        (name = "users", description = "Users, presence and streams (a tenant's publish key)"),
        (name = "clients", description = "Client connections: WebSocket and Server-Sent Events"),
        (name = "tenants", description = "Tenant lifecycle (admin token)"),
        (name = "plugins", description = "A tenant's plugins (admin token or the tenant's management key)"),
        (name = "webhooks", description = "A tenant's webhook endpoints and dead letters (admin token or the tenant's management key)"),
        (name = "push", description = "Users' devices for push (a tenant's publish key; docs/PUSH.md)"),
        (name = "pusher", description = "The Pusher Channels HTTP API, signed as Pusher signs it (docs/PUSHER.md)"),
        (name = "operations", description = "Health, readiness, metrics, pages and this document"),
    ),
    // `Page` is named by the stream routes' shared `IntoResponses`, which does not register it.
    components(schemas(ErrorBody, super::streams::Page)),
    modifiers(&Credentials),
)]
pub(super) struct ApiDoc;

/// The bearer credentials the routes name in `security`.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("publish_key", "a tenant's publish key"),
            ("management_key", "a tenant's management key"),
            ("admin_token", "the node's `server.admin_token`"),
        ] {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.description = Some(format!("`Authorization: Bearer <{what}>`"));
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}

/// The document as served: one for a node with the demo pages, one without.
static DOCUMENTS: [OnceLock<Bytes>; 2] = [OnceLock::new(), OnceLock::new()];

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, operation_id = "openapi", path = "/v1/openapi.json", tag = "operations",
    responses((status = OK, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub(super) async fn serve(State(app): State<App>) -> impl IntoResponse {
    let demo = app.config().server.demo;
    let document = DOCUMENTS[usize::from(demo)]
        .get_or_init(|| Bytes::from(serde_json::to_vec(&super::document(demo)).expect("JSON serializes")));
    ([(header::CONTENT_TYPE, "application/json")], document.clone())
}

/// The generated document as JSON, with closed compositions mended: serde accepts a tagged
/// enum's tag beside a variant's `deny_unknown_fields` struct, but the generator closes the
/// struct's schema (`additionalProperties: false`) inside an `allOf` with the tag, which no
/// value can then pass. Such an `allOf` is closed as a whole (`unevaluatedProperties: false`).
pub(super) fn to_json(document: &utoipa::openapi::OpenApi) -> Value {
    let mut value = serde_json::to_value(document).expect("an OpenAPI document serializes");
    close_compositions(&mut value);
    if let Some(Value::Object(paths)) = value.get_mut("paths") {
        paths.iter_mut().for_each(|(path, item)| restrict_codes(path, item));
    }
    value
}

/// Narrows each error answer's schema to the codes its description names in backticks
/// (`` `draining` or `broker_unavailable` ``), so a real answer with any other code fails
/// validation against the document. Panics (when the document is first built, which the
/// host's tests do) if an error answer names no code, or one its status cannot carry.
fn restrict_codes(path: &str, item: &mut Value) {
    let Value::Object(operations) = item else { return };
    for (method, operation) in operations {
        let Some(Value::Object(responses)) = operation.get_mut("responses") else { continue };
        for (status, response) in responses.iter_mut() {
            let Some(status) = status.parse().ok().and_then(|s| StatusCode::from_u16(s).ok()) else { continue };
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            if status.as_u16() < 400 || schema.as_str() != Some("#/components/schemas/ErrorBody") {
                continue;
            }
            let description = response["description"].as_str().unwrap_or_default();
            let codes: Vec<ErrorCode> =
                description.split('`').skip(1).step_by(2).filter_map(ErrorCode::named).collect();
            assert!(!codes.is_empty(), "{method} {path} {status}: the description names no error code");
            if let Some(bad) = codes.iter().find(|c| !c.allows(status)) {
                panic!("{method} {path}: `{}` is never answered with {status}", bad.as_str());
            }
            let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            response["content"]["application/json"]["schema"] = serde_json::json!({
                "allOf": [
                    { "$ref": "#/components/schemas/ErrorBody" },
                    { "type": "object", "properties": { "error": { "type": "object", "properties": {
                        "code": { "enum": names } } } } },
                ]
            });
        }
    }
}

fn close_compositions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(members)) = map.get_mut("allOf")
                && members.iter_mut().fold(false, |opened, m| open_members(m) | opened)
            {
                map.insert("unevaluatedProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_compositions);
        }
        Value::Array(items) => items.iter_mut().for_each(close_compositions),
        _ => {}
    }
}

/// Removes `additionalProperties: false` from a member of an `allOf` and from the members of
/// its own `allOf`s; whether it removed any.
fn open_members(member: &mut Value) -> bool {
    let Value::Object(map) = member else { return false };
    let mut opened = map.get("additionalProperties") == Some(&Value::Bool(false));
    if opened {
        map.remove("additionalProperties");
    }
    if let Some(Value::Array(members)) = map.get_mut("allOf") {
        opened |= members.iter_mut().fold(false, |o, m| open_members(m) | o);
    }
    opened
}
