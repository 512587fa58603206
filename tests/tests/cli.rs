//! The binary's command line and the repository's own config.toml.

use std::process::Command;

fn host() -> Command {
    Command::new(notify_tests::host_bin!())
}

#[test]
fn repository_config_is_valid() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml");
    let out = host().args(["check-config", config]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 tenant(s), listen 127.0.0.1:8080)"));
}

#[test]
fn bad_config_names_the_key_and_fails() {
    let dir = notify_tests::TempDir::new("cli").unwrap();
    let path = dir.path.join("bad.toml");
    std::fs::write(&path, "[tenants.demo]\npublish_key = \"demo-key\"\n[connections]\nidle_timout = \"5s\"\n").unwrap();
    let out = host().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("idle_timout"));

    let out = host().arg("check-config").arg(&path).env("NOTIFY_CONNECTIONS__IDLE_TIMEOUT", "5s").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the unknown key still fails with an override present");

    std::fs::write(&path, "[tenants.demo]\npublish_key = \"demo-key\"\n").unwrap();
    let out = host().arg("check-config").arg(&path).env("NOTIFY_CONNECTIONS__IDLE_TIMEOUT", "1s").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connections.idle_timeout"));
}

#[test]
fn unknown_arguments_exit_2_with_usage() {
    let out = host().arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage:"));
}

#[test]
fn a_mistyped_override_is_named_in_full_once() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml");
    let out = host().args(["check-config", config]).env("NOTIFY_SERVR__LISTEN", "0.0.0.0:1").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("environment variable NOTIFY_SERVR__LISTEN"), "{stderr}");
    assert_eq!(stderr.matches("unknown field").count(), 1, "the cause is printed once: {stderr}");
}

/// The docs have operators export the command line's variables in the shell that runs the
/// host; they are not configuration keys.
#[test]
fn the_command_lines_variables_do_not_stop_the_host() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml");
    let out = host()
        .args(["check-config", config])
        .env("NOTIFY_URL", "http://127.0.0.1:8080")
        .env("NOTIFY_PUBLISH_KEY", "demo-key")
        .env("NOTIFY_ADMIN_TOKEN", "dev-admin-token")
        .env("NOTIFY_CA_CERT", "/etc/ssl/certs/ca.pem")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn help_and_version() {
    let out = host().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("check-config") && help.contains("--config") && help.contains("NOTIFY_CONFIG"), "{help}");
    let out = host().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("notify-host {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn every_subcommand_shows_an_example() {
    let commands: [&[&str]; 11] = [
        &["check-config"],
        &["publish"],
        &["tenant", "create"],
        &["tenant", "list"],
        &["tenant", "rotate-key"],
        &["tenant", "pusher"],
        &["tenant", "delete"],
        &["plugin", "upload"],
        &["plugin", "list"],
        &["plugin", "rollback"],
        &["plugin", "delete"],
    ];
    for command in commands {
        let out = host().args(command).arg("--help").output().unwrap();
        assert!(out.status.success(), "{command:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        let example = help.split("Example").nth(1).unwrap_or_else(|| panic!("{command:?} shows no example:\n{help}"));
        assert!(example.contains(&format!("notify-host {}", command.join(" "))), "{command:?}: {example}");
    }
}

#[test]
fn notify_config_names_the_file_to_run() {
    let out = host().env("NOTIFY_CONFIG", "/nonexistent/notify.toml").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/notify.toml"));
}

/// Runs `notify-host ARGS` against the host at `addr`; its exit code, stdout and stderr.
async fn remote(addr: std::net::SocketAddr, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = tokio::process::Command::new(notify_tests::host_bin!())
        .args(args)
        .env("NOTIFY_URL", format!("http://{addr}"))
        .env("NOTIFY_ADMIN_TOKEN", "cli-admin-token-0123")
        .output()
        .await?;
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    Ok((out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr)))
}

