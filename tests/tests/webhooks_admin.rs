//! Webhook endpoints managed through the admin API: made on one node and used by every node,
//! signing with a secret shown once and rotated with an overlap in which both secrets sign,
//! changed and removed; and an endpoint that keeps failing, paused on every node until it is
//! resumed.

use anyhow::Context as _;
use notify_tests::{DEMO, Received, Receiver, RedisServer, Req, TestHost, eventually, ready_hosts};
use serde_json::{Value, json};
use standardwebhooks::Webhook;

const ADMIN: &str = "admin-token-123";
const BASE: &str = "/v1/admin/tenants/demo/webhooks";

/// Whether `request` verifies with `secret`.
fn signed_by(request: &Received, secret: &str) -> bool {
    Webhook::new(secret).is_ok_and(|w| w.verify(&request.body, &request.headers).is_ok())
}

/// `type user` of the events of `request`.
fn events(request: &Received) -> anyhow::Result<Vec<String>> {
    let body: Value = serde_json::from_slice(&request.body)?;
    let events = body["data"]["events"].as_array().context("events")?;
    Ok(events
        .iter()
        .map(|e| format!("{} {}", e["type"].as_str().unwrap_or("?"), e["data"]["user"].as_str().unwrap_or("?")))
        .collect())
}

/// The answered request that carried `event`.
fn carrying(receiver: &Receiver, event: &str) -> Option<Received> {
    let found = receiver.received().into_iter().filter(|r| r.status == 200);
    found.into_iter().find(|r| events(r).is_ok_and(|e| e.iter().any(|e| e == event)))
}

async fn call(host: &TestHost, method: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body)? };
    Req::new(method, path).key(ADMIN).body(body.into()).reply(host.addr).await
}

#[tokio::test]
async fn an_endpoint_made_on_one_node_signs_on_every_node_and_its_secret_rotates_with_overlap() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let redis = RedisServer::start().await?;
    let toml = format!(
        "[server]\nadmin_token = \"{ADMIN}\"\n[webhooks]\nallow_private = true\n{DEMO}\n{}",
        redis.broker_toml()
    );
    let [a, b] = ready_hosts::<2>(&toml).await?;
    let hook = json!({"url": receiver.url("/hooks"), "events": ["subscription.added"], "batch": {"max_wait": "20ms"}});
    let (status, made) = call(&a, "POST", BASE, hook).await?;
    assert_eq!(status, 201, "{made}");
    let (id, first) = (made["id"].as_str().context("id")?, made["secret"].as_str().context("secret")?.to_owned());
    assert!(id.starts_with("we_") && first.starts_with("whsec_"), "{made}");
    assert_eq!((made["source"].as_str(), made["events"].clone()), (Some("api"), json!(["subscription.added"])));

    // Node B has it: a subscription there is told, signed with the secret.
    eventually(|| async { Ok(call(&b, "GET", BASE, Value::Null).await?.1["endpoints"][0]["id"] == id) }).await?;
    let listed = call(&b, "GET", BASE, Value::Null).await?.1;
    assert!(listed.to_string().find("whsec_").is_none(), "a listing shows no secret: {listed}");
    let (mut ann, _) = b.join("demo", "user=ann").await?;
    ann.subscribe("news").await?;
    eventually(|| async { Ok(carrying(&receiver, "subscription.added ann").is_some()) }).await?;
    assert!(signed_by(&carrying(&receiver, "subscription.added ann").context("ann")?, &first));

    // Rotated with an overlap: both secrets sign, so a receiver switches when it is ready.
    let path = format!("{BASE}/{id}/secret");
    let (status, rotated) = call(&a, "POST", &path, json!({"overlap": "1h"})).await?;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["secret"].as_str().context("secret")?.to_owned();
    assert_eq!(rotated["secrets_expire_at"].as_array().map(Vec::len), Some(2));
    eventually(|| async {
        let listed = call(&b, "GET", BASE, Value::Null).await?.1;
        Ok(listed["endpoints"][0]["secrets_expire_at"].as_array().map(Vec::len) == Some(2))
    })
    .await?;
    let (mut bob, _) = b.join("demo", "user=bob").await?;
    bob.subscribe("news").await?;
    eventually(|| async { Ok(carrying(&receiver, "subscription.added bob").is_some()) }).await?;
    let request = carrying(&receiver, "subscription.added bob").context("bob")?;
    assert!(signed_by(&request, &first) && signed_by(&request, &second), "both sign during the overlap");
    assert_eq!(request.headers["webhook-signature"].to_str()?.split(' ').count(), 2);

    // Rotated again without overlap: only the newest signs.
    let third = call(&a, "POST", &path, Value::Null).await?.1["secret"].as_str().context("secret")?.to_owned();
    eventually(|| async {
        let listed = call(&b, "GET", BASE, Value::Null).await?.1;
        Ok(listed["endpoints"][0]["secrets_expire_at"].as_array().map(Vec::len) == Some(1))
    })
    .await?;
    let (mut cy, _) = b.join("demo", "user=cy").await?;
    cy.subscribe("news").await?;
    eventually(|| async { Ok(carrying(&receiver, "subscription.added cy").is_some()) }).await?;
    let request = carrying(&receiver, "subscription.added cy").context("cy")?;
    assert!(signed_by(&request, &third) && !signed_by(&request, &first) && !signed_by(&request, &second));

    // Changed, then removed, on every node.
    let (status, changed) = call(&a, "PATCH", &format!("{BASE}/{id}"), json!({"events": ["user.online"]})).await?;
    assert_eq!((status, changed["events"].clone()), (200, json!(["user.online"])), "{changed}");
    let (status, _) = call(&a, "DELETE", &format!("{BASE}/{id}"), Value::Null).await?;
    assert_eq!(status, 204);
    eventually(|| async { Ok(call(&b, "GET", BASE, Value::Null).await?.1["endpoints"] == json!([])) }).await?;
    Ok(())
}

