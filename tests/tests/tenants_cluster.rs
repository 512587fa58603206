//! Three nodes over one Redis manage tenants as one platform: a change made on any node is
//! applied on every node, through the control-plane state in Redis.

use notify_tests::{DEMO, RedisServer, Req, TestHost, eventually};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123";

async fn admin(host: &TestHost, method: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    Req::new(method, format!("/v1/admin/tenants{path}")).key(ADMIN).body(body.into()).reply(host.addr).await
}

async fn publish(host: &TestHost, key: &str) -> anyhow::Result<u16> {
    Ok(host.publish(key, &json!({ "users": ["alice"], "event": "hello" })).await?.0)
}

#[tokio::test]
async fn a_tenant_managed_on_one_node_acts_on_every_node() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("[server]\nadmin_token = \"{ADMIN}\"\n{DEMO}\n{}", redis.broker_toml());
    let mut hosts = Vec::new();
    for _ in 0..3 {
        let host = TestHost::start(&toml).await?;
        host.wait_ready(200).await?;
        hosts.push(host);
    }
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);

    // Created on B: a client connects on A and gets what is published on C.
    let (status, created) = admin(b, "POST", "", json!({ "id": "acme" })).await?;
    assert_eq!(status, 201, "{created}");
    let first_key = created["publish_key"].as_str().unwrap().to_owned();
    for host in [a, c] {
        eventually(|| async { Ok(admin(host, "GET", "/acme", Value::Null).await?.0 == 200) }).await?;
    }
    let (mut alice, _) = a.join("acme", "user=alice").await?;
    assert_eq!(publish(c, &first_key).await?, 202);
    assert_eq!(alice.next_event().await?["event"], "hello");

    // Concurrent changes resolve by version, whichever node they reach.
    let (_, headers, _) = Req::get("/v1/admin/tenants/acme").key(ADMIN).body(Vec::new().into()).full(b.addr).await?;
    let etag = headers["etag"].to_str()?.to_owned();
    let auth = format!("Bearer {ADMIN}");
    let patch = |host: &TestHost, body: Value| {
        let (addr, auth, etag) = (host.addr, auth.clone(), etag.clone());
        async move {
            let headers = [("authorization", auth.as_str()), ("if-match", etag.as_str())];
            Req::patch("/v1/admin/tenants/acme").headers(&headers).body(body.to_string().into()).reply(addr).await
        }
    };
    assert_eq!(patch(c, json!({ "limits": { "publish_rate": 1000 } })).await?.0, 200);
    let (status, body) = patch(a, json!({ "limits": { "publish_rate": 1 } })).await?;
    assert_eq!((status, body["error"]["code"].clone()), (409, json!("version_conflict")));
    eventually(|| async { Ok(admin(b, "GET", "/acme", Value::Null).await?.1["limits"]["publish_rate"] == 1000) })
        .await?;

    // A key rotated on A stops working on C.
    let (status, rotated) = admin(a, "POST", "/acme/keys/publish", Value::Null).await?;
    assert_eq!(status, 200);
    let second_key = rotated["key"].as_str().unwrap().to_owned();
    eventually(|| async { Ok(publish(c, &first_key).await? == 401) }).await?;
    assert_eq!(publish(c, &second_key).await?, 202);

    // Deleted on C: its client on A is closed with 4004, its key is refused everywhere, and
    // its history, presence and ingest streams leave Redis.
    let mut conn = redis.conn().await?;
    let _: String =
        redis::cmd("XADD").arg("notify:acme:ingest").arg("*").arg("event").arg("{}").query_async(&mut conn).await?;
    let acme_keys = || {
        let mut conn = conn.clone();
        async move {
            let all: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await?;
            Ok::<_, anyhow::Error>(
                all.into_iter().filter(|k| k.contains(":acme:") || k.contains("{acme}")).collect::<Vec<_>>(),
            )
        }
    };
    let before = acme_keys().await?;
    for kind in [":pos", ":events", ":ingest", ":online"] {
        assert!(before.iter().any(|k| k.ends_with(kind)), "no {kind} key in {before:?}");
    }
    let (status, _) = admin(c, "DELETE", "/acme", Value::Null).await?;
    assert_eq!(status, 204);
    assert_eq!(alice.close_code().await?, 4004);
    for host in [a, b] {
        eventually(|| async { Ok(publish(host, &second_key).await? == 401) }).await?;
    }
    eventually(|| async { Ok(acme_keys().await?.is_empty()) }).await?;
    Ok(())
}

