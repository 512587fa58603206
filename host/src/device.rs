//! A user's device as registered: a browser's Web Push subscription, an FCM registration
//! token or an APNs device token, with what the registration says about it. Its id is made
//! from the platform and the address a provider knows it by, so registering the same
//! subscription again (browsers do, on every page load) changes nothing. Also what the user
//! set for pushes (`Preferences`): quiet hours in their time zone and an hourly cap.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// Which provider reaches a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Platform {
    /// A browser, through its push service (RFC 8030).
    Web,
    /// An Android or web app through Firebase Cloud Messaging.
    Fcm,
    /// An Apple device through the Apple Push Notification service.
    Apns,
}

impl Platform {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Fcm => "fcm",
            Self::Apns => "apns",
        }
    }
}

/// A browser's `PushSubscription` as its `toJSON()` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct WebSubscription {
    /// The push service's URL for this browser (`https://`).
    pub endpoint: String,
    pub keys: WebKeys,
    /// What browsers add; not used.
    #[serde(default, rename = "expirationTime", skip_serializing)]
    #[schema(value_type = Option<u64>)]
    pub expiration_time: Option<serde_json::Value>,
}

/// The subscription's keys, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebKeys {
    /// The browser's P-256 public key (65 bytes).
    pub p256dh: String,
    /// The authentication secret (16 bytes).
    pub auth: String,
}

/// `POST /v1/users/{user}/devices`: a Web Push subscription, or a provider's token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"platform": "web", "label": "Firefox on the laptop", "subscription": {
    "endpoint": "https://updates.push.services.mozilla.com/wpush/v2/gAAAAAB...",
    "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM", "auth": "tBHItJI5svbpez7KI4CCXg"}}}))]
pub(crate) struct Registration {
    pub platform: Platform,
    /// For `web`: the browser's subscription.
    #[serde(default)]
    pub subscription: Option<WebSubscription>,
    /// For `fcm` and `apns`: the registration or device token.
    #[serde(default)]
    pub token: Option<String>,
    /// A name the user recognises ("Firefox on the laptop"), at most 128 characters.
    #[serde(default)]
    pub label: Option<String>,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Device {
    /// Made from the platform and its address: the same subscription has the same id.
    pub id: String,
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<WebSubscription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Unix milliseconds of its registration.
    pub registered_at: u64,
}

/// Why a registration was refused, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub(crate) struct Invalid {
    pub field: &'static str,
    pub message: &'static str,
}

fn invalid(field: &'static str, message: &'static str) -> Invalid {
    Invalid { field, message }
}

/// Longest endpoint URL or token accepted.
const MAX_ADDRESS: usize = 2048;
const MAX_LABEL: usize = 128;

impl Registration {
    /// The device this registration describes, registered at `now` (Unix ms).
    pub(crate) fn device(self, now: u64) -> Result<Device, Invalid> {
        if self.label.as_ref().is_some_and(|l| l.chars().count() > MAX_LABEL || l.chars().any(char::is_control)) {
            return Err(invalid("label", "at most 128 characters, no control characters"));
        }
        let address = match (self.platform, &self.subscription, &self.token) {
            (Platform::Web, Some(s), None) => check_subscription(s)?,
            (Platform::Web, _, _) => return Err(invalid("subscription", "web devices need a subscription, no token")),
            (_, None, Some(token)) => check_token(self.platform, token)?,
            (_, _, _) => return Err(invalid("token", "fcm and apns devices need a token, no subscription")),
        };
        Ok(Device {
            id: id_of(self.platform, address),
            platform: self.platform,
            subscription: self.subscription,
            token: self.token,
            label: self.label,
            registered_at: now,
        })
    }
}

