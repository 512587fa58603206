//! Command line (clap): `notify-host [--config PATH]` runs the host until SIGINT/SIGTERM;
//! `notify-host check-config PATH` validates a configuration and exits; `publish`, `tenant`,
//! `plugin` and `webhook` work on a running host (`remote`); `push` makes VAPID keys and
//! sends a test Web Push message.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};
use crate::server::Server;

/// Multi-tenant real-time notification host.
#[derive(Debug, Parser)]
#[command(name = "notify-host", version, about, after_help = ENV_HELP)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, env = "NOTIFY_CONFIG", default_value = "config.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file (with the environment's overrides) and exit.
    #[command(
        after_help = "Example:\n  notify-host check-config deploy/notify.toml\n  NOTIFY_SERVER__ADMIN_TOKEN=... notify-host check-config /etc/notify/notify.toml"
    )]
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Publish an event through a running host.
    #[command(
        after_help = "Example (options go after the subcommand):\n  notify-host publish --url http://127.0.0.1:8080 --key demo-key \\\n    --user alice --event order.updated --data '{\"order\":42}'"
    )]
    Publish(crate::remote::Publish),
    /// Manage a running cluster's tenants (admin token).
    #[command(subcommand)]
    Tenant(crate::remote::Tenant),
    /// Manage a tenant's plugins (admin token or the tenant's management key).
    #[command(subcommand)]
    Plugin(crate::remote::Plugin),
    /// Manage a tenant's webhook endpoints (admin token or the tenant's management key).
    #[command(subcommand)]
    Webhook(crate::remote::Webhook),
    /// Web Push tools: VAPID keys, and a test message to one browser subscription.
    #[command(subcommand)]
    Push(Push),
}

#[derive(Debug, Subcommand)]
enum Push {
    /// Make a VAPID key pair (P-256): the private key (base64url PKCS#8; keep it secret)
    /// and the public key browsers subscribe with (base64url, 65 bytes).
    VapidKeys,
    /// Encrypt a message for one browser subscription and send it to its push service;
    /// prints the service's status (201: accepted; 404 or 410: the subscription is gone).
    #[command(
        after_help = "Example:\n  NOTIFY_VAPID_PRIVATE_KEY=... notify-host push send --endpoint https://fcm.googleapis.com/fcm/send/... \\\n    --p256dh BNc... --auth tBH... --contact mailto:ops@example.com --data '{\"title\":\"Hi\"}'"
    )]
    Send {
        /// The subscription's endpoint.
        #[arg(long)]
        endpoint: String,
        /// The subscription's `keys.p256dh` (base64url).
        #[arg(long)]
        p256dh: String,
        /// The subscription's `keys.auth` (base64url).
        #[arg(long)]
        auth: String,
        /// The VAPID private key (`push vapid-keys`).
        #[arg(long, env = "NOTIFY_VAPID_PRIVATE_KEY", hide_env_values = true)]
        vapid_private_key: String,
        /// Who the push service can contact about these messages (`mailto:` or `https:`).
        #[arg(long)]
        contact: String,
        /// The message (the service worker's `event.data`).
        #[arg(long)]
        data: String,
        /// Seconds the push service keeps the message for an offline browser.
        #[arg(long, default_value_t = 60)]
        ttl: u32,
        /// `very-low`, `low`, `normal` or `high`.
        #[arg(long)]
        urgency: Option<String>,
        /// Replaces a message of the same topic still waiting at the push service.
        #[arg(long)]
        topic: Option<String>,
    },
}

impl Push {
    fn run(self) -> anyhow::Result<()> {
        match self {
            Push::VapidKeys => {
                let (private_key, public_key) = crate::push::vapid::generate();
                println!("{}", serde_json::json!({ "private_key": private_key, "public_key": public_key }));
                Ok(())
            }
            Push::Send { endpoint, p256dh, auth, vapid_private_key, contact, data, ttl, urgency, topic } => {
                crate::push::vapid::Vapid::from_private(&vapid_private_key)?;
                let message = crate::push::web::Message {
                    endpoint: &endpoint,
                    p256dh: &p256dh,
                    auth: &auth,
                    payload: data.as_bytes(),
                    ttl,
                    urgency: urgency.as_deref(),
                    topic: topic.as_deref(),
                };
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let sender = crate::push::web::WebPush::new(true, std::time::Duration::from_secs(10));
                let status = runtime.block_on(sender.send(&vapid_private_key, &contact, &message))?;
                println!("{status}");
                anyhow::ensure!((200..300).contains(&status), "the push service answered {status}");
                Ok(())
            }
        }
    }
}

const ENV_HELP: &str = "\
Every config key can be overridden by environment: NOTIFY_SERVER__LISTEN=0.0.0.0:8080,
NOTIFY_TENANTS__DEMO__PUBLISH_KEY=... (sections separated by double underscores).
Log filter: RUST_LOG (default from [log] level).";

/// Entry point of the `notify-host` binary: exit 0 on success, 1 on a failure, 2 on a
/// command-line error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::CheckConfig { path }) => load(&path).map(|c| {
            println!("{}: OK ({} tenant(s), listen {})", path.display(), c.tenants.len(), c.server.listen);
        }),
        Some(Command::Publish(publish)) => publish.run(),
        Some(Command::Tenant(tenant)) => tenant.run(),
        Some(Command::Plugin(plugin)) => plugin.run(),
        Some(Command::Webhook(webhook)) => webhook.run(),
        Some(Command::Push(push)) => push.run(),
        None => load(&cli.config).and_then(run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: a cause that its parent's message already quotes
/// (`thiserror`'s `{source}`) is not repeated.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path, std::env::vars())?)
}

fn run(config: Config) -> anyhow::Result<()> {
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config.clone()).await.with_context(|| format!("binding {}", config.server.listen))?;
        let handle = server.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            handle.shutdown();
        });
        server.run().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
