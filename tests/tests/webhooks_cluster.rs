//! Presence and occupancy webhooks of nodes sharing a Redis: each transition is decided and
//! written once, however many nodes see it, and told once per event id, also when the node
//! holding a user's last connection is SIGKILLed (the sweep tells it).

use anyhow::Context as _;
use notify_tests::{DEMO, HostProcess, Receiver, RedisServer, Req, TestHost, eventually, host_bin, ready_hosts};

use crate::webhooks::{SECRET, verified};

/// The config of nodes on `redis` whose tenant `demo` sends `events` to `receiver`.
fn config(redis: &RedisServer, receiver: &Receiver, events: &str) -> String {
    let hooks = format!(
        "webhooks = [{{ url = \"{}\", secret = \"{SECRET}\", events = [{events}], batch = {{ max_wait = \"20ms\" }} }}]",
        receiver.url("/hooks")
    );
    let broker = redis.broker_toml().replace("presence_debounce = \"300ms\"", "presence_debounce = \"2s\"");
    format!("{DEMO}{hooks}\n[webhooks]\nallow_private = true\n{broker}")
}

/// `type subject` of each event delivered, once per event id (receivers deduplicate by it),
/// in the order first delivered.
fn told(receiver: &Receiver) -> anyhow::Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for request in receiver.received().iter().filter(|r| r.status == 200) {
        for event in verified(request)?.1 {
            if seen.insert(event["id"].as_str().context("id")?.to_owned()) {
                let data = &event["data"];
                let subject = data["user"].as_str().or(data["channel"].as_str()).context("subject")?;
                out.push(format!("{} {subject}", event["type"].as_str().context("type")?));
            }
        }
    }
    Ok(out)
}

/// How many transitions the tenant's stream holds: each is written once.
async fn written(redis: &RedisServer) -> anyhow::Result<u64> {
    let mut conn = redis.conn().await?;
    Ok(redis::cmd("XLEN").arg("notify:presence:{demo}:transitions").query_async(&mut conn).await?)
}

#[tokio::test]
async fn a_user_leaving_one_node_and_back_on_another_within_the_debounce_is_one_online_one_offline()
-> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let redis = RedisServer::start().await?;
    let [a, b] = ready_hosts::<2>(&config(&redis, &receiver, r#""user.online", "user.offline""#)).await?;
    let (on_a, _) = a.join("demo", "user=ann").await?;
    eventually(|| async { Ok(told(&receiver)? == ["user.online ann"]) }).await?;
    drop(on_a);
    let (on_b, _) = b.join("demo", "user=ann").await?;
    drop(on_b);
    eventually(|| async { Ok(told(&receiver)?.len() == 2) }).await?;
    assert_eq!(told(&receiver)?, ["user.online ann", "user.offline ann"]);
    assert_eq!(written(&redis).await?, 2, "the reconnect on B wrote nothing");
    Ok(())
}

#[tokio::test]
async fn a_node_killed_holding_the_last_connection_is_one_offline_from_the_sweep() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let redis = RedisServer::start().await?;
    let toml = config(&redis, &receiver, r#""user.online", "user.offline""#);
    let doomed = HostProcess::start(host_bin!(), &toml).await?;
    let survivor = TestHost::start(&toml).await?;
    let mut ann = notify_tests::Client::connect(&format!("ws://{}/v1/ws/demo?user=ann", doomed.addr), &[]).await?;
    assert_eq!(ann.next_json().await?["type"], "welcome");
    let (bob, _) = survivor.join("demo", "user=bob").await?;
    eventually(|| async { Ok(told(&receiver)?.len() == 2) }).await?;

    // No drain, no goodbye: once its heartbeat is older than node_timeout the survivor sweeps
    // it, and a transition the dead node had read but not delivered is claimed and sent.
    doomed.signal("KILL")?;
    eventually(|| async { Ok(told(&receiver)?.len() == 3) }).await?;
    let mut events = told(&receiver)?;
    events[..2].sort();
    assert_eq!(events, ["user.online ann", "user.online bob", "user.offline ann"]);
    assert_eq!(written(&redis).await?, 3, "one offline, however many nodes swept");
    drop(bob);
    Ok(())
}

#[tokio::test]
async fn first_subscribers_on_two_nodes_at_once_are_one_occupied() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let redis = RedisServer::start().await?;
    let [a, b] = ready_hosts::<2>(&config(&redis, &receiver, r#""channel.occupied", "channel.vacated""#)).await?;
    let (mut ann, _) = a.join("demo", "user=ann").await?;
    let (mut bob, _) = b.join("demo", "user=bob").await?;
    let (on_a, on_b) = tokio::join!(ann.subscribe("match"), bob.subscribe("match"));
    on_a?;
    on_b?;
    eventually(|| async { Ok(told(&receiver)? == ["channel.occupied match"]) }).await?;
    drop(ann);
    drop(bob);
    eventually(|| async { Ok(told(&receiver)?.len() == 2) }).await?;
    assert_eq!(told(&receiver)?, ["channel.occupied match", "channel.vacated match"]);
    assert_eq!(written(&redis).await?, 2);
    Ok(())
}

#[tokio::test]
async fn a_dead_letter_of_one_node_is_listed_and_replayed_once_through_any_node() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.answer(&[500; 100]);
    let redis = RedisServer::start().await?;
    let toml = config(&redis, &receiver, r#""subscription.added""#).replace(
        "[webhooks]\n",
        "[server]\nadmin_token = \"admin-token-123\"\n[webhooks]\nretry_for = \"300ms\"\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\n",
    );
    let [a, b] = ready_hosts::<2>(&toml).await?;
    let (mut ann, _) = a.join("demo", "user=ann").await?;
    ann.subscribe("news").await?;
    let path = "/v1/admin/tenants/demo/webhooks/dead-letters";
    let listed_on = |host: &TestHost| {
        let addr = host.addr;
        async move {
            let (_, body) = Req::get(path).key("admin-token-123").reply(addr).await?;
            Ok::<_, anyhow::Error>(body["dead_letters"].as_array().cloned().unwrap_or_default())
        }
    };
    eventually(|| async { Ok(listed_on(&b).await?.len() == 1) }).await?;
    let letter = listed_on(&b).await?[0].clone();
    assert_eq!(letter["events"][0]["data"]["user"], "ann", "node A's letter, listed by node B: {letter}");
    assert_eq!(listed_on(&a).await?, std::slice::from_ref(&letter));

    receiver.recover();
    let replay = format!("{path}/{}/replay", letter["id"].as_str().context("id")?);
    let (on_a, on_b) = tokio::join!(
        Req::post(replay.as_str()).key("admin-token-123").reply(a.addr),
        Req::post(replay.as_str()).key("admin-token-123").reply(b.addr)
    );
    let mut statuses = [on_a?.0, on_b?.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 404], "replayed once");
    eventually(|| async { Ok(told(&receiver)? == ["subscription.added ann"]) }).await?;
    assert!(listed_on(&a).await?.is_empty() && listed_on(&b).await?.is_empty());
    Ok(())
}

