//! An event's push as plugins see it (the WIT `push` record) and as the host keeps it
//! ([`Alert`]): lent to the guest without copying, and checked with the publish body's
//! limits when a transform returns one.

use std::time::Duration;

use super::bindings::types;
use crate::alert::{Alert, PushWhen, Urgency};

/// `alert` as the guest borrows it.
pub(crate) fn lend(alert: &Alert) -> types::PushParam<'_> {
    types::PushParam {
        when: alert.when.map(|w| match w {
            PushWhen::Never => types::PushWhen::Never,
            PushWhen::Always => types::PushWhen::Always,
            PushWhen::UnreadAfter => types::PushWhen::UnreadAfter,
        }),
        delay_ms: alert.delay.map(millis),
        title: alert.title.as_deref(),
        body: alert.body.as_deref(),
        icon: alert.icon.as_deref(),
        url: alert.url.as_deref(),
        collapse_key: alert.collapse_key.as_deref(),
        ttl_ms: alert.ttl.map(millis),
        urgency: alert.urgency.map(|u| match u {
            Urgency::VeryLow => types::Urgency::VeryLow,
            Urgency::Low => types::Urgency::Low,
            Urgency::Normal => types::Urgency::Normal,
            Urgency::High => types::Urgency::High,
        }),
    }
}

/// The push a transform returned, if the publish body could have carried it; else which
/// field (`push.<name>`) is unusable and why.
pub(crate) fn take(push: types::PushResult) -> Result<Alert, String> {
    let alert = Alert {
        when: push.when.map(|w| match w {
            types::PushWhen::Never => PushWhen::Never,
            types::PushWhen::Always => PushWhen::Always,
            types::PushWhen::UnreadAfter => PushWhen::UnreadAfter,
        }),
        delay: push.delay_ms.map(Duration::from_millis),
        title: push.title,
        body: push.body,
        icon: push.icon,
        url: push.url,
        collapse_key: push.collapse_key,
        ttl: push.ttl_ms.map(Duration::from_millis),
        urgency: push.urgency.map(|u| match u {
            types::Urgency::VeryLow => Urgency::VeryLow,
            types::Urgency::Low => Urgency::Low,
            types::Urgency::Normal => Urgency::Normal,
            types::Urgency::High => Urgency::High,
        }),
    };
    alert.check().map_err(|(field, why)| format!("push.{field}: {why}"))?;
    Ok(alert)
}

/// A copy of what the guest was lent, for a 0.1.0 rewrite that cannot carry it back.
pub(crate) fn owned(push: &types::PushParam<'_>) -> types::PushResult {
    let text = |s: Option<&str>| s.map(str::to_owned);
    types::PushResult {
        when: push.when,
        delay_ms: push.delay_ms,
        title: text(push.title),
        body: text(push.body),
        icon: text(push.icon),
        url: text(push.url),
        collapse_key: text(push.collapse_key),
        ttl_ms: push.ttl_ms,
        urgency: push.urgency,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_goes_to_the_guest_and_back_unchanged() {
        let alert = Alert {
            when: Some(PushWhen::UnreadAfter),
            delay: Some(Duration::from_millis(1500)),
            title: Some("Shipped".into()),
            body: Some("Order 42".into()),
            icon: None,
            url: Some("https://shop.example/42".into()),
            collapse_key: Some("order-42".into()),
            ttl: Some(Duration::from_secs(3600)),
            urgency: Some(Urgency::High),
        };
        assert_eq!(take(owned(&lend(&alert))), Ok(alert));
    }

    #[test]
    fn a_push_over_the_limits_names_its_field() {
        let mut push = owned(&lend(&Alert::default()));
        push.collapse_key = Some("no spaces".into());
        assert!(take(push).unwrap_err().starts_with("push.collapse_key: "));
        let push = types::PushResult { delay_ms: Some(8 * 24 * 3600 * 1000), ..owned(&lend(&Alert::default())) };
        assert!(take(push).unwrap_err().starts_with("push.delay: "));
    }
}
