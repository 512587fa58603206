//! Client authentication and handshake refusals.

use anyhow::Context as _;
use notify_tests::{Client, DEMO, JWT_SECRET, Req, SseClient, TestHost, hs256_token, jwt_tenant, rs256_token};
use serde_json::json;

const ORIGIN: (&str, &str) = ("origin", "https://app.example.com");

async fn host() -> anyhow::Result<TestHost> {
    TestHost::start(&format!("{DEMO}\n{}", jwt_tenant())).await
}

#[tokio::test]
async fn valid_hs256_and_rs256_tokens_are_accepted() -> anyhow::Result<()> {
    let host = host().await?;
    for (token, user) in [(hs256_token("erin", 60, None, JWT_SECRET), "erin"), (rs256_token("frank", 60), "frank")] {
        let mut c = Client::connect(&host.ws_url("secure", &format!("token={token}")), &[ORIGIN]).await?;
        let welcome = c.next_json().await?;
        assert_eq!(welcome["user"], user);
        let (status, _) = host.publish("secure-key", &json!({"users": [user], "event": "hi"})).await?;
        assert_eq!(status, 202);
        assert_eq!(c.next_event().await?["user"], user);
    }
    // The bearer header works as well as ?token=.
    let token = hs256_token("gina", 60, None, JWT_SECRET);
    let mut c =
        Client::connect(&host.ws_url("secure", ""), &[ORIGIN, ("authorization", &format!("Bearer {token}"))]).await?;
    assert_eq!(c.next_json().await?["user"], "gina");
    Ok(())
}

#[tokio::test]
async fn bad_credentials_get_401_before_the_upgrade() -> anyhow::Result<()> {
    let host = host().await?;
    let cases = [
        ("", "unauthorized"),
        (&*format!("token={}", hs256_token("erin", -120, None, JWT_SECRET)), "token_expired"),
        (&*format!("token={}", hs256_token("erin", 60, None, "wrong-secret-0123456789")), "unauthorized"),
        ("token=not.a.jwt", "unauthorized"),
        ("user=mallory", "unauthorized"),
    ];
    for (query, code) in cases {
        let refused = Client::try_connect(&host.ws_url("secure", query), &[ORIGIN]).await?.err().unwrap();
        assert_eq!(refused.status, 401, "{query}");
        assert_eq!(refused.body["error"]["code"], code, "{query}: {}", refused.body);
    }
    let refused = Client::try_connect(&host.ws_url("demo", ""), &[]).await?.err().unwrap();
    assert_eq!(refused.status, 401, "insecure tenant without ?user=");
    assert_eq!(host.metric("notify_handshake_failures_total{tenant=\"secure\",reason=\"unauthorized\"}").await?, 5.0);
    Ok(())
}

#[tokio::test]
async fn channels_claim_limits_subscriptions() -> anyhow::Result<()> {
    let host = host().await?;
    let token = hs256_token("hank", 60, Some(&["news", "orders.*"]), JWT_SECRET);
    let mut c = Client::connect(&host.ws_url("secure", &format!("token={token}")), &[ORIGIN]).await?;
    c.next_json().await?;
    assert_eq!(c.subscribe("news").await?["type"], "subscribed");
    assert_eq!(c.subscribe("orders.42").await?["type"], "subscribed");
    let denied = c.subscribe("admin").await?;
    assert_eq!(denied["type"], "error");
    assert_eq!(denied["code"], "forbidden_channel");
    assert_eq!(denied["channel"], "admin");
    let denied = c.subscribe("orders").await?;
    assert_eq!(denied["code"], "forbidden_channel");
    Ok(())
}

#[tokio::test]
async fn origin_and_tenant_are_checked() -> anyhow::Result<()> {
    let host = host().await?;
    let token = hs256_token("ivy", 60, None, JWT_SECRET);
    let url = host.ws_url("secure", &format!("token={token}"));
    let refused = Client::try_connect(&url, &[("origin", "https://evil.example.net")]).await?.err().unwrap();
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["error"]["code"], "forbidden_origin");
    let refused = Client::try_connect(&url, &[]).await?.err().unwrap();
    assert_eq!(refused.status, 403, "no Origin header while an allowlist is set");
    let refused = Client::try_connect(&host.ws_url("nope", "user=a"), &[]).await?.err().unwrap();
    assert_eq!(refused.status, 404);
    assert_eq!(refused.body["error"]["code"], "unknown_tenant");
    Ok(())
}