#[tokio::test]
async fn endpoint_changes_are_checked() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let configured = format!(
        "webhooks = [{{ url = \"{}\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }}]",
        receiver.url("/config")
    );
    let host = TestHost::start(&format!("[server]\nadmin_token = \"{ADMIN}\"\n{DEMO}{configured}\n")).await?;
    let (status, error) = call(&host, "POST", BASE, json!({"url": "ftp://example.com"})).await?;
    assert_eq!((status, error["error"]["field"].as_str()), (400, Some("url")), "{error}");
    let (status, error) =
        call(&host, "POST", BASE, json!({"url": "https://a.example", "events": ["user.away"]})).await?;
    assert_eq!((status, error["error"]["field"].as_str()), (400, Some("events")), "{error}");
    let (status, error) = call(&host, "POST", BASE, json!({"events": []})).await?;
    assert_eq!((status, error["error"]["field"].as_str()), (400, Some("url")), "{error}");
    let (status, error) = call(&host, "PATCH", &format!("{BASE}/we_0000"), json!({})).await?;
    assert_eq!((status, error["error"]["code"].as_str()), (404, Some("unknown_webhook")));
    let (status, error) = call(&host, "DELETE", &format!("{BASE}/0"), Value::Null).await?;
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("managed_by_config")));
    let listed = call(&host, "GET", BASE, Value::Null).await?.1;
    assert_eq!(
        (listed["endpoints"][0]["id"].as_str(), listed["endpoints"][0]["source"].as_str()),
        (Some("0"), Some("config"))
    );
    let (status, _) = Req::get(BASE).key("wrong-token-123").reply(host.addr).await?;
    assert_eq!(status, 403);
    Ok(())
}

