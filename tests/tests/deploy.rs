//! The deployment files in `deploy/`, checked mechanically: YAML and JSON parse, the config
//! they all run loads, the Kubernetes probes and drain match the host's, and every metric
//! the Grafana dashboard and the alert rules query is one a running node exports. No
//! container runs here, so the compose topology runs as three processes of the host binary
//! with the image's config and the environment compose gives each node.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use notify_host::Config;
use notify_tests::{Client, DEMO, HostProcess, RedisServer, Req, TempDir, TestHost, eventually, host_bin, hs256_token};
use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

fn text(path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(deploy(path)).with_context(|| format!("reading deploy/{path}"))
}

/// The one document of a YAML file.
fn yaml(path: &str) -> anyhow::Result<Yaml> {
    let mut docs = YamlLoader::load_from_str(&text(path)?).with_context(|| format!("parsing deploy/{path}"))?;
    anyhow::ensure!(docs.len() == 1, "deploy/{path} holds {} documents", docs.len());
    Ok(docs.remove(0))
}

fn str_at<'a>(y: &'a Yaml, what: &str) -> anyhow::Result<&'a str> {
    y.as_str().with_context(|| format!("{what} is not a string"))
}

/// deploy/notify.toml with the admin token every deployment passes from a secret.
fn config() -> anyhow::Result<Config> {
    let secret = [("NOTIFY_SERVER__ADMIN_TOKEN".to_owned(), "a-secret-admin-token".to_owned())];
    Ok(Config::from_toml(&text("notify.toml")?, "deploy/notify.toml", secret)?)
}

#[test]
fn the_config_loads_and_the_configmap_carries_it() -> anyhow::Result<()> {
    let config = config()?;
    assert_eq!(config.server.listen.port(), 8080);
    let map = yaml("kubernetes/configmap.yaml")?;
    assert_eq!(str_at(&map["kind"], "kind")?, "ConfigMap");
    assert_eq!(str_at(&map["data"]["notify.toml"], "data")?, text("notify.toml")?, "the ConfigMap drifted");
    Ok(())
}

#[test]
fn the_deployment_probes_and_drains_as_the_host_does() -> anyhow::Result<()> {
    let config = config()?;
    let d = yaml("kubernetes/deployment.yaml")?;
    assert_eq!(str_at(&d["kind"], "kind")?, "Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["ports"][0]["containerPort"].as_i64(), Some(i64::from(config.server.listen.port())));
    let metrics = config.server.metrics_listen.context("the deployment serves metrics")?;
    assert_eq!(c["ports"][1]["containerPort"].as_i64(), Some(i64::from(metrics.port())));
    let scraped = str_at(&d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"], "scrape port")?;
    assert_eq!(scraped, metrics.port().to_string());
    assert_eq!(str_at(&c["readinessProbe"]["httpGet"]["path"], "readiness")?, "/readyz");
    assert_eq!(str_at(&c["livenessProbe"]["httpGet"]["path"], "liveness")?, "/healthz");
    let pause: u64 = str_at(&c["lifecycle"]["preStop"]["exec"]["command"][1], "preStop")?.parse()?;
    let grace = pod["terminationGracePeriodSeconds"].as_i64().context("grace period")?;
    let needed = Duration::from_secs(pause) + config.server.shutdown_grace;
    assert!(Duration::from_secs(grace as u64) > needed, "{grace}s leaves no margin over {needed:?}");
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    for (file, selector) in [
        ("kubernetes/service.yaml", &["spec", "selector"][..]),
        ("kubernetes/pdb.yaml", &["spec", "selector", "matchLabels"]),
    ] {
        let doc = yaml(file)?;
        let picked = selector.iter().fold(&doc, |y, key| &y[*key]);
        assert_eq!(picked, labels, "{file} selects other pods");
    }
    Ok(())
}

#[test]
fn compose_runs_three_nodes_over_redis() -> anyhow::Result<()> {
    let compose = yaml("compose.yaml")?;
    let services = compose["services"].as_hash().context("services")?;
    let nodes: Vec<_> = services.keys().filter_map(Yaml::as_str).filter(|n| n.starts_with("node")).collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    for node in nodes {
        let s = &compose["services"][node];
        // A key the service does not set comes from its `<<:` merge (the shared node part).
        let field = |key: &str| if s[key].is_badvalue() { &s["<<"][key] } else { &s[key] };
        assert_eq!(str_at(&field("environment")["NOTIFY_BROKER__URL"], "broker url")?, "redis://redis:6379");
        assert!(!field("environment")["NOTIFY_SERVER__ADMIN_TOKEN"].is_badvalue(), "{node} has no admin token");
        assert!(!field("depends_on")["redis"].is_badvalue(), "{node} does not wait for redis");
        assert!(!s["ports"].is_badvalue(), "{node} publishes no port");
    }
    Ok(())
}

#[test]
fn the_systemd_unit_raises_the_file_limit_and_outlasts_the_drain() -> anyhow::Result<()> {
    let unit = text("systemd/notify-host.service")?;
    let value = |key: &str| unit.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='));
    let files: u64 = value("LimitNOFILE").context("LimitNOFILE")?.parse()?;
    assert!(files >= 100_000, "{files}");
    let stop: u64 = value("TimeoutStopSec").context("TimeoutStopSec")?.parse()?;
    assert!(Duration::from_secs(stop) > config()?.server.shutdown_grace);
    assert!(value("ExecStart").context("ExecStart")?.contains("--config /etc/notify/notify.toml"));
    Ok(())
}

#[test]
fn systemd_accepts_the_unit() -> anyhow::Result<()> {
    // `verify` wants the binary the unit starts to exist: point it at this build's.
    let dir = TempDir::new("unit")?;
    let unit = dir.path.join("notify-host.service");
    std::fs::write(&unit, text("systemd/notify-host.service")?.replace("/usr/local/bin/notify-host", host_bin!()))?;
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&unit).output()?;
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && complaints.trim().is_empty(), "{}: {complaints}", out.status);
    Ok(())
}