/// The event ids of the `user.online ann` requests, answered or not.
fn online_ids(receiver: &Receiver) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for request in receiver.received() {
        for event in verified(&request)?.1.into_iter().filter(|e| e["type"] == "user.online") {
            ids.push(event["id"].as_str().context("id")?.to_owned());
        }
    }
    Ok(ids)
}

/// A node reads ann's `user.online` but cannot deliver it (the receiver fails) and is
/// SIGKILLed; `then` brings up whichever node is to send it (another node, or the same
/// node id again); the receiver recovers; the transition arrives with its first id.
async fn a_transition_a_killed_node_held_is_sent(
    then: impl AsyncFnOnce(&str) -> anyhow::Result<HostProcess>,
) -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.answer(&[500; 10_000]);
    let redis = RedisServer::start().await?;
    let toml = config(&redis, &receiver, r#""user.online", "user.offline""#);
    let first = HostProcess::start(host_bin!(), &toml.replace("[broker]\n", "[broker]\nnode_id = \"first\"\n")).await?;
    let mut ann = notify_tests::Client::connect(&format!("ws://{}/v1/ws/demo?user=ann", first.addr), &[]).await?;
    assert_eq!(ann.next_json().await?["type"], "welcome");
    eventually(|| async { Ok(!online_ids(&receiver)?.is_empty()) }).await?;
    let id = online_ids(&receiver)?[0].clone();
    first.signal("KILL")?;
    let _next = then(&toml).await?;
    receiver.recover();
    // A transition claimed from a dead node may come after later ones: each says when.
    let sorted = || -> anyhow::Result<Vec<String>> {
        let mut told = told(&receiver)?;
        told.sort();
        Ok(told)
    };
    eventually(|| async { Ok(sorted()? == ["user.offline ann", "user.online ann"]) }).await?;
    let answered = receiver.received().into_iter().filter(|r| r.status == 200);
    let online =
        answered.flat_map(|r| verified(&r).map(|v| v.1).unwrap_or_default()).find(|e| e["type"] == "user.online");
    assert_eq!(online.context("online")?["id"], id.as_str(), "the same transition, the same id");
    Ok(())
}

#[tokio::test]
async fn a_transition_a_killed_node_held_is_claimed_and_sent_by_another_node() -> anyhow::Result<()> {
    a_transition_a_killed_node_held_is_sent(async |toml| HostProcess::start(host_bin!(), toml).await).await
}

#[tokio::test]
async fn a_transition_a_killed_node_held_is_sent_when_it_restarts_under_its_name() -> anyhow::Result<()> {
    a_transition_a_killed_node_held_is_sent(async |toml| {
        HostProcess::start(host_bin!(), &toml.replace("[broker]\n", "[broker]\nnode_id = \"first\"\n")).await
    })
    .await
}
