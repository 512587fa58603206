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
fn an_unknown_notify_variable_is_named_in_full() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml");
    let out = host().args(["check-config", config]).env("NOTIFY_REPO", "https://example.com/x.git").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("environment variable NOTIFY_REPO"), "{stderr}");
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
fn notify_config_names_the_file_to_run() {
    let out = host().env("NOTIFY_CONFIG", "/nonexistent/notify.toml").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/notify.toml"));
}