/// The image cannot be built here (no container daemon); its shape is checked instead.
#[test]
fn the_dockerfile_builds_in_stages_and_runs_unprivileged() -> anyhow::Result<()> {
    let file = text("Dockerfile")?;
    let lines: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2, "not multi-stage");
    assert!(lines.iter().any(|l| l.starts_with("USER ") && !l.contains("root") && !l.starts_with("USER 0")));
    assert!(lines.iter().any(|l| l.starts_with("HEALTHCHECK")) && file.contains("/healthz"));
    assert!(file.contains("COPY deploy/notify.toml /etc/notify/notify.toml"));
    Ok(())
}

/// `notify_...` names in a query.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("notify_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        into.insert(name);
    }
}

fn queried() -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let dashboard: Value = serde_json::from_str(&text("grafana/notify.json")?)?;
    let panels = dashboard["panels"].as_array().context("panels")?;
    assert!(panels.len() >= 10);
    for target in panels.iter().flat_map(|p| p["targets"].as_array().into_iter().flatten()) {
        metric_names(target["expr"].as_str().context("expr")?, &mut names);
    }
    for var in dashboard["templating"]["list"].as_array().context("templating")? {
        metric_names(var["query"].as_str().unwrap_or_default(), &mut names);
    }
    let alerts = yaml("prometheus/alerts.yaml")?;
    for rule in alerts["groups"][0]["rules"].as_vec().context("rules")? {
        metric_names(str_at(&rule["expr"], "expr")?, &mut names);
    }
    Ok(names)
}

#[tokio::test]
async fn dashboards_and_alerts_query_metrics_the_host_exports() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let host = TestHost::start(&format!("{DEMO}\n{}", redis.broker_toml())).await?;
    host.wait_ready(200).await?;
    let (status, body) = Req::get("/metrics").raw(host.metrics).await?;
    assert_eq!(status, 200);
    let mut exported = BTreeSet::new();
    for line in String::from_utf8(body.to_vec())?.lines() {
        let mut words = line.strip_prefix("# TYPE ").map(str::split_whitespace).into_iter().flatten();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
        exported.insert(name.to_owned());
        if kind == "histogram" {
            exported.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        }
    }
    let queried = queried()?;
    assert!(queried.len() >= 15, "{queried:?}");
    let unknown: Vec<_> = queried.difference(&exported).collect();
    assert!(unknown.is_empty(), "queried but not exported: {unknown:?}");
    Ok(())
}

/// The environment compose gives every node, with its Redis (the `redis` service) swapped
/// for `redis_url` and the admin token from the operator's shell set to `admin`.
fn compose_environment(redis_url: &str, admin: &str) -> anyhow::Result<Vec<(String, String)>> {
    let compose = yaml("compose.yaml")?;
    let env = compose["x-node"]["environment"].as_hash().context("x-node environment")?;
    env.iter()
        .map(|(key, value)| {
            let key = str_at(key, "environment key")?.to_owned();
            let value = match key.as_str() {
                "NOTIFY_BROKER__URL" => str_at(value, "broker url")?.replace("redis://redis:6379", redis_url),
                "NOTIFY_SERVER__ADMIN_TOKEN" => admin.to_owned(),
                _ => str_at(value, &key)?.to_owned(),
            };
            Ok((key, value))
        })
        .collect()
}

