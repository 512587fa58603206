//! `notify-load`: the project's load generator.
//!
//! `notify-load idle --url ws://127.0.0.1:8080/v1/ws/demo --connections 15000`
//! opens that many WebSocket connections (as users `load-0`, `load-1`, ...), waits for each
//! welcome frame, prints `connected N`, and holds them (answering pings) until `--hold`
//! seconds pass or it is interrupted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

const USAGE: &str =
    "usage: notify-load idle --url WS_URL [--connections N] [--concurrency N] [--hold SECS] [--user-prefix P]";

struct Idle {
    url: String,
    connections: usize,
    concurrency: usize,
    hold: Duration,
    prefix: String,
}

fn parse(args: &[String]) -> anyhow::Result<Idle> {
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("idle") {
        bail!("{USAGE}");
    }
    let mut idle = Idle {
        url: String::new(),
        connections: 1000,
        concurrency: 256,
        hold: Duration::from_secs(3600),
        prefix: "load-".into(),
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--url" => idle.url = value.clone(),
            "--connections" => idle.connections = value.parse()?,
            "--concurrency" => idle.concurrency = value.parse()?,
            "--hold" => idle.hold = Duration::from_secs(value.parse()?),
            "--user-prefix" => idle.prefix = value.clone(),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if idle.url.is_empty() {
        bail!("--url is required\n{USAGE}");
    }
    Ok(idle)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let idle = parse(&args)?;
    let started = Instant::now();
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(idle.concurrency));
    let sep = if idle.url.contains('?') { '&' } else { '?' };
    let mut tasks = Vec::with_capacity(idle.connections);
    for i in 0..idle.connections {
        let url = format!("{}{sep}user={}{i}", idle.url, idle.prefix);
        let (gate, connected, failed) = (gate.clone(), connected.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("semaphore open");
            let ws = match tokio_tungstenite::connect_async(&url).await {
                Ok((mut ws, _)) => match ws.next().await {
                    Some(Ok(_welcome)) => ws,
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("connect failed: {e}");
                    }
                    return;
                }
            };
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            // Reading answers the host's pings; the connection otherwise stays idle.
            let mut ws = ws;
            while let Some(Ok(_)) = ws.next().await {}
        }));
    }
    // Wait until every attempt has finished connecting or failing.
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < idle.connections {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok = connected.load(Ordering::Relaxed);
    println!(
        "connected {ok} failed {} in {:.2}s ({:.0} handshakes/s)",
        failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        ok as f64 / started.elapsed().as_secs_f64()
    );
    tokio::select! {
        () = tokio::time::sleep(idle.hold) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
