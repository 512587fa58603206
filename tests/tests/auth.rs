//! Client authentication and handshake refusals.

use notify_tests::{Client, DEMO, JWT_SECRET, TestHost, hs256_token, jwt_tenant, rs256_token};
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
