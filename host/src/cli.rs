//! Command line: `notify-host [--config PATH]` runs the host until SIGINT/SIGTERM;
//! `notify-host check-config PATH` validates a configuration and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};
use crate::server::Server;

const USAGE: &str = "\
notify-host: multi-tenant real-time notification host

USAGE:
    notify-host [--config PATH]        run the host (default PATH: $NOTIFY_CONFIG or config.toml)
    notify-host check-config PATH      validate a configuration file and exit
    notify-host --help | --version

Every config key can be overridden by environment: NOTIFY_SERVER__LISTEN=0.0.0.0:8080,
NOTIFY_TENANTS__DEMO__PUBLISH_KEY=... (sections separated by double underscores).
Log filter: RUST_LOG (default from [log] level).";

enum Command {
    Run(PathBuf),
    Check(PathBuf),
    Help,
    Version,
}

fn parse(args: &[String]) -> Result<Command, String> {
    let default_path = || PathBuf::from(std::env::var("NOTIFY_CONFIG").unwrap_or_else(|_| "config.toml".into()));
    match args {
        [] => Ok(Command::Run(default_path())),
        [flag] if flag == "--help" || flag == "-h" => Ok(Command::Help),
        [flag] if flag == "--version" || flag == "-V" => Ok(Command::Version),
        [flag, path] if flag == "--config" || flag == "-c" => Ok(Command::Run(path.into())),
        [cmd, path] if cmd == "check-config" => Ok(Command::Check(path.into())),
        _ => Err(format!("unrecognised arguments: {}\n\n{USAGE}", args.join(" "))),
    }
}

/// Entry point of the `notify-host` binary.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("notify-host {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Check(path) => load(&path).map(|c| {
            println!("{}: OK ({} tenant(s), listen {})", path.display(), c.tenants.len(), c.server.listen);
        }),
        Command::Run(path) => load(&path).and_then(run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