fn check_subscription(s: &WebSubscription) -> Result<&str, Invalid> {
    let url: Result<hyper::Uri, _> = s.endpoint.parse();
    let web = url.as_ref().is_ok_and(|u| matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some());
    if !web || s.endpoint.len() > MAX_ADDRESS {
        return Err(invalid("subscription.endpoint", "must be an http(s) URL of at most 2048 bytes"));
    }
    if decoded_len(&s.keys.p256dh) != Some(65) {
        return Err(invalid("subscription.keys.p256dh", "must be base64url of a 65-byte P-256 public key"));
    }
    if decoded_len(&s.keys.auth) != Some(16) {
        return Err(invalid("subscription.keys.auth", "must be base64url of 16 bytes"));
    }
    Ok(&s.endpoint)
}

fn decoded_len(text: &str) -> Option<usize> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok().map(|b| b.len())
}

fn check_token(platform: Platform, token: &str) -> Result<&str, Invalid> {
    let fits = match platform {
        // APNs device tokens are hex (32 bytes today; Apple says not to assume the length).
        Platform::Apns => (16..=200).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => (16..=MAX_ADDRESS).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()),
    };
    if fits { Ok(token) } else { Err(invalid("token", "not a token of this platform")) }
}

/// `platform` and the first 12 bytes of the SHA-256 of its address, in hex.
fn id_of(platform: Platform, address: &str) -> String {
    let digest = Sha256::digest(address.as_bytes());
    format!("{}-{}", platform.as_str(), crate::tenant::hex(&digest[..12]))
}

/// What a user set for pushes (`PUT /v1/users/{user}/push`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"time_zone": "Europe/Paris", "quiet_hours": {"start": "22:00", "end": "07:30"}, "max_per_hour": 5}))]
pub(crate) struct Preferences {
    /// An IANA time zone (`Europe/Paris`); quiet hours are in it. UTC without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Pushes due in this window wait for its end (and are sent then if still unread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Pushes per hour at most (over the last 60 minutes); replaces the tenant's
    /// `push.max_per_hour`. Those beyond are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_hour: Option<u32>,
}

/// A daily window, local times `HH:MM`; `start` after `end` spans midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuietHours {
    pub start: String,
    pub end: String,
}

impl Preferences {
    /// Checks the time zone and times; the offending field and why.
    pub(crate) fn check(&self) -> Result<(), Invalid> {
        if self.time_zone.as_deref().is_some_and(|tz| jiff::tz::TimeZone::get(tz).is_err()) {
            return Err(invalid("time_zone", "not an IANA time zone (Europe/Paris, America/New_York, UTC)"));
        }
        if let Some(q) = &self.quiet_hours {
            if hh_mm(&q.start).is_none() {
                return Err(invalid("quiet_hours.start", "must be HH:MM"));
            }
            if hh_mm(&q.end).is_none() || q.start == q.end {
                return Err(invalid("quiet_hours.end", "must be HH:MM, not the start"));
            }
        }
        Ok(())
    }

    /// When the quiet hours that hold at `now` (Unix ms) end, if they hold.
    pub(crate) fn quiet_until(&self, now: u64) -> Option<u64> {
        let q = self.quiet_hours.as_ref()?;
        let tz = match &self.time_zone {
            Some(name) => jiff::tz::TimeZone::get(name).ok()?,
            None => jiff::tz::TimeZone::UTC,
        };
        let here = jiff::Timestamp::from_millisecond(i64::try_from(now).ok()?).ok()?.to_zoned(tz.clone());
        let ((sh, sm), (eh, em)) = (hh_mm(&q.start)?, hh_mm(&q.end)?);
        let (start, end, time) = (sh * 60 + sm, eh * 60 + em, i32::from(here.hour()) * 60 + i32::from(here.minute()));
        let quiet = if start < end { (start..end).contains(&time) } else { time >= start || time < end };
        if !quiet {
            return None;
        }
        let day = if time >= end { here.date().tomorrow().ok()? } else { here.date() };
        let until = day.at(eh as i8, em as i8, 0, 0).to_zoned(tz).ok()?;
        u64::try_from(until.timestamp().as_millisecond()).ok()
    }
}

