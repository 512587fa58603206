//! `ErrorCode`: every machine-readable `code` an HTTP refusal carries, each with its one
//! status. Handlers build errors from it, the OpenAPI document's error schemas are made from
//! it (see `openapi::restrict_codes`), and docs/PROTOCOL.md's table is checked against it.

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

/// Declares the codes once: variant, wire name, status, meaning (docs/PROTOCOL.md's words).
macro_rules! codes {
    ($($variant:ident = $name:literal, $status:ident, $meaning:literal;)*) => {
        /// The `code` of an error body. Stable: clients may branch on it.
        // The wire names are the variants' in snake case (a test checks them against `$name`):
        // the schema generator does not see a `rename` built by a macro.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub(crate) enum ErrorCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl ErrorCode {
            pub(crate) const ALL: &[Self] = &[$(Self::$variant),*];

            pub(crate) fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            /// The status every answer with this code has (`denied` may be 401 instead, as
            /// the auth plugin chose).
            pub(crate) fn status(self) -> StatusCode {
                match self { $(Self::$variant => StatusCode::$status),* }
            }

            #[cfg(test)]
            pub(crate) fn meaning(self) -> &'static str {
                match self { $(Self::$variant => $meaning),* }
            }
        }
    };
}

codes! {
    BadRequest = "bad_request", BAD_REQUEST, "a malformed path or query parameter, or header";
    BadBody = "bad_body", BAD_REQUEST, "the request body could not be read (the connection broke, or a chunk was malformed)";
    InvalidField = "invalid_field", BAD_REQUEST, "the body is not valid JSON (`field: \"body\"`) or a field is wrong; `field` names it";
    InvalidChannel = "invalid_channel", BAD_REQUEST, "a channel name is not valid";
    TooManySubscriptions = "too_many_subscriptions", BAD_REQUEST, "a connect request names more channels than the tenant's `max_subscriptions`";
    InvalidPlugin = "invalid_plugin", BAD_REQUEST, "the uploaded bytes are not a component of the plugin world, or it failed to compile or instantiate";
    InvalidConfig = "invalid_config", BAD_REQUEST, "`Notify-Plugin-Config` is not a JSON object of string values";
    InvalidPolicy = "invalid_policy", BAD_REQUEST, "a plugin upload's `?on_failure` is not `retry`, `skip` or `drop`, or is given for an auth plugin (which always fails closed)";
    NotWebsocket = "not_websocket", BAD_REQUEST, "a request to the WebSocket route that is not an upgrade";
    MissingKey = "missing_key", BAD_REQUEST, "an upgrade without `Sec-WebSocket-Key`";
    Unauthorized = "unauthorized", UNAUTHORIZED, "missing, unknown or wrongly signed credentials";
    TokenExpired = "token_expired", UNAUTHORIZED, "the JWT's `exp` has passed";
    TokenRevoked = "token_revoked", UNAUTHORIZED, "the user's tokens issued before a time were revoked, and this one is older";
    Denied = "denied", FORBIDDEN, "the tenant's auth plugin refused the client (with its own status, 401 or 403, and reason)";
    Forbidden = "forbidden", FORBIDDEN, "the bearer token is not the admin token (admin routes) or the tenant's management key (plugin routes)";
    ForbiddenOrigin = "forbidden_origin", FORBIDDEN, "the `Origin` is not in the tenant's `allowed_origins`";
    ForbiddenChannel = "forbidden_channel", FORBIDDEN, "the credentials' channel patterns do not grant a channel";
    NotFound = "not_found", NOT_FOUND, "no route serves the path";
    UnknownTenant = "unknown_tenant", NOT_FOUND, "no such tenant";
    UnknownHook = "unknown_hook", NOT_FOUND, "no such plugin hook (`auth`, `transform`, `route`)";
    UnknownKeyKind = "unknown_key_kind", NOT_FOUND, "no such key kind (`publish`, `management`)";
    UnknownWebhook = "unknown_webhook", NOT_FOUND, "no such webhook endpoint of the tenant";
    UnknownConnection = "unknown_connection", NOT_FOUND, "no open connection of the token's user with that id on the node that answered";
    UnknownDevice = "unknown_device", NOT_FOUND, "no such device of the user";
    PushNotConfigured = "push_not_configured", NOT_FOUND, "the tenant has no credentials for that push provider";
    UnknownDeadLetter = "unknown_dead_letter", NOT_FOUND, "no such webhook dead letter on this node (or its endpoint is gone)";
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED, "the route does not take the method";
    TenantExists = "tenant_exists", CONFLICT, "a tenant with the id exists";
    TenantGone = "tenant_gone", CONFLICT, "the tenant was deleted while the request changed it";
    ManagedByConfig = "managed_by_config", CONFLICT, "the tenant is defined in the config file, which the admin API does not change";
    VersionConflict = "version_conflict", CONFLICT, "`If-Match` names a version that is no longer current";
    NoPlugin = "no_plugin", CONFLICT, "no plugin (or no earlier version to roll back to) on the hook";
    AcksDisabled = "acks_disabled", CONFLICT, "an ack or read cursor on a tenant without `history.acks`";
    StalePosition = "stale_position", CONFLICT, "an ack of a position that is not in the user stream's current history";
    HistoryDisabled = "history_disabled", CONFLICT, "history read on a tenant without history";
    RefreshUnsupported = "refresh_unsupported", CONFLICT, "a refresh for a tenant whose credentials cannot be refreshed (an auth plugin's, or insecure mode)";
    TooManyDevices = "too_many_devices", CONFLICT, "the user has the tenant's `push.max_devices_per_user` devices, or the tenant its `max_devices`";
    TooLarge = "too_large", PAYLOAD_TOO_LARGE, "the body is over the route's limit (`server.max_publish_bytes`, `plugins.max_plugin_bytes`, ...)";
    EventTooLarge = "event_too_large", PAYLOAD_TOO_LARGE, "an event's `data` is over the tenant's `max_event_bytes`";
    UnsupportedVersion = "unsupported_version", UPGRADE_REQUIRED, "`Sec-WebSocket-Version` is not 13";
    RateLimited = "rate_limited", TOO_MANY_REQUESTS, "over a rate (the tenant's `publish_rate`, the address's `connect_rate` or failure limit); `Retry-After` says when to retry";
    TooManyConnections = "too_many_connections", TOO_MANY_REQUESTS, "the tenant reached its `max_connections`, or the address its `addresses.max_connections`";
    TooManyUserConnections = "too_many_user_connections", TOO_MANY_REQUESTS, "the user reached the tenant's `max_connections_per_user`";
    PluginError = "plugin_error", INTERNAL_SERVER_ERROR, "a plugin could not be stored or loaded for a reason other than its bytes";
    StoreError = "store_error", INTERNAL_SERVER_ERROR, "the control-plane store refused a change for a reason other than being unreachable";
    NoRandomness = "no_randomness", INTERNAL_SERVER_ERROR, "the system's random source failed while making a key";
    Draining = "draining", SERVICE_UNAVAILABLE, "the node is shutting down: use another node";
    Busy = "busy", SERVICE_UNAVAILABLE, "the node has `server.max_handshakes` handshakes in progress (`Retry-After: 1`)";
    OverCapacity = "over_capacity", SERVICE_UNAVAILABLE, "the node reached `server.max_connections`";
    AuthUnavailable = "auth_unavailable", SERVICE_UNAVAILABLE, "the tenant's auth plugin failed (trap, deadline, disabled): auth fails closed";
    BrokerUnavailable = "broker_unavailable", SERVICE_UNAVAILABLE, "the broker (Redis) cannot be reached; nothing was accepted";
    HistoryUnavailable = "history_unavailable", SERVICE_UNAVAILABLE, "history (Redis) cannot be read or written now";
    PresenceUnavailable = "presence_unavailable", SERVICE_UNAVAILABLE, "presence (Redis) cannot be read now";
    DevicesUnavailable = "devices_unavailable", SERVICE_UNAVAILABLE, "the device store (Redis) cannot be reached now";
    StoreUnavailable = "store_unavailable", SERVICE_UNAVAILABLE, "the control-plane store (Redis) cannot be reached; nothing changed";
}

impl ErrorCode {
    pub(crate) fn named(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == name)
    }

    /// Whether an answer with this code may have `status`.
    pub(crate) fn allows(self, status: StatusCode) -> bool {
        status == self.status() || (self == Self::Denied && status == StatusCode::UNAUTHORIZED)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn the_wire_name_is_the_declared_one() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert_eq!(ErrorCode::named(code.as_str()), Some(*code));
        }
    }
}
