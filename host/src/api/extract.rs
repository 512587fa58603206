//! Typed extractors: the publisher's tenant, a tenant's administrator, a user id from the
//! path, path parameters with JSON rejections, and size-limited bodies.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Path};
use axum::http::header::{self, HeaderMap};
use axum::http::request::Parts;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use super::ApiError;
use super::code::ErrorCode;
use crate::app::App;
use crate::tenant::{KeyDigest, Tenant};

/// Path parameters, refused with an [`ApiError`] instead of axum's plain-text rejection.
#[derive(FromRequestParts)]
#[from_request(via(Path), rejection(ApiError))]
pub(crate) struct PathParams<T>(pub(crate) T);

/// The tenant whose publish key the request bears (`Authorization: Bearer <publish key>`).
pub(crate) struct Publisher(pub(crate) Arc<Tenant>);

impl FromRequestParts<App> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let key = bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <publish key>"))?;
        let tenant = app.tenants().by_publish_key(key).ok_or_else(|| ApiError::unauthorized("unknown publish key"))?;
        Ok(Self(tenant))
    }
}

/// The tenant of the `{tenant}` path parameter, for a request bearing the admin token or
/// that tenant's management key.
pub(crate) struct TenantAdmin(pub(crate) Arc<Tenant>);

impl FromRequestParts<App> for TenantAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, app).await?;
        let id = params.iter().find(|(k, _)| k == "tenant").map_or("", |(_, v)| v.as_str());
        let tenant = app
            .tenants()
            .get(id)
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownTenant, format!("no tenant {id:?}")))?;
        let token =
            bearer(&parts.headers).ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let manager = app.tenants().keys(&tenant.id).is_some_and(|k| k.manages(token));
        if !(is_admin(app, token) || manager) {
            let message = "this token cannot manage this tenant";
            return Err(ApiError::new(ErrorCode::Forbidden, message));
        }
        Ok(Self(tenant))
    }
}

/// A request bearing the admin token (`server.admin_token`).
pub(crate) struct Admin;

impl FromRequestParts<App> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <admin token>"))?;
        if !is_admin(app, token) {
            return Err(ApiError::new(ErrorCode::Forbidden, "this token is not the admin token"));
        }
        Ok(Self)
    }
}

/// Whether `token` is the admin token, compared in constant time.
fn is_admin(app: &App, token: &str) -> bool {
    app.config().server.admin_token.as_deref().is_some_and(|t| KeyDigest::of(t).matches(token))
}

/// A valid user id from the `{user}` path parameter.
pub(crate) struct UserId(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for UserId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathParams(user) = PathParams::<String>::from_request_parts(parts, state).await?;
        if crate::channel::valid_name(&user) {
            return Ok(Self(user));
        }
        let route = parts.extensions.get::<MatchedPath>().map_or("", MatchedPath::as_str);
        let message = format!("{} {route} needs a user id of 1-128 characters of A-Z a-z 0-9 _ - . : @", parts.method);
        Err(ApiError::new(ErrorCode::BadRequest, message))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A client's token: `?token=`, or else the bearer header.
pub(crate) fn client_token(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    query_param(query, "token").or_else(|| bearer(headers).map(str::to_owned))
}

/// The first value of query parameter `name`, percent-decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let query = query?;
    // Decoding every pair costs more than a search: a query that neither names `name`
    // literally nor percent-encodes anything cannot hold it.
    if !query.contains(name) && !query.contains('%') {
        return None;
    }
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Reads a whole body of at most `limit` bytes, refusing early on a larger Content-Length.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        let message = format!("request body exceeds {limit} bytes");
        ApiError::new(ErrorCode::TooLarge, message)
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::new(ErrorCode::BadBody, format!("cannot read request body: {e}"))),
    }
}

/// A JSON request body, refused as `invalid_field` (naming the field) when it does not fit.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    Ok(crate::ingest::deserialize(body)?)
}

/// `N` random bytes, for keys and secrets; `no_randomness` if the system has none.
pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::new(ErrorCode::NoRandomness, e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_params_are_found_spelled_out_or_percent_encoded() {
        assert_eq!(query_param(Some("user=ann&user_since=e1%3A4"), "user_since").as_deref(), Some("e1:4"));
        assert_eq!(query_param(Some("user%5Fsince=e1:4"), "user_since").as_deref(), Some("e1:4"), "an encoded name");
        assert_eq!(query_param(Some("user=ann"), "user_since"), None);
        assert_eq!(query_param(Some("user=a%20b"), "token"), None);
        assert_eq!(query_param(Some("users=ann"), "user"), None, "a longer name is another name");
        assert_eq!(query_param(None, "user"), None);
    }
}