#[tokio::test]
async fn an_endpoint_failing_too_long_is_paused_until_resumed() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.answer(&[500; 1000]);
    let host = TestHost::start(&format!(
        "[server]\nadmin_token = \"{ADMIN}\"\n[broker]\nkind = \"memory\"\n\
         [webhooks]\nallow_private = true\ninitial_backoff = \"20ms\"\nmax_backoff = \"50ms\"\npause_after = \"300ms\"\n{DEMO}"
    ))
    .await?;
    let hook = json!({"url": receiver.url("/hooks"), "events": ["user.online"], "batch": {"max_wait": "10ms"}});
    let id = call(&host, "POST", BASE, hook).await?.1["id"].as_str().context("id")?.to_owned();
    let (_ann, _) = host.join("demo", "user=ann").await?;
    let paused = || async {
        Ok::<_, anyhow::Error>(call(&host, "GET", BASE, Value::Null).await?.1["endpoints"][0]["paused"].clone())
    };
    eventually(|| async { Ok(paused().await?.is_object()) }).await?;
    assert!(paused().await?["reason"].as_str().context("reason")?.contains("500"), "{}", paused().await?);
    let gauge = format!("notify_webhook_paused{{tenant=\"demo\",endpoint=\"{id}\"}}");
    assert_eq!(host.metric(&gauge).await?, 1.0);

    // While paused, events go to the dead letters unsent.
    let (_bob, _) = host.join("demo", "user=bob").await?;
    let letters = || async {
        let (_, body) = call(&host, "GET", &format!("{BASE}/dead-letters"), Value::Null).await?;
        Ok::<_, anyhow::Error>(body["dead_letters"].as_array().cloned().unwrap_or_default())
    };
    let told_bob = |letters: &[Value]| letters.iter().any(|l| l["events"][0]["data"]["user"] == "bob");
    eventually(|| async { Ok(told_bob(&letters().await?)) }).await?;
    let bob = letters().await?.into_iter().find(|l| l["events"][0]["data"]["user"] == "bob").context("bob")?;
    assert!(bob["reason"].as_str().context("reason")?.contains("paused"), "{bob}");
    assert!(receiver.received().iter().all(|r| !events(r).is_ok_and(|e| e.contains(&"user.online bob".into()))));

    // Resumed: it sends again, and what was dead-lettered replays.
    receiver.recover();
    let (status, resumed) = call(&host, "POST", &format!("{BASE}/{id}/resume"), Value::Null).await?;
    assert_eq!((status, &resumed["paused"]), (200, &Value::Null), "{resumed}");
    let (_cy, _) = host.join("demo", "user=cy").await?;
    eventually(|| async { Ok(carrying(&receiver, "user.online cy").is_some()) }).await?;
    for letter in letters().await? {
        let replay = format!("{BASE}/dead-letters/{}/replay", letter["id"].as_str().context("id")?);
        assert_eq!(call(&host, "POST", &replay, Value::Null).await?.0, 202);
    }
    eventually(|| async {
        Ok(carrying(&receiver, "user.online ann").is_some() && carrying(&receiver, "user.online bob").is_some())
    })
    .await?;
    assert_eq!(host.metric(&gauge).await?, 0.0);
    Ok(())
}

/// Three users on channel `match` before an endpoint exists; it is added, a fourth user
/// subscribes and everyone leaves: the endpoint hears the channel vacated and the users
/// offline, and nothing came, since all was there before it.
async fn an_endpoint_added_later_knows_who_was_already_there(toml: &str) -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let host = TestHost::start(toml).await?;
    let mut early = Vec::new();
    for user in ["ann", "bob"] {
        let (mut client, _) = host.join("demo", &format!("user={user}")).await?;
        client.subscribe("match").await?;
        early.push(client);
    }
    let events = json!(["user.online", "user.offline", "channel.occupied", "channel.vacated"]);
    let hook = json!({"url": receiver.url("/hooks"), "events": events, "batch": {"max_wait": "10ms"}});
    assert_eq!(call(&host, "POST", BASE, hook).await?.0, 201);
    let (mut late, _) = host.join("demo", "user=ann").await?;
    late.subscribe("match").await?;
    drop(early);
    drop(late);
    let told = || -> anyhow::Result<Vec<String>> {
        let answered = receiver.received().into_iter().filter(|r| r.status == 200);
        let mut all = Vec::new();
        for request in answered {
            let body: Value = serde_json::from_slice(&request.body)?;
            for e in body["data"]["events"].as_array().context("events")? {
                let data = &e["data"];
                all.push(format!(
                    "{} {}",
                    e["type"].as_str().unwrap_or("?"),
                    data["user"].as_str().or(data["channel"].as_str()).unwrap_or("?")
                ));
            }
        }
        all.sort();
        Ok(all)
    };
    eventually(|| async { Ok(told()?.len() == 3) }).await?;
    assert_eq!(told()?, ["channel.vacated match", "user.offline ann", "user.offline bob"]);
    Ok(())
}

#[tokio::test]
async fn an_endpoint_added_later_on_one_node_knows_who_was_already_there() -> anyhow::Result<()> {
    an_endpoint_added_later_knows_who_was_already_there(&format!(
        "[server]\nadmin_token = \"{ADMIN}\"\n[broker]\nkind = \"memory\"\npresence_debounce = \"100ms\"\n\
         [webhooks]\nallow_private = true\n{DEMO}"
    ))
    .await
}

#[tokio::test]
async fn an_endpoint_added_later_in_cluster_mode_knows_who_was_already_there() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    an_endpoint_added_later_knows_who_was_already_there(&format!(
        "[server]\nadmin_token = \"{ADMIN}\"\n[webhooks]\nallow_private = true\n{DEMO}\n{}",
        redis.broker_toml()
    ))
    .await
}
