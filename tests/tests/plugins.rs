//! Tenant plugins end to end: real compiled components from plugins/, real sockets.

use notify_tests::{Client, DEMO, Receiver, Req, TestHost, eventually, hs256_token, plugin_path};
use serde_json::json;

const SECRET: &str = "plugin-secret-0123456789";

/// Generous deadlines for the well-behaved plugins: the tests run a debug build on a busy
/// machine, and these tests are about behaviour, not speed. The hostile tests keep the
/// defaults.
const RELAXED: &str = "[plugins]\nauth_deadline = \"250ms\"\nhook_deadline = \"250ms\"\n";

/// Tenant `shop`: jwt-auth (secret, plan/locale attributes) plus the given extra plugin TOML.
fn shop(extra: &str) -> String {
    format!(
        "{DEMO}\n{RELAXED}\n[tenants.shop]\npublish_key = \"shop-key\"\n\
         [tenants.shop.plugins.auth]\npath = \"{}\"\nconfig = {{ secret = \"{SECRET}\" }}\n{extra}",
        plugin_path("jwt_auth")
    )
}

fn token(sub: &str, plan: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 300;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "exp": exp, "plan": plan, "channels": ["news", "orders.*"]}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn connect(host: &TestHost, token: &str) -> anyhow::Result<Client> {
    let mut c = Client::connect(&host.ws_url("shop", &format!("token={token}")), &[]).await?;
    let welcome = c.next_json().await?;
    anyhow::ensure!(welcome["type"] == "welcome", "{welcome}");
    Ok(c)
}