#[tokio::test]
async fn credentials_expiry_closes_the_connection_with_4003() -> anyhow::Result<()> {
    let host = host().await?;
    let token = hs256_token("jade", 1, None, JWT_SECRET);
    let mut c = Client::connect(&host.ws_url("secure", &format!("token={token}")), &[ORIGIN]).await?;
    c.next_json().await?;
    assert_eq!(c.close_code().await?, 4003);
    Ok(())
}

/// Waits until the Unix time `at` (seconds).
async fn until_unix(at: u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(at).saturating_sub(now)).await;
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The next frame that is not an event.
async fn next_reply(c: &mut Client) -> anyhow::Result<serde_json::Value> {
    loop {
        let frame = c.next_json().await?;
        if frame["type"] != "event" {
            return Ok(frame);
        }
    }
}

#[tokio::test]
async fn a_websocket_refreshes_twice_and_outlives_its_first_token_while_grants_follow_the_new_one() -> anyhow::Result<()>
{
    let host = host().await?;
    let first = hs256_token("kim", 2, Some(&["news", "orders.*"]), JWT_SECRET);
    let mut c = Client::connect(&host.ws_url("secure", &format!("token={first}")), &[ORIGIN]).await?;
    let welcome = c.next_json().await?;
    let expires = welcome["expires_at"].as_u64().expect("welcome says when the token expires");
    assert!(expires > unix_now(), "{welcome}");
    assert_eq!(c.subscribe("news").await?["type"], "subscribed");
    assert_eq!(c.subscribe("orders.7").await?["type"], "subscribed");

    // Another user's token, an expired one and a forged one are refused; the connection stays.
    for (token, words) in [
        (hs256_token("mallory", 60, None, JWT_SECRET), "another user"),
        (hs256_token("kim", -120, None, JWT_SECRET), "token expired"),
        (hs256_token("kim", 60, None, "wrong-secret-0123456789"), "signature"),
    ] {
        c.send_json(&json!({"type": "refresh", "token": token})).await?;
        let refused = next_reply(&mut c).await?;
        assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("refresh_refused")));
        assert!(refused["message"].as_str().unwrap().contains(words), "{refused}");
    }

    // Two refreshes, each before the token in force expires; the second drops `orders.*`.
    let second = hs256_token("kim", 4, Some(&["news", "orders.*"]), JWT_SECRET);
    c.send_json(&json!({"type": "refresh", "token": second})).await?;
    let refreshed = next_reply(&mut c).await?;
    assert_eq!(refreshed["type"], "refreshed", "{refreshed}");
    let second_expiry = refreshed["expires_at"].as_u64().unwrap();
    assert!(second_expiry > expires);
    until_unix(expires + 1).await;
    let third = hs256_token("kim", 60, Some(&["news"]), JWT_SECRET);
    c.send_json(&json!({"type": "refresh", "token": third})).await?;
    let dropped = next_reply(&mut c).await?;
    assert_eq!(
        dropped,
        json!({"type": "unsubscribed", "channel": "orders.7", "reason": "not granted by the refreshed credentials"})
    );
    assert_eq!(next_reply(&mut c).await?["type"], "refreshed");
    let denied = c.subscribe("orders.8").await?;
    assert_eq!(denied["code"], "forbidden_channel", "the new grants hold: {denied}");

    // Past both earlier expiries, the connection still gets its events.
    until_unix(second_expiry + 1).await;
    host.publish("secure-key", &json!({"channels": ["news"], "event": "still-here"})).await?;
    assert_eq!(c.next_event().await?["event"], "still-here");

    // One that does not refresh is closed with 4003 at expiry.
    let short = hs256_token("kim", 1, None, JWT_SECRET);
    let mut lapsing = Client::connect(&host.ws_url("secure", &format!("token={short}")), &[ORIGIN]).await?;
    lapsing.next_json().await?;
    assert_eq!(lapsing.close_code().await?, 4003);
    Ok(())
}