#[tokio::test]
async fn nodes_keep_their_tenants_while_redis_is_away_and_converge_after() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let toml = format!("[server]\nadmin_token = \"{ADMIN}\"\n{DEMO}\n{}", redis.broker_toml());
    let (a, b) = (&TestHost::start(&toml).await?, &TestHost::start(&toml).await?);
    a.wait_ready(200).await?;
    b.wait_ready(200).await?;
    let (status, created) = admin(a, "POST", "", json!({ "id": "acme" })).await?;
    assert_eq!(status, 201);
    let key = created["publish_key"].as_str().unwrap().to_owned();
    eventually(|| async { Ok(admin(b, "GET", "/acme", Value::Null).await?.0 == 200) }).await?;

    redis.kill()?;
    let (status, body) = admin(a, "POST", "", json!({ "id": "later" })).await?;
    assert_eq!((status, body["error"]["code"].clone()), (503, json!("store_unavailable")));
    let (_client, welcome) = b.join("acme", "user=alice").await?;
    assert_eq!(welcome["tenant"], "acme", "the last state keeps serving while Redis is away");
    assert_eq!(admin(b, "GET", "/acme", Value::Null).await?.0, 200);

    redis.restart().await?;
    a.wait_ready(200).await?;
    b.wait_ready(200).await?;
    eventually(|| async { Ok(admin(a, "POST", "", json!({ "id": "later" })).await?.0 == 201) }).await?;
    eventually(|| async { Ok(admin(b, "GET", "/later", Value::Null).await?.0 == 200) }).await?;
    eventually(|| async { Ok(publish(b, &key).await? == 202) }).await?;
    Ok(())
}

#[tokio::test]
async fn a_restarted_node_comes_back_with_the_same_tenants() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("[server]\nadmin_token = \"{ADMIN}\"\n{DEMO}\n{}", redis.broker_toml());
    let a = TestHost::start(&toml).await?;
    a.wait_ready(200).await?;
    let mut b = notify_tests::HostProcess::start(notify_tests::host_bin!(), &toml).await?;
    let (status, created) = admin(&a, "POST", "", json!({ "id": "acme", "limits": { "max_connections": 7 } })).await?;
    assert_eq!(status, 201);
    let key = created["publish_key"].as_str().unwrap().to_owned();
    b.signal("TERM")?;
    assert_eq!(b.child.wait().await?.code(), Some(0));

    let b = notify_tests::HostProcess::start(notify_tests::host_bin!(), &toml).await?;
    eventually(|| async { Ok(Req::get("/readyz").body(Vec::new().into()).reply(b.addr).await?.0 == 200) }).await?;
    // Ready means the state is loaded: the tenant is there at once, no waiting.
    let path = "/v1/admin/tenants/acme";
    let (status, tenant) = Req::get(path).key(ADMIN).body(Vec::new().into()).reply(b.addr).await?;
    assert_eq!((status, tenant["limits"]["max_connections"].clone()), (200, json!(7)));
    let body = json!({ "broadcast": true, "event": "back" }).to_string();
    let (status, _) = Req::post("/v1/publish").key(&key).body(body.into()).reply(b.addr).await?;
    assert_eq!(status, 202);
    Ok(())
}

