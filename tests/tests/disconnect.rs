//! `POST /v1/users/{user}/disconnect`: a backend logs a user out of every device, on every
//! node, and can refuse the tokens issued before.

use bytes::Bytes;
use notify_tests::{Client, DEMO, JWT_SECRET, RedisServer, Req, TestHost, jwt_tenant};
use serde_json::json;

/// An HS256 token of the `secure` tenant for `sub`, issued `ago` seconds ago.
fn token(sub: &str, ago: u64) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "sub": sub, "iat": now - ago, "exp": now + 600 });
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

async fn disconnect(host: &TestHost, key: &str, user: &str, body: serde_json::Value) -> anyhow::Result<u16> {
    let path = format!("/v1/users/{user}/disconnect");
    let body = if body.is_null() { Bytes::new() } else { body.to_string().into() };
    Ok(Req::post(&path).key(key).body(body).reply(host.addr).await?.0)
}

#[tokio::test]
async fn every_device_of_the_user_is_closed_with_4005_and_the_reason() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let (mut phone, _) = host.join("demo", "user=alice").await?;
    let (mut laptop, _) = host.join("demo", "user=alice").await?;
    let (mut bob, _) = host.join("demo", "user=bob").await?;
    assert_eq!(disconnect(&host, "demo-key", "alice", json!({ "reason": "password changed" })).await?, 202);
    for device in [&mut phone, &mut laptop] {
        assert_eq!(device.next_json().await?, json!({ "type": "disconnected", "reason": "password changed" }));
        assert_eq!(device.close_code().await?, 4005);
    }
    host.publish_ok(&json!({ "users": ["bob"], "event": "still-here" })).await?;
    assert_eq!(bob.next_event().await?["event"], "still-here", "other users stay connected");
    // Without a revocation, alice may connect again.
    host.join("demo", "user=alice").await?;

    assert_eq!(disconnect(&host, "wrong-key", "alice", serde_json::Value::Null).await?, 401);
    assert_eq!(disconnect(&host, "demo-key", "alice", json!({ "unknown": 1 })).await?, 400);
    assert_eq!(disconnect(&host, "demo-key", "alice", serde_json::Value::Null).await?, 202);
    Ok(())
}

#[tokio::test]
async fn a_revocation_reaches_every_node_and_nodes_that_start_later() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("{}\n{}", jwt_tenant(), redis.broker_toml());
    let [a, b] = notify_tests::ready_hosts(&toml).await?;
    let old = token("carol", 60);
    let origin = [("origin", "https://app.example.com")];
    let url = |host: &TestHost, token: &str| host.ws_url("secure", &format!("token={token}"));
    let mut on_a = Client::connect(&url(&a, &old), &origin).await?;
    let mut on_b = Client::connect(&url(&b, &old), &origin).await?;
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(c.next_json().await?["type"], "welcome");
    }

    let now = jsonwebtoken::get_current_timestamp();
    assert_eq!(disconnect(&a, "secure-key", "carol", json!({ "revoke_tokens_before": now - 1 })).await?, 202);
    assert_eq!(on_a.close_code().await?, 4005);
    assert_eq!(on_b.close_code().await?, 4005, "the other node closed its device too");

    let c = TestHost::start(&toml).await?;
    c.wait_ready(200).await?;
    for host in [&a, &b, &c] {
        let refused = Client::try_connect(&url(host, &old), &origin).await?.err().expect("refused");
        assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (401, Some("token_revoked")));
        let fresh = token("carol", 0);
        let mut again = Client::connect(&url(host, &fresh), &origin).await?;
        assert_eq!(again.next_json().await?["type"], "welcome", "a token issued since works");
    }
    Ok(())
}

/// An HS256 token of the `secure` tenant for `sub` with the id `jti`.
fn token_with_id(sub: &str, jti: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "sub": sub, "iat": now, "exp": now + 600, "jti": jti });
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test]
async fn tokens_revoked_by_id_are_refused_on_every_node_and_on_nodes_that_start_later() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("{}\n{}", jwt_tenant(), redis.broker_toml());
    let [a, b] = notify_tests::ready_hosts(&toml).await?;
    let origin = [("origin", "https://app.example.com")];
    let url = |host: &TestHost, token: &str| host.ws_url("secure", &format!("token={token}"));
    let (stolen, other, kept) = (token_with_id("dan", "t-1"), token_with_id("dan", "t-2"), token_with_id("dan", "t-3"));

    // Two revocations of the same user, sent to different nodes: both hold (merged).
    assert_eq!(disconnect(&a, "secure-key", "dan", json!({ "revoke_token_ids": ["t-1"] })).await?, 202);
    assert_eq!(disconnect(&b, "secure-key", "dan", json!({ "revoke_token_ids": ["t-2"] })).await?, 202);
    let c = TestHost::start(&toml).await?;
    c.wait_ready(200).await?;
    for host in [&a, &b, &c] {
        for token in [&stolen, &other] {
            notify_tests::eventually(|| async {
                let refused = Client::try_connect(&url(host, token), &origin).await?.err();
                Ok(refused.is_some_and(|r| r.body["error"]["code"] == "token_revoked"))
            })
            .await?;
        }
        let mut fine = Client::connect(&url(host, &kept), &origin).await?;
        assert_eq!(fine.next_json().await?["type"], "welcome", "another token of the user works");
    }
    // A refresh with a revoked token is refused too.
    let mut live = Client::connect(&url(&a, &kept), &origin).await?;
    live.next_json().await?;
    live.send_json(&json!({"type": "refresh", "token": stolen})).await?;
    let refused = live.next_json().await?;
    assert_eq!(refused["code"], "refresh_refused");
    assert!(refused["message"].as_str().unwrap().contains("revoked"), "{refused}");

    let bad = json!({ "revoke_token_ids": [""] });
    assert_eq!(disconnect(&a, "secure-key", "dan", bad).await?, 400);
    Ok(())
}