#[tokio::test]
async fn jwt_auth_plugin_accepts_and_denies() -> anyhow::Result<()> {
    let host = TestHost::start(&shop("")).await?;
    let mut c = Client::connect(&host.ws_url("shop", &format!("token={}", token("amy", "pro"))), &[]).await?;
    let welcome = c.next_json().await?;
    assert_eq!(welcome["user"], "amy");
    // The plugin's channel patterns apply.
    assert_eq!(c.subscribe("orders.1").await?["type"], "subscribed");
    assert_eq!(c.subscribe("admin").await?["code"], "forbidden_channel");

    let wrong = hs256_token("amy", 300, None, "not-the-plugin-secret-000");
    let refused = Client::try_connect(&host.ws_url("shop", &format!("token={wrong}")), &[]).await?.err().unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body["error"]["code"], "denied");
    assert_eq!(refused.body["error"]["message"], "invalid token signature");

    let expired = hs256_token("amy", -60, None, SECRET);
    let refused = Client::try_connect(&host.ws_url("shop", &format!("token={expired}")), &[]).await?.err().unwrap();
    assert_eq!((refused.status, refused.body["error"]["message"].as_str()), (401, Some("token expired")));

    let refused = Client::try_connect(&host.ws_url("shop", ""), &[]).await?.err().unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(host.metric("notify_plugin_calls_total{tenant=\"shop\",hook=\"auth\"}").await?, 4.0);
    assert_eq!(host.metric("notify_plugin_failures_total{tenant=\"shop\",hook=\"auth\"}").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn redact_plugin_rewrites_and_drops_events() -> anyhow::Result<()> {
    let extra = format!(
        "[tenants.shop.plugins.transform]\npath = \"{}\"\nconfig = {{ fields = \"ssn,card\", stamp = \"clean\", drop_event = \"internal\" }}\n",
        plugin_path("redact")
    );
    let host = TestHost::start(&shop(&extra)).await?;
    let mut c = connect(&host, &token("bo", "free")).await?;
    let publish = |body: serde_json::Value| {
        let host = &host;
        async move {
            let (status, res) = host.publish("shop-key", &body).await?;
            anyhow::ensure!(status == 202, "{status} {res}");
            Ok::<_, anyhow::Error>(res)
        }
    };
    publish(json!({"users": ["bo"], "event": "profile", "data": {"name": "Bo", "ssn": "123", "nested": [{"card": "4111"}]}}))
        .await?;
    let ev = c.next_event().await?;
    assert_eq!(ev["data"], json!({"name": "Bo", "nested": [{}], "clean": true}));
    // Nested values with nothing to remove (the plugin copies them without parsing them),
    // an empty object, a field spelled with an escape, and a stamp already there.
    for (data, want) in [
        (r#"{"a": {"b": [1, "s"]}, "c": "x"}"#, json!({"a": {"b": [1, "s"]}, "c": "x", "clean": true})),
        ("{ }", json!({"clean": true})),
        (r#"{"k": {"\u0073sn": "1"}}"#, json!({"k": {}, "clean": true})),
        (r#"{"clean": false, "k": 3}"#, json!({"k": 3, "clean": true})),
    ] {
        let body = format!(r#"{{"users": ["bo"], "event": "profile", "data": {data}}}"#);
        let (status, res) = Req::post("/v1/publish").key("shop-key").body(body.into()).reply(host.addr).await?;
        assert_eq!(status, 202, "{res}");
        assert_eq!(c.next_event().await?["data"], want, "{data}");
    }

    publish(json!({"users": ["bo"], "event": "internal", "data": {"secret": 1}})).await?;
    publish(json!({"users": ["bo"], "event": "after", "data": 1})).await?;
    let ev = c.next_event().await?;
    assert_eq!(ev["event"], "after", "the dropped event was delivered");
    assert_eq!(ev["data"], 1, "non-object payloads pass through");
    assert_eq!(host.metric("notify_plugin_calls_total{tenant=\"shop\",hook=\"transform\"}").await?, 7.0);
    Ok(())
}

#[tokio::test]
async fn segment_router_delivers_by_subscriber_plan() -> anyhow::Result<()> {
    let extra = format!("[tenants.shop.plugins.route]\npath = \"{}\"\n", plugin_path("segment_router"));
    let host = TestHost::start(&shop(&extra)).await?;
    let mut pro = connect(&host, &token("pia", "pro")).await?;
    let mut team = connect(&host, &token("tom", "team")).await?;
    let mut free = connect(&host, &token("fay", "free")).await?;
    for c in [&mut pro, &mut team, &mut free] {
        assert_eq!(c.subscribe("news").await?["type"], "subscribed");
    }
    let publish = |body: serde_json::Value| {
        let host = &host;
        async move {
            let (status, res) = host.publish("shop-key", &body).await?;
            anyhow::ensure!(status == 202, "{status} {res}");
            Ok::<_, anyhow::Error>(())
        }
    };
    publish(json!({"broadcast": true, "event": "pro-feature", "attributes": {"plan": "pro,team"}})).await?;
    publish(json!({"channels": ["news"], "event": "pro-news", "attributes": {"plan": "pro"}})).await?;
    publish(json!({"broadcast": true, "event": "everyone"})).await?;
    assert_eq!(pro.next_event().await?["event"], "pro-feature");
    assert_eq!(pro.next_event().await?["event"], "pro-news");
    assert_eq!(pro.next_event().await?["event"], "everyone");
    assert_eq!(team.next_event().await?["event"], "pro-feature");
    assert_eq!(team.next_event().await?["event"], "everyone", "team got the pro-only channel event");
    assert_eq!(free.next_event().await?["event"], "everyone", "free got a filtered event");
    // One route call per event, however many subscribers.
    assert_eq!(host.metric("notify_plugin_calls_total{tenant=\"shop\",hook=\"route\"}").await?, 3.0);
    Ok(())
}

/// Segment routing without an auth plugin, for development: an insecure tenant's clients
/// claim attributes with `?attr.KEY=VALUE`, and the welcome shows a connection what the
/// route filters see of it. A JWT tenant ignores such parameters.
#[tokio::test]
async fn insecure_clients_claim_attributes_for_trying_segment_routing() -> anyhow::Result<()> {
    let extra = format!("[tenants.demo.plugins.route]\npath = \"{}\"\n", plugin_path("segment_router"));
    let host = TestHost::start(&format!("{DEMO}\n{RELAXED}\n{extra}")).await?;
    let (mut pro, welcome) = host.join("demo", "user=pia&attr.plan=pro").await?;
    assert_eq!(welcome["attributes"], json!({"plan": "pro"}));
    let (mut free, welcome) = host.join("demo", "user=fay").await?;
    assert_eq!(welcome.get("attributes"), None, "no attributes, no field");
    host.publish_ok(&json!({"broadcast": true, "event": "pro-only", "attributes": {"plan": "pro"}})).await?;
    host.publish_ok(&json!({"broadcast": true, "event": "everyone"})).await?;
    assert_eq!(pro.next_event().await?["event"], "pro-only");
    assert_eq!(pro.next_event().await?["event"], "everyone");
    assert_eq!(free.next_event().await?["event"], "everyone");
    let long = "x".repeat(300);
    let refused = Client::try_connect(&host.ws_url("demo", &format!("user=al&attr.plan={long}")), &[]).await?;
    assert_eq!(refused.err().map(|r| r.status), Some(400), "an oversized attribute is refused");

    let jwt = TestHost::start(&notify_tests::jwt_tenant()).await?;
    let token = notify_tests::hs256_token("ann", 300, None, notify_tests::JWT_SECRET);
    let origin = [("origin", "https://app.example.com")];
    let mut ann = Client::connect(&jwt.ws_url("secure", &format!("token={token}&attr.plan=pro")), &origin).await?;
    assert_eq!(ann.next_json().await?.get("attributes"), None, "only credentials claim attributes");
    Ok(())
}

/// Tenant `bad` with a hostile plugin on every hook, and `good` without plugins.
fn hostile(name: &str, on_failure: &str) -> String {
    let path = plugin_path(name);
    format!(
        "[plugins]\nbreaker_threshold = 1000\n\
         [tenants.good]\npublish_key = \"good-key-1\"\n\
         [tenants.bad]\npublish_key = \"bad-key-1\"\n\
         [tenants.bad.plugins.auth]\npath = \"{path}\"\n\
         [tenants.bad.plugins.transform]\npath = \"{path}\"\non_failure = \"{on_failure}\"\n\
         [tenants.bad.plugins.route]\npath = \"{path}\"\non_failure = \"{on_failure}\"\n"
    )
}

async fn hostile_plugin_cannot_hurt_the_host(name: &str) -> anyhow::Result<()> {
    // `skip`: the event is delivered as if no plugin were installed.
    let host = TestHost::start(&hostile(name, "skip")).await?;
    let refused = Client::try_connect(&host.ws_url("bad", "user=x"), &[]).await?.err().unwrap();
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (503, Some("auth_unavailable")));

    // bad's users connect through an unplugged path: none exists, so use `good` for the
    // listener side and publish to `bad` to exercise transform/route.
    let mut good = Client::connect(&host.ws_url("good", "user=g"), &[]).await?;
    good.next_json().await?;
    let publishes = (0..5).map(|i| {
        let host = &host;
        async move { host.publish("bad-key-1", &json!({"broadcast": true, "event": "e", "data": i})).await }
    });
    let good_publish = async {
        for i in 0..20 {
            let (status, _) = host.publish("good-key-1", &json!({"users": ["g"], "event": "ok", "data": i})).await?;
            anyhow::ensure!(status == 202);
            assert_eq!(good.next_event().await?["data"], i);
        }
        Ok(())
    };
    let (bad_results, good_result) = tokio::join!(futures_util::future::join_all(publishes), good_publish);
    good_result?;
    for r in bad_results {
        assert_eq!(r?.0, 202, "a failing plugin must not fail the publish under `skip`");
    }
    assert_eq!(host.metric("notify_plugin_failures_total{tenant=\"bad\",hook=\"transform\"}").await?, 5.0);
    assert_eq!(host.metric("notify_plugin_failures_total{tenant=\"bad\",hook=\"route\"}").await?, 5.0);
    assert_eq!(host.metric("notify_plugin_failures_total{tenant=\"bad\",hook=\"auth\"}").await?, 1.0);
    assert_eq!(host.metric("notify_plugin_calls_total{tenant=\"good\",hook=\"transform\"}").await.ok(), None);
    let (status, _) = Req::get("/healthz").reply(host.addr).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn looping_plugin_is_cut_at_its_deadline() -> anyhow::Result<()> {
    hostile_plugin_cannot_hurt_the_host("hostile_loop").await
}

#[tokio::test]
async fn memory_hog_plugin_is_stopped_by_its_cap() -> anyhow::Result<()> {
    hostile_plugin_cannot_hurt_the_host("hostile_memory").await
}

#[tokio::test]
async fn trapping_plugin_fails_only_its_call() -> anyhow::Result<()> {
    hostile_plugin_cannot_hurt_the_host("hostile_trap").await
}

#[tokio::test]
async fn drop_policy_and_circuit_breaker() -> anyhow::Result<()> {
    let toml = hostile("hostile_trap", "drop").replace("breaker_threshold = 1000", "breaker_threshold = 3");
    let host = TestHost::start(&toml).await?;
    for i in 0..5 {
        let (status, _) = host.publish("bad-key-1", &json!({"broadcast": true, "event": "e", "data": i})).await?;
        assert_eq!(status, 202);
    }
    // Three failures trip the breaker; later events are refused without running the plugin,
    // and the drop policy still applies to them.
    assert_eq!(host.metric("notify_plugin_disabled{tenant=\"bad\",hook=\"transform\"}").await?, 1.0);
    assert_eq!(host.metric("notify_plugin_calls_total{tenant=\"bad\",hook=\"transform\"}").await?, 3.0);
    assert_eq!(host.metric("notify_plugin_failures_total{tenant=\"bad\",hook=\"transform\"}").await?, 3.0);
    assert_eq!(host.metric("notify_frames_enqueued_total{tenant=\"bad\"}").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn a_tenants_plugin_never_sees_another_tenants_events() -> anyhow::Result<()> {
    let extra = format!("[tenants.shop.plugins.transform]\npath = \"{}\"\n", plugin_path("redact"));
    let host = TestHost::start(&shop(&extra)).await?;
    let mut demo = host.connect_user("dan").await?;
    for i in 0..10 {
        host.publish_ok(&json!({"users": ["dan"], "event": "demo-only", "data": {"ssn": i}})).await?;
        let ev = demo.next_event().await?;
        assert_eq!(ev["data"]["ssn"], i, "demo's event went through shop's redact plugin");
    }
    assert_eq!(host.metric("notify_plugin_calls_total{tenant=\"shop\",hook=\"transform\"}").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn memory_cap_alone_stops_a_memory_hog() -> anyhow::Result<()> {
    // A deadline far beyond what growing to the cap takes: only the memory limiter can end
    // these calls.
    let toml = hostile("hostile_memory", "drop").replace(
        "breaker_threshold = 1000",
        "breaker_threshold = 1000\nhook_deadline = \"30s\"\nauth_deadline = \"30s\"\nmemory_limit_bytes = 8388608",
    );
    let host = TestHost::start(&toml).await?;
    for i in 0..3 {
        let (status, _) = host.publish("bad-key-1", &json!({"broadcast": true, "event": "e", "data": i})).await?;
        assert_eq!(status, 202);
    }
    assert_eq!(host.metric("notify_plugin_failures_total{tenant=\"bad\",hook=\"transform\"}").await?, 3.0);
    assert_eq!(host.metric("notify_frames_enqueued_total{tenant=\"bad\"}").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn a_plugin_running_long_shares_its_thread_with_other_tenants() -> anyhow::Result<()> {
    // `#[tokio::test]` runs the host and this test on one thread. A transform that loops
    // with a minute of budget holds its call open while `good` publishes and receives on
    // the same thread: the guest yields at every epoch tick once it has run for one.
    let toml = hostile("hostile_loop", "skip").replace("breaker_threshold = 1000", "hook_deadline = \"60s\"");
    let host = std::sync::Arc::new(TestHost::start(&toml).await?);
    let mut good = Client::connect(&host.ws_url("good", "user=g"), &[]).await?;
    good.next_json().await?;
    let looping = tokio::spawn({
        let host = host.clone();
        async move { host.publish("bad-key-1", &json!({"broadcast": true, "event": "e", "data": 0})).await }
    });
    host.wait_metric("notify_plugin_calls_total{tenant=\"bad\",hook=\"transform\"}", |n| n == 1.0).await?;
    for i in 0..5 {
        let (status, _) = host.publish("good-key-1", &json!({"users": ["g"], "event": "ok", "data": i})).await?;
        assert_eq!(status, 202);
        assert_eq!(good.next_event().await?["data"], i);
    }
    assert!(!looping.is_finished(), "the looping call is still running");
    assert_eq!(host.metric("notify_plugin_failures_total{tenant=\"bad\",hook=\"transform\"}").await?, 0.0);
    looping.abort();
    Ok(())
}

#[tokio::test]
async fn sleeping_plugin_is_cut_at_its_wall_clock_stop() -> anyhow::Result<()> {
    hostile_plugin_cannot_hurt_the_host("hostile_sleep").await
}

#[tokio::test]
async fn an_instances_first_call_may_set_up_unless_the_last_two_calls_failed() -> anyhow::Result<()> {
    // A 2 ms deadline. slow-start spins for some milliseconds on each instance's first
    // call, as a language runtime sets up on first use, and traps when asked to. With
    // recycle_after_calls = 2 and `skip`: the version's first instance sets up (1) and
    // serves (2); a fresh one sets up (3) and traps (4); the next fresh one may still set up
    // (one failure is what a retry follows) but traps (5); after two failures the next
    // fresh one must keep to the deadline and is cut (6). Failed calls are skipped.
    let toml = format!(
        "[plugins]\nrecycle_after_calls = 2\nhook_deadline = \"2ms\"\n[tenants.t]\npublish_key = \"t-publish-key\"\n\
         [tenants.t.plugins.transform]\npath = \"{}\"\non_failure = \"skip\"\n",
        plugin_path("slow_start")
    );
    let host = TestHost::start(&toml).await?;
    let mut c = Client::connect(&host.ws_url("t", "user=u"), &[]).await?;
    c.next_json().await?;
    let steps = [
        (json!({"n": 1}), json!({"call": 1})),
        (json!({"n": 2}), json!({"call": 2})),
        (json!({"n": 3}), json!({"call": 1})),
        (json!({"trap": 4}), json!({"trap": 4})),
        (json!({"trap": 5}), json!({"trap": 5})),
        (json!({"n": 6}), json!({"n": 6})),
    ];
    for (data, delivered) in steps {
        let (status, _) = host.publish("t-publish-key", &json!({"users": ["u"], "event": "e", "data": data})).await?;
        assert_eq!(status, 202);
        assert_eq!(c.next_event().await?["data"], delivered, "{data}");
    }
    assert_eq!(host.metric("notify_plugin_calls_total{tenant=\"t\",hook=\"transform\"}").await?, 6.0);
    assert_eq!(host.metric("notify_plugin_failures_total{tenant=\"t\",hook=\"transform\"}").await?, 3.0);
    assert_eq!(host.metric("notify_plugin_unprocessed_total{tenant=\"t\",hook=\"transform\"}").await?, 3.0);
    Ok(())
}

#[tokio::test]
async fn a_failed_transform_is_retried_once_and_never_delivered_unprocessed() -> anyhow::Result<()> {
    // The default policy (`retry`). slow-start traps on its even calls when asked to: the
    // retry runs on a fresh instance (its first call, which may set up) and succeeds. A
    // payload that traps every time is dropped after its retry, told to the tenant's
    // webhook, and never delivered as published.
    let receiver = Receiver::start().await?;
    let (url, secret) = (receiver.url("/hooks"), crate::webhooks::SECRET);
    let toml = format!(
        "[webhooks]\nallow_private = true\n[tenants.t]\npublish_key = \"t-publish-key\"\n\
         webhooks = [{{ url = \"{url}\", secret = \"{secret}\", events = [\"event.dead_lettered\"] }}]\n\
         [tenants.t.plugins.transform]\npath = \"{}\"\n",
        plugin_path("slow_start")
    );
    let host = TestHost::start(&toml).await?;
    let mut c = Client::connect(&host.ws_url("t", "user=u"), &[]).await?;
    c.next_json().await?;
    let steps = [
        (json!({"n": 1}), Some(json!({"call": 1}))),
        (json!({"trap_on_even": true}), Some(json!({"call": 1}))),
        (json!({"trap": 3}), None),
        (json!({"quick": 4}), Some(json!({"call": 1}))),
    ];
    for (data, delivered) in steps {
        let (status, res) = host.publish("t-publish-key", &json!({"users": ["u"], "event": "e", "data": data})).await?;
        assert_eq!(status, 202, "{res}");
        if let Some(delivered) = delivered {
            assert_eq!(c.next_event().await?["data"], delivered, "{data}");
        }
    }
    let told = || receiver.received().iter().filter(|r| r.status == 200).count();
    eventually(|| async { Ok(told() == 1) }).await?;
    let notices = crate::webhooks::verified_for(&receiver.received()[0], "t")?.1;
    assert_eq!((notices.len(), notices[0]["type"].as_str()), (1, Some("event.dead_lettered")), "{notices:?}");
    let reason = notices[0]["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("plugin_failed: the transform plugin failed twice"), "{reason}");
    let metric = async |name: &str| host.metric(&format!("{name}{{tenant=\"t\",hook=\"transform\"}}")).await;
    assert_eq!(metric("notify_plugin_calls_total").await?, 6.0);
    assert_eq!(metric("notify_plugin_failures_total").await?, 3.0);
    assert_eq!(metric("notify_plugin_retries_total").await?, 2.0);
    assert_eq!(metric("notify_plugin_dropped_total").await?, 1.0);
    assert_eq!(metric("notify_plugin_unprocessed_total").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn a_plugin_built_against_wit_0_1_keeps_working_for_every_hook() -> anyhow::Result<()> {
    // legacy-v0-1 is built against the frozen notify:plugin@0.1.0, as components uploaded
    // before 0.2.0 were; the host runs it beside 0.2.0 ones.
    let legacy = plugin_path("legacy_v0_1");
    let toml = format!(
        "{RELAXED}\n[tenants.old]\npublish_key = \"old-publish-key\"\n\
         [tenants.old.plugins.auth]\npath = \"{legacy}\"\n\
         [tenants.old.plugins.transform]\npath = \"{legacy}\"\n\
         [tenants.old.plugins.route]\npath = \"{legacy}\"\n"
    );
    let host = TestHost::start(&toml).await?;
    let refused = Client::try_connect(&host.ws_url("old", "user=ann&token=new"), &[]).await?.err().unwrap();
    assert_eq!((refused.status, refused.body["error"]["message"].as_str()), (401, Some("legacy plugin says no")));
    let mut c = Client::connect(&host.ws_url("old", "user=ann&token=legacy"), &[]).await?;
    assert_eq!(c.next_json().await?["user"], "ann");

    let publish = async |body: serde_json::Value| {
        let (status, res) = host.publish("old-publish-key", &body).await?;
        anyhow::ensure!(status == 202, "{status} {res}");
        Ok::<_, anyhow::Error>(())
    };
    publish(json!({"users": ["ann"], "event": "a", "data": {"n": 1}})).await?;
    assert_eq!(c.next_event().await?["data"], json!({"legacy": true, "n": 1}), "transformed");
    publish(json!({"users": ["ann"], "event": "legacy.drop", "data": {}})).await?;
    // The route's filter compares the subscriber's attribute, set by the legacy auth plugin.
    publish(json!({"users": ["ann"], "event": "b", "data": 2, "attributes": {"only": "v0.2"}})).await?;
    publish(json!({"users": ["ann"], "event": "c", "data": 3, "attributes": {"only": "v0.1"}})).await?;
    let ev = c.next_event().await?;
    assert_eq!((ev["event"].as_str(), &ev["data"]), (Some("c"), &json!(3)), "dropped and filtered out: {ev}");
    for hook in ["auth", "transform", "route"] {
        let failures = format!("notify_plugin_failures_total{{tenant=\"old\",hook=\"{hook}\"}}");
        assert_eq!(host.metric(&failures).await?, 0.0, "{hook}");
    }
    Ok(())
}

/// A tenant `id` (publish key `{id}-publish-key`) with the `slow-start` transform and the
/// tenant `limits` given (the inside of an inline table).
fn slow_start_tenant(id: &str, limits: &str) -> String {
    let path = plugin_path("slow_start");
    format!(
        "[tenants.{id}]\npublish_key = \"{id}-publish-key\"\nlimits = {{ {limits} }}\n\
         [tenants.{id}.plugins.transform]\npath = \"{path}\"\n"
    )
}

#[tokio::test]
async fn each_tenant_has_its_own_plugin_deadline_and_memory_cap() -> anyhow::Result<()> {
    // The node: a 2 ms deadline and 32 MiB per instance. `roomy` may run for 10 s a call,
    // `tight` too but within 4 MiB; `plain` has the node's limits. slow-start spins or holds
    // memory when asked; `quick` skips its set-up spin.
    let tenant = slow_start_tenant;
    let toml = format!(
        "[plugins]\nhook_deadline = \"2ms\"\n{}{}{}",
        tenant("plain", ""),
        tenant("roomy", "plugin_hook_deadline = \"10s\""),
        tenant("tight", "plugin_hook_deadline = \"10s\", plugin_memory_bytes = 4194304")
    );
    let host = TestHost::start(&toml).await?;
    let mut roomy = Client::connect(&host.ws_url("roomy", "user=u"), &[]).await?;
    let mut tight = Client::connect(&host.ws_url("tight", "user=u"), &[]).await?;
    roomy.next_json().await?;
    tight.next_json().await?;
    // A publish is answered once its plugins have run.
    let publish = async |id: &str, data: serde_json::Value| {
        let (status, res) =
            host.publish(&format!("{id}-publish-key"), &json!({"users": ["u"], "event": "e", "data": data})).await?;
        anyhow::ensure!(status == 202, "{status} {res}");
        Ok::<_, anyhow::Error>(())
    };
    let dropped = async |id: &str| {
        host.metric(&format!("notify_plugin_dropped_total{{tenant=\"{id}\",hook=\"transform\"}}")).await
    };
    // Two billion steps: far past 2 ms, and the retry's 100 ms set-up allowance.
    publish("plain", json!({"quick": 1, "spin": 2000})).await?;
    assert_eq!(dropped("plain").await?, 1.0, "the spinning call was cut, and its retry");
    publish("roomy", json!({"quick": 1, "spin": 2000})).await?;
    assert_eq!(roomy.next_event().await?["data"], json!({"call": 1}));
    publish("roomy", json!({"allocate_mib": 8})).await?;
    assert_eq!(roomy.next_event().await?["data"], json!({"call": 2, "held_mib": 8}), "within the node's 32 MiB");

    publish("tight", json!({"quick": 1, "allocate_mib": 8})).await?;
    assert_eq!(dropped("tight").await?, 1.0, "8 MiB is over its cap, twice");
    publish("tight", json!({"quick": 2})).await?;
    assert_eq!(tight.next_event().await?["data"], json!({"call": 1}));
    assert_eq!(dropped("roomy").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn a_tenant_has_at_most_its_own_number_of_plugin_calls_in_progress() -> anyhow::Result<()> {
    // `one` may have one call in progress at a time: its concurrent publishes wait for it in
    // turn, so one instance serves them all and slow-start's per-instance count runs 1..=8.
    // `many` (the node's four) publishes at the same time, from its own slots.
    let tenant = slow_start_tenant;
    let toml = format!(
        "[plugins]\nmax_instances = 8\ninstances_per_tenant = 4\n{}{}",
        tenant("one", "plugin_instances = 1, plugin_hook_deadline = \"2s\""),
        tenant("many", "plugin_hook_deadline = \"2s\"")
    );
    let host = TestHost::start(&toml).await?;
    let mut one = Client::connect(&host.ws_url("one", "user=u"), &[]).await?;
    let mut many = Client::connect(&host.ws_url("many", "user=u"), &[]).await?;
    one.next_json().await?;
    many.next_json().await?;
    let publish = async |id: &str| {
        let body = json!({"users": ["u"], "event": "e", "data": {"quick": 1, "spin": 5}});
        let (status, res) = host.publish(&format!("{id}-publish-key"), &body).await?;
        anyhow::ensure!(status == 202, "{status} {res}");
        Ok::<_, anyhow::Error>(())
    };
    let publishes = (0..8).flat_map(|_| [publish("one"), publish("many")]);
    futures_util::future::try_join_all(publishes).await?;
    let mut calls = Vec::new();
    for _ in 0..8 {
        calls.push(one.next_event().await?["data"]["call"].as_u64().unwrap_or(0));
        many.next_event().await?;
    }
    calls.sort_unstable();
    assert_eq!(calls, (1..=8).collect::<Vec<_>>(), "one instance, one call at a time");
    for id in ["one", "many"] {
        let busy = format!("notify_plugin_busy_total{{tenant=\"{id}\",hook=\"transform\"}}");
        assert_eq!(host.metric(&busy).await?, 0.0, "{id}: every call found a slot in time");
    }
    Ok(())
}