#[tokio::test]
async fn an_sse_stream_refreshes_twice_by_post_and_one_that_does_not_is_closed() -> anyhow::Result<()> {
    let host = host().await?;
    let first = hs256_token("lou", 2, None, JWT_SECRET);
    let path = format!("/v1/sse/secure?token={first}");
    let mut sse = SseClient::connect(host.addr, &path, &[ORIGIN]).await?;
    let welcome = sse.next_json().await?;
    let id = welcome["connection_id"].as_str().context("connection id")?.to_owned();
    let expires = welcome["expires_at"].as_u64().context("expires_at")?;
    let refresh = |token: String, id: &str| {
        Req::post(format!("/v1/sse/secure/refresh?connection_id={id}"))
            .headers(&[ORIGIN, ("authorization", &format!("Bearer {token}"))])
    };

    let (status, body) = refresh(hs256_token("lou", 60, None, JWT_SECRET), "999999").reply(host.addr).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_connection")));
    let (status, body) = refresh(hs256_token("mallory", 60, None, JWT_SECRET), &id).reply(host.addr).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_connection")), "not mallory's stream");
    let (status, body) = refresh(hs256_token("lou", -120, None, JWT_SECRET), &id).reply(host.addr).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_expired")));

    let (status, body) = refresh(hs256_token("lou", 4, None, JWT_SECRET), &id).reply(host.addr).await?;
    assert_eq!(status, 200, "{body}");
    let second_expiry = body["expires_at"].as_u64().context("expires_at")?;
    assert_eq!(sse.next_json().await?, json!({"type": "refreshed", "expires_at": second_expiry}));
    until_unix(expires + 1).await;
    let (status, body) = refresh(hs256_token("lou", 60, None, JWT_SECRET), &id).reply(host.addr).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sse.next_json().await?["type"], "refreshed");
    until_unix(second_expiry + 1).await;
    host.publish("secure-key", &json!({"users": ["lou"], "event": "still-here"})).await?;
    assert_eq!(sse.next_event().await?["event"], "still-here");

    let short = hs256_token("lou", 1, None, JWT_SECRET);
    let mut lapsing = SseClient::connect(host.addr, &format!("/v1/sse/secure?token={short}"), &[ORIGIN]).await?;
    lapsing.next_json().await?;
    assert_eq!(lapsing.close_code().await?, 4003);
    Ok(())
}

/// A subscription token of the `secure` tenant: `channel` for `sub`, expiring in `exp_in` s.
fn channel_token(sub: &str, channel: &str, exp_in: i64) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let claims = json!({ "sub": sub, "channel": channel, "exp": now + exp_in });
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test]
async fn a_subscription_token_grants_one_channel_the_connection_token_does_not() -> anyhow::Result<()> {
    let host = host().await?;
    let token = hs256_token("max", 60, Some(&["news", "team.*"]), JWT_SECRET);
    let mut c = Client::connect(&host.ws_url("secure", &format!("token={token}")), &[ORIGIN]).await?;
    c.next_json().await?;
    assert_eq!(c.subscribe("team.1").await?["type"], "subscribed");
    assert_eq!(c.subscribe("vip.7").await?["code"], "forbidden_channel");

    for (token, words) in [
        (channel_token("max", "vip.8", 30), "grants Some(\"vip.8\")"),
        (channel_token("eve", "vip.7", 30), "another user"),
        (channel_token("max", "vip.7", -120), "token expired"),
        (hs256_token("max", 30, None, JWT_SECRET), "grants None"),
    ] {
        c.send_json(&json!({"type": "subscribe", "channel": "vip.7", "token": token})).await?;
        let refused = next_reply(&mut c).await?;
        assert_eq!((refused["code"].as_str(), refused["channel"].as_str()), (Some("forbidden_channel"), Some("vip.7")));
        assert!(refused["message"].as_str().unwrap().contains(words), "{refused}");
    }
    c.send_json(&json!({"type": "subscribe", "channel": "vip.7", "token": channel_token("max", "vip.7", 30)})).await?;
    let subscribed = next_reply(&mut c).await?;
    assert_eq!((subscribed["type"].as_str(), subscribed["channel"].as_str()), (Some("subscribed"), Some("vip.7")));
    host.publish("secure-key", &json!({"channels": ["vip.7"], "event": "for-vips"})).await?;
    assert_eq!(c.next_event().await?["event"], "for-vips");

    // Fresh connection credentials without `team.*`: that channel goes, the token's stays.
    c.send_json(&json!({"type": "refresh", "token": hs256_token("max", 60, Some(&["news"]), JWT_SECRET)})).await?;
    assert_eq!(next_reply(&mut c).await?["channel"], "team.1");
    assert_eq!(next_reply(&mut c).await?["type"], "refreshed");
    host.publish("secure-key", &json!({"channels": ["vip.7"], "event": "still-vip"})).await?;
    assert_eq!(c.next_event().await?["event"], "still-vip");
    Ok(())
}