#[tokio::test]
async fn the_compose_nodes_serve_as_one_cluster() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let admin = "compose-admin-token-0123";
    let env = compose_environment(&redis.url(), admin)?;
    let image_config = text("notify.toml")?;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(HostProcess::start_with(host_bin!(), &image_config, &env).await?);
    }

    // A tenant created on node 1 serves a client on node 3 and publishes through node 2.
    let secret = "compose-jwt-secret-0123456789";
    let spec = json!({ "id": "acme", "auth": { "mode": "jwt", "keys": [{ "kid": "k1", "hs256_secret": secret }] } });
    let (status, created) =
        Req::post("/v1/admin/tenants").key(admin).body(spec.to_string().into()).reply(nodes[0].addr).await?;
    assert_eq!(status, 201, "{created}");
    let key = created["publish_key"].as_str().context("publish key")?.to_owned();
    for node in &nodes[1..] {
        eventually(|| async { Ok(Req::get("/v1/admin/tenants/acme").key(admin).reply(node.addr).await?.0 == 200) })
            .await?;
    }
    let token = hs256_token("ann", 300, None, secret);
    let mut ann = Client::connect(&format!("ws://{}/v1/ws/acme?token={token}", nodes[2].addr), &[]).await?;
    assert_eq!(ann.next_json().await?["type"], "welcome");
    let body = json!({ "users": ["ann"], "event": "http", "data": 1 }).to_string();
    let (status, answer) = Req::post("/v1/publish").key(&key).body(body.into()).reply(nodes[1].addr).await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(ann.next_event().await?["data"], 1);

    // Product teams publish through Redis too, durably and fire-and-forget.
    let mut conn = redis.conn().await?;
    let body = json!({ "users": ["ann"], "event": "stream", "data": 2 }).to_string();
    let _: String =
        redis::cmd("XADD").arg("notify:acme:ingest").arg("*").arg("event").arg(body).query_async(&mut conn).await?;
    assert_eq!(ann.next_event().await?["data"], 2);
    let leading = || nodes.iter().any(|n| n.log.lock().unwrap().contains("holding the pub/sub ingestion lease"));
    eventually(|| async { Ok(leading()) }).await?;
    let body = json!({ "users": ["ann"], "event": "pubsub", "data": 3 }).to_string();
    let _: i64 = redis::cmd("PUBLISH").arg("notify:acme:publish").arg(body).query_async(&mut conn).await?;
    assert_eq!(ann.next_event().await?["data"], 3);

    // Nothing went wrong on the way, not even before the first tenant existed.
    for node in &nodes {
        let log = node.log.lock().unwrap().clone();
        let bad: Vec<_> =
            log.lines().filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#)).collect();
        assert!(bad.is_empty(), "{bad:#?}");
    }

    // `docker compose stop` sends SIGTERM: the node drains its client with 1001 and exits 0.
    nodes[2].signal("TERM")?;
    assert_eq!(ann.close_code().await?, 1001);
    let status = tokio::time::timeout(Duration::from_secs(60), nodes[2].child.wait()).await??;
    assert!(status.success(), "{status}");
    Ok(())
}

/// The Dockerfile's `docker run` line on the image's config: with only the broker's URL the
/// node starts and tells why it is not ready; a tenant created through a node that has the
/// admin token (the same line with `NOTIFY_SERVER__ADMIN_TOKEN`) makes it ready.
#[tokio::test]
async fn the_image_runs_as_the_dockerfile_shows() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let dockerfile = text("Dockerfile")?;
    assert!(dockerfile.contains("-e NOTIFY_BROKER__URL=redis://redis:6379"), "the example changed");
    assert!(dockerfile.contains("-e NOTIFY_SERVER__ADMIN_TOKEN="), "the example changed");
    let image_config = text("notify.toml")?;
    let broker = ("NOTIFY_BROKER__URL".to_owned(), redis.url());
    let plain = HostProcess::start_with(host_bin!(), &image_config, std::slice::from_ref(&broker)).await?;
    let ready = |addr| async move { Req::get("/readyz").reply(addr).await };
    let (status, body) = ready(plain.addr).await?;
    assert_eq!((status, body["status"].as_str()), (503, Some("no_tenants")), "{body}");

    let admin = "dockerfile-admin-token-0123";
    let env = [broker, ("NOTIFY_SERVER__ADMIN_TOKEN".to_owned(), admin.to_owned())];
    let managed = HostProcess::start_with(host_bin!(), &image_config, &env).await?;
    eventually(|| async { Ok(ready(managed.addr).await?.0 == 200) }).await?;
    let spec = json!({ "id": "acme" }).to_string();
    let (status, created) = Req::post("/v1/admin/tenants").key(admin).body(spec.into()).reply(managed.addr).await?;
    assert_eq!(status, 201, "{created}");
    eventually(|| async { Ok(ready(plain.addr).await?.0 == 200) }).await?;
    let key = created["publish_key"].as_str().context("publish key")?;
    let body = json!({ "users": ["ann"], "event": "e", "data": 1 }).to_string();
    assert_eq!(Req::post("/v1/publish").key(key).body(body.into()).reply(plain.addr).await?.0, 202);
    Ok(())
}