#[tokio::test]
async fn the_cli_manages_tenants_plugins_and_webhooks_and_publishes() -> anyhow::Result<()> {
    let host = notify_tests::TestHost::start("[server]\nadmin_token = \"cli-admin-token-0123\"\n").await?;
    let addr = host.addr;
    let settings = r#"{"auth": {"mode": "insecure"}}"#;
    let (code, out, err) = remote(addr, &["tenant", "create", "acme", "--settings", settings]).await?;
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out)?;
    let key = created["publish_key"].as_str().expect("publish key").to_owned();
    let (code, out, _) = remote(addr, &["tenant", "list"]).await?;
    assert!(code == 0 && out.contains("\"acme\""), "{out}");

    let (mut bob, _) = host.join("acme", "user=bob").await?;
    let args = ["publish", "--key", &key, "--user", "bob", "--event", "hello", "--data", r#"{"n":1}"#];
    let (code, out, err) = remote(addr, &args).await?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"id\""), "{out}");
    let ev = bob.next_event().await?;
    assert_eq!((ev["event"].as_str(), ev["data"]["n"].as_u64()), (Some("hello"), Some(1)));

    // An API error is its code and message, with status 1.
    let (code, _, err) = remote(addr, &["publish", "--key", "wrong", "--broadcast", "--event", "x"]).await?;
    assert_eq!(code, 1);
    assert!(err.starts_with("error: unauthorized: "), "{err}");

    let redact = notify_tests::plugin_path("redact");
    let config = r#"{"fields": "ssn"}"#;
    let (code, _, err) =
        remote(addr, &["plugin", "upload", "acme", "transform", &redact, "--plugin-config", config]).await?;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the host compiles it before it answers"), "the wait is explained: {err}");
    let (code, out, _) = remote(addr, &["plugin", "list", "acme"]).await?;
    assert!(code == 0 && out.contains("transform"), "{out}");
    let args = ["publish", "--key", &key, "--user", "bob", "--event", "card", "--data", r#"{"ssn":"123"}"#];
    assert_eq!(remote(addr, &args).await?.0, 0);
    assert_ne!(bob.next_event().await?["data"]["ssn"], "123", "the uploaded transform redacts");
    let (code, _, err) = remote(addr, &["plugin", "delete", "acme", "transform"]).await?;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = remote(addr, &["plugin", "rollback", "acme", "transform"]).await?;
    assert_eq!(code, 0, "a removed plugin comes back: {err}");
    let (code, out, _) = remote(addr, &["plugin", "list", "acme"]).await?;
    assert!(code == 0 && out.contains("transform"), "{out}");
    let (code, _, err) = remote(addr, &["plugin", "rollback", "acme", "route"]).await?;
    assert_eq!(code, 1, "nothing to roll back to: {err}");
    assert!(err.starts_with("error: "), "{err}");

    let args = ["webhook", "add", "acme", "https://hooks.example.com/notify", "--events", "user.online,user.offline"];
    let (code, out, err) = remote(addr, &args).await?;
    assert_eq!(code, 0, "{err}");
    let made: serde_json::Value = serde_json::from_str(&out)?;
    let id = made["id"].as_str().expect("id").to_owned();
    assert!(made["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "the secret, once: {out}");
    assert_eq!(made["events"], serde_json::json!(["user.online", "user.offline"]));
    let (code, out, err) = remote(addr, &["webhook", "rotate-secret", "acme", &id, "--overlap", "1h"]).await?;
    assert!(code == 0 && out.contains("whsec_"), "{out}{err}");
    let (code, out, _) = remote(addr, &["webhook", "list", "acme"]).await?;
    assert!(code == 0 && out.contains(&id) && !out.contains("whsec_"), "{out}");
    let (code, _, err) = remote(addr, &["webhook", "remove", "acme", &id]).await?;
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = remote(addr, &["tenant", "pusher", "acme", "--client-events", "true"]).await?;
    assert_eq!(code, 0, "{err}");
    let made: serde_json::Value = serde_json::from_str(&out)?;
    let (pusher_key, secret) = (made["key"].as_str().expect("key"), made["secret"].as_str().expect("secret"));
    assert!(made["app_id"].as_str().is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit())), "{out}");
    assert!(secret.len() >= 16 && made["client_events"] == true, "{out}");
    // A Pusher client of the new key is served.
    let url = format!("ws://{addr}/app/{pusher_key}?protocol=7");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let first = futures_util::StreamExt::next(&mut ws).await.expect("a first frame")?;
    assert!(first.to_text()?.contains("pusher:connection_established"), "{first}");
    let (code, out, err) = remote(addr, &["tenant", "pusher", "acme"]).await?;
    assert_eq!(code, 0, "{err}");
    let rotated: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        (&rotated["app_id"], &rotated["key"], &rotated["client_events"]),
        (&made["app_id"], &made["key"], &made["client_events"])
    );
    assert_ne!(rotated["secret"], made["secret"], "a new secret");
    let (code, out, _) = remote(addr, &["tenant", "list"]).await?;
    assert!(code == 0 && out.contains(pusher_key), "{out}");
    assert!(
        !out.contains(secret) && !out.contains(rotated["secret"].as_str().unwrap_or("-")),
        "never the secret: {out}"
    );

    let (code, out, err) = remote(addr, &["tenant", "rotate-key", "acme", "--overlap", "1m"]).await?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"key\": \"pk_"), "a new publish key: {out}");
    let (code, _, err) = remote(addr, &["tenant", "delete", "acme"]).await?;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = remote(addr, &["tenant", "delete", "acme"]).await?;
    assert_eq!(code, 1);
    assert!(err.contains("unknown_tenant") || err.contains("not_found"), "{err}");
    Ok(())
}