#[tokio::test]
async fn nodes_put_back_a_control_plane_that_redis_lost() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("[server]\nadmin_token = \"{ADMIN}\"\n{DEMO}\n{}", redis.broker_toml());
    let [a, b] = notify_tests::ready_hosts(&toml).await?;
    let (status, created) = admin(&a, "POST", "", json!({ "id": "acme" })).await?;
    assert_eq!(status, 201);
    let key = created["publish_key"].as_str().unwrap().to_owned();
    let headers =
        [("authorization", format!("Bearer {ADMIN}")), ("notify-plugin-config", r#"{"stamp":"kept"}"#.into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = "/v1/admin/tenants/acme/plugins/transform";
    let (status, _) =
        Req::put(path).headers(&headers).body(notify_tests::plugin_bytes("redact").into()).reply(a.addr).await?;
    assert_eq!(status, 201);
    eventually(|| async { Ok(admin(&b, "GET", "/acme", Value::Null).await?.0 == 200) }).await?;
    let (mut alice, _) = b.join("acme", "user=alice").await?;

    // Redis forgets everything (a restart without persistence would do the same).
    let mut conn = redis.conn().await?;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;

    // The nodes put their copy back, plugin bytes included: a node that starts now gets the
    // tenant and its plugin, and alice was never disconnected.
    let c = TestHost::start(&toml).await?;
    eventually(|| async { Ok(admin(&c, "GET", "/acme", Value::Null).await?.0 == 200) }).await?;
    // The restored plugin runs on the new node.
    notify_tests::publish_until(c.addr, &key, "alice", &mut alice, &json!({ "kept": true })).await?;
    let version: u64 = redis::cmd("GET").arg("{notify:control}:version").query_async(&mut conn).await?;
    assert_eq!(version, 2, "the state came back with its version");
    Ok(())
}

#[tokio::test]
async fn a_connection_quota_counts_every_node() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("[server]\nadmin_token = \"{ADMIN}\"\n{DEMO}\n{}", redis.broker_toml());
    let [a, b] = notify_tests::ready_hosts(&toml).await?;
    let (status, _) = admin(&a, "POST", "", json!({ "id": "acme", "limits": { "max_connections": 3 } })).await?;
    assert_eq!(status, 201);
    eventually(|| async { Ok(admin(&b, "GET", "/acme", Value::Null).await?.0 == 200) }).await?;
    let mut on_a = Vec::new();
    for i in 0..3 {
        on_a.push(a.join("acme", &format!("user=a{i}")).await?.0);
    }

    // Once A's report reached B, B counts A's three connections: the tenant is full.
    let url = b.ws_url("acme", "user=b");
    eventually(|| async {
        Ok(match notify_tests::Client::try_connect(&url, &[]).await? {
            Ok(_admitted_before_the_report) => false,
            Err(refused) => refused.status == 429 && refused.body["error"]["code"] == "too_many_connections",
        })
    })
    .await?;

    // One leaves A: B admits one again.
    drop(on_a.pop());
    eventually(|| async { Ok(notify_tests::Client::try_connect(&url, &[]).await?.is_ok()) }).await?;
    Ok(())
}

/// Each node reports its own health with its tenants' figures, so any node's admin API (and
/// the dashboard on it) shows every live node: version, start, memory, readiness, broker.
#[tokio::test]
async fn any_node_lists_every_node_with_its_health() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("[server]\nadmin_token = \"{ADMIN}\"\n{DEMO}\n{}", redis.broker_toml());
    let [a, b] = notify_tests::ready_hosts::<2>(&toml).await?;
    let nodes = || async { Req::get("/v1/admin/nodes").key(ADMIN).reply(a.addr).await };
    eventually(|| async { Ok(nodes().await?.1["nodes"].as_array().is_some_and(|n| n.len() == 2)) }).await?;
    let (status, listed) = nodes().await?;
    assert_eq!(status, 200);
    let listed = listed["nodes"].as_array().unwrap().clone();
    assert_eq!(listed.iter().filter(|n| n["this_node"] == true).count(), 1, "{listed:?}");
    for node in &listed {
        let health = &node["health"];
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "{node}");
        assert_eq!((health["ready"].as_str(), health["broker_up"].as_bool()), (Some("ready"), Some(true)), "{node}");
        assert!(health["resident_bytes"].as_u64().is_some_and(|b| b > 1 << 20), "{node}");
        assert!(health["started_at_ms"].as_u64().is_some_and(|t| t > 0), "{node}");
    }
    assert_eq!(Req::get("/v1/admin/nodes").key("not-the-token-123").reply(b.addr).await?.0, 403);

    // A node that drains says so until it is gone.
    b.shutdown.shutdown();
    eventually(|| async {
        let (_, listed) = nodes().await?;
        let draining = listed["nodes"].as_array().into_iter().flatten().any(|n| n["health"]["ready"] == "draining");
        let gone = listed["nodes"].as_array().is_some_and(|n| n.len() == 1);
        Ok(draining || gone)
    })
    .await?;
    Ok(())
}