/// `HH:MM` as (hours, minutes).
fn hh_mm(text: &str) -> Option<(i32, i32)> {
    let (h, m) = text.split_once(':')?;
    let (h, m) = (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?);
    (text.len() == 5 && (0..24).contains(&h) && (0..60).contains(&m)).then_some((h, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(endpoint: &str, p256dh: &str) -> Registration {
        let keys = WebKeys { p256dh: p256dh.into(), auth: "tBHItJI5svbpez7KI4CCXg".into() };
        let subscription = WebSubscription { endpoint: endpoint.into(), keys, expiration_time: None };
        Registration { platform: Platform::Web, subscription: Some(subscription), token: None, label: None }
    }

    const P256DH: &str = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM";

    #[test]
    fn the_same_subscription_has_the_same_id() {
        let a = web("https://push.example/a", P256DH).device(1).unwrap();
        let again = web("https://push.example/a", P256DH).device(2).unwrap();
        let b = web("https://push.example/b", P256DH).device(1).unwrap();
        assert_eq!(a.id, again.id);
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("web-"));
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(web("ftp://push.example/a", P256DH).device(1).unwrap_err().field, "subscription.endpoint");
        assert_eq!(web("https://push.example/a", "AAAA").device(1).unwrap_err().field, "subscription.keys.p256dh");
        let apns =
            Registration { platform: Platform::Apns, subscription: None, token: Some("zz".repeat(32)), label: None };
        assert_eq!(apns.device(1).unwrap_err().field, "token");
        let fcm = Registration { platform: Platform::Fcm, subscription: None, token: None, label: None };
        assert_eq!(fcm.device(1).unwrap_err().field, "token");
    }

    fn quiet(tz: &str, start: &str, end: &str) -> Preferences {
        let quiet_hours = Some(QuietHours { start: start.into(), end: end.into() });
        Preferences { time_zone: Some(tz.into()), quiet_hours, max_per_hour: None }
    }

    /// Unix ms of a UTC instant.
    fn utc(text: &str) -> u64 {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64
    }

    #[test]
    fn quiet_hours_hold_in_the_users_time_zone_and_end_at_their_end() {
        let night = quiet("Europe/Paris", "22:00", "07:30");
        // 23:00 in Paris (UTC+1 in December): quiet until 07:30 the next morning.
        assert_eq!(night.quiet_until(utc("2026-12-07T22:00:00Z")), Some(utc("2026-12-08T06:30:00Z")));
        // 02:00 in Paris: quiet until 07:30 the same day.
        assert_eq!(night.quiet_until(utc("2026-12-08T01:00:00Z")), Some(utc("2026-12-08T06:30:00Z")));
        assert_eq!(night.quiet_until(utc("2026-12-08T12:00:00Z")), None, "13:00 in Paris");
        let lunch = quiet("America/New_York", "12:00", "13:00");
        assert_eq!(lunch.quiet_until(utc("2026-12-08T17:15:00Z")), Some(utc("2026-12-08T18:00:00Z")));
        assert_eq!(lunch.quiet_until(utc("2026-12-08T18:00:00Z")), None, "13:00 is the end");
        assert_eq!(Preferences::default().quiet_until(utc("2026-12-08T17:15:00Z")), None);
    }

    #[test]
    fn preferences_are_checked_naming_the_field() {
        assert_eq!(quiet("Mars/Olympus", "22:00", "07:00").check().unwrap_err().field, "time_zone");
        assert_eq!(quiet("UTC", "25:00", "07:00").check().unwrap_err().field, "quiet_hours.start");
        assert_eq!(quiet("UTC", "7:00", "08:00").check().unwrap_err().field, "quiet_hours.start");
        assert_eq!(quiet("UTC", "07:00", "07:00").check().unwrap_err().field, "quiet_hours.end");
        assert!(quiet("Asia/Kolkata", "23:30", "06:00").check().is_ok());
    }
}
