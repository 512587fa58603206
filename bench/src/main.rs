//! `notify-load`: the project's load generator.
//!
//! ```text
//! notify-load subscribe --url WS_URL[,WS_URL...] [--connections N] [--first I] [--source IP]
//!                       [--concurrency N] [--events N] [--hold SECS] [--latencies FILE]
//!                       [--user-prefix P] [--token-secret S] [--claim k=v]... [--resume true]
//!                       [--token-key PEM --token-alg RS256 --token-kid KID]
//!                       [--fallback WS_URL[,WS_URL...]]
//! notify-load idle      (subscribe with --events 0)
//! notify-load broadcast --publish HTTP_URL --key KEY [--events N] [--rate EVENTS_PER_SEC]
//!                       [--payload BYTES] [--attribute k=v]... [--publishers N]
//! notify-load fanout    --url WS_URL[,WS_URL...] --publish HTTP_URL --key KEY [--connections N]
//!                       [--events N] [--rate EVENTS_PER_SEC] [--payload BYTES] [--attribute k=v]...
//!                       [--token-secret S] [--claim k=v]... [--publishers N]
//!                       [--channel NAME [--delta true]] [--transport sse]
//! notify-load targeted  --url WS_URL --publish BATCH_URL --key KEY [--connections N] [--events N]
//!                       [--batch N] [--rate EVENTS_PER_SEC] [--payload BYTES]
//! notify-load publish   --publish HTTP_URL --key KEY [--events N] [--payload BYTES] [--publishers N]
//! notify-load sse-idle  --url HTTP_URL [--connections N] [--concurrency N] [--hold SECS] [--user-prefix P]
//! notify-load stalled   --url WS_URL [--connections N] [--hold SECS] [--user-prefix P]
//! notify-load soak      --url WS_URL --publish HTTP_URL --key KEY [--connections N] [--churn PER_SEC]
//!                       [--rate EVENTS_PER_SEC] [--hold SECS] [--user-prefix P]
//! ```
//!
//! `subscribe` opens connections as users `P{I}`, `P{I+1}`, ... (`load-0`, ... by default),
//! waits for each welcome and prints the handshake rate (`connected N failed M in T s`). It
//! then reads until every connection has received broadcast events `0..--events`, or `--hold`
//! seconds pass, or Ctrl-C, and prints what arrived: deliveries, missing, duplicates, the
//! publish-to-receive latency percentiles (from the send time in each payload) and the time
//! of the last receipt. `--latencies` also writes every latency (µs, one per line), so that
//! several generator processes can be summed up together. With `--source` the connections
//! leave from that local address (`127.0.0.2`, ...), each address having its own ephemeral
//! ports. With `--token-secret` each user authenticates with an HS256 token (`sub`, `exp`,
//! plus every `--claim`); with `--token-key` a token signed with that private key
//! (`--token-alg`, RS256 by default, and `--token-kid`), all signed before the clock starts. Several comma-separated `--url`s (nodes of a cluster) are used
//! round-robin. `idle` is `subscribe` that waits for no event. With `--resume true` a
//! connection the server closes reconnects after the delay the server asked for, resuming
//! the broadcast after the last event it received, and the report adds reconnects, welcomes
//! that said the broadcast was not recovered, and when the last welcome arrived. A resuming
//! connection whose node cannot be reached moves on to the `--fallback` nodes in turn (the
//! same path and query on another host), as a client behind a list of nodes would.
//!
//! `broadcast` publishes `--events` broadcast events numbered from 0, each carrying its send
//! time, back to back or paced at `--rate` per second, for `subscribe` processes to receive.
//! With `--publishers N`, N connections publish at once (each event still once), so the
//! throughput is not bounded by one request's round trip. `--publish` may list several
//! URLs, comma-separated: publisher `k` uses the `k`-th (in turn), as behind a load balancer.
//!
//! `fanout` is both in one process: it connects subscribers, publishes, and reports
//! deliveries per second and the latency percentiles over every delivery. `--welcome false`
//! (any mode) is for servers that send no first frame of their own, such as Nchan: a
//! connection counts as open once the upgrade is done. `--deflate true` (any WebSocket mode)
//! offers permessage-deflate and inflates what arrives compressed. `fanout --channel NAME`
//! publishes versions of a `--payload`-byte document to that channel instead (subscribers
//! join it through their URL: `?channels=NAME`, with `&delta=fossil` for delta updates), each
//! stamped in its event name; `--delta true` publishes them with `delta`. Every report gives
//! the bytes per delivery the subscribers received. `--pusher-subscribe NAME` (any WebSocket
//! mode) subscribes each connection to NAME with a `pusher:subscribe` frame after its first
//! frame (Pusher connections at `/app/{key}?protocol=7`).
//!
//! `targeted` connects users like `fanout`, then sends `--events` rounds of one event to each
//! user, `--batch` user-addressed events per `POST /v1/publish/batch` request, back to back
//! or paced at `--rate` events per second, and reports events per second and the latency
//! percentiles of every delivery.
//!
//! `--transport sse` (`subscribe`, `fanout`) reads Server-Sent Events streams instead
//! (`--url http://HOST:PORT/v1/sse/TENANT`), each event from its message's `data`.
//!
//! `sse-idle` is `idle` over Server-Sent Events (`--url http://HOST:PORT/v1/sse/TENANT`): each
//! stream is open once its first chunk (the welcome) arrived.
//!
//! `stalled` opens WebSocket connections that read their welcome and then nothing (nor
//! answer pings) until `--hold` seconds pass: clients that stopped reading.
//!
//! `soak` keeps `--connections` users connected on average for `--hold` seconds, replacing
//! `--churn` of them per second (each lives a random time), each subscribed to a channel and
//! acking its own events, while `--rate` events per second go to random users and channels.
//!
//! `publish` sends events to a user nobody is connected as, one request at a time (or one
//! per connection of `--publishers`), and reports publishes per second (the cost of ingest
//! and plugins without fan-out).

mod connect;
mod events;
mod inflate;
mod receive;
mod soak;

use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use connect::{open_all, open_sse, open_ws, report_connected};
use events::{Publisher, now_us, summary};
use receive::{Resume, Shared, lock, spawn_reader, spawn_sse_reader};

#[derive(Default)]
struct Args {
    url: String,
    publish: String,
    key: String,
    connections: usize,
    /// The number of the first user (`--user-prefix` + number).
    first: usize,
    /// Local address connections leave from.
    source: Option<IpAddr>,
    concurrency: usize,
    hold: u64,
    prefix: String,
    events: usize,
    payload: usize,
    secret: Option<String>,
    /// `--token-key` (a PEM private key) with `--token-alg` and `--token-kid`.
    signing: Option<(jsonwebtoken::EncodingKey, jsonwebtoken::Header)>,
    claims: Vec<(String, String)>,
    attributes: Vec<(String, String)>,
    /// Events per second when publishing; 0 publishes back to back.
    rate: f64,
    latencies: Option<String>,
    /// Events per `/v1/publish/batch` request in `targeted`.
    batch: usize,
    /// Concurrent publishing connections for broadcasts.
    publishers: usize,
    /// Readers reconnect and resume when the server closes them.
    resume: bool,
    /// Where resuming readers go when their node cannot be reached, in turn.
    fallback: Vec<String>,
    /// `soak`: connections replaced per second.
    churn: f64,
    /// `fanout`: publish versions of a document to this channel instead of broadcasts.
    channel: Option<String>,
    /// With `channel`: publish them with `delta`.
    delta: bool,
    /// `subscribe` and `fanout` read Server-Sent Events streams (`--url http://...`).
    sse: bool,
}

fn pair(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s.split_once('=').context("expected key=value")?;
    Ok((k.to_owned(), v.to_owned()))
}

fn parse(args: &[String]) -> anyhow::Result<(String, Args)> {
    let mut it = args.iter();
    let mode = it.next().context("usage: notify-load MODE ... (see the source header)")?.clone();
    let mut a = Args {
        connections: 1000,
        concurrency: 256,
        hold: 3600,
        prefix: "load-".into(),
        events: if mode == "idle" { 0 } else { 100 },
        payload: 64,
        batch: 100,
        publishers: 1,
        ..Args::default()
    };
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = v.clone(),
            "--fallback" => a.fallback = v.split(',').map(str::to_owned).collect(),
            "--publish" => a.publish = v.clone(),
            "--key" => a.key = v.clone(),
            "--connections" => a.connections = v.parse()?,
            "--first" => a.first = v.parse()?,
            "--source" => a.source = Some(v.parse().context("--source is an IP address")?),
            "--concurrency" => a.concurrency = v.parse()?,
            "--hold" => a.hold = v.parse()?,
            "--user-prefix" => a.prefix = v.clone(),
            "--events" => a.events = v.parse()?,
            "--rate" => a.rate = v.parse()?,
            "--payload" => a.payload = v.parse()?,
            "--token-secret" => a.secret = Some(v.clone()),
            "--token-key" => {
                let pem = std::fs::read(v).with_context(|| format!("reading {v}"))?;
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
                    .or_else(|_| jsonwebtoken::EncodingKey::from_ec_pem(&pem))
                    .or_else(|_| jsonwebtoken::EncodingKey::from_ed_pem(&pem))
                    .context("--token-key: an RSA, EC or Ed25519 private key in PEM")?;
                a.signing = Some((key, jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256)));
            }
            "--token-alg" => {
                let (_, header) = a.signing.as_mut().context("--token-alg after --token-key")?;
                header.alg = v.parse().context("--token-alg: RS256, PS256, ES256, EdDSA, ...")?;
            }
            "--token-kid" => {
                let (_, header) = a.signing.as_mut().context("--token-kid after --token-key")?;
                header.kid = Some(v.clone());
            }
            "--claim" => a.claims.push(pair(v)?),
            "--attribute" => a.attributes.push(pair(v)?),
            "--latencies" => a.latencies = Some(v.clone()),
            "--batch" => a.batch = v.parse()?,
            "--publishers" => a.publishers = v.parse::<usize>()?.max(1),
            "--resume" => a.resume = v.parse().context("--resume is true or false")?,
            "--churn" => a.churn = v.parse()?,
            "--channel" => a.channel = Some(v.clone()),
            "--delta" => a.delta = v.parse().context("--delta is true or false")?,
            "--transport" => {
                a.sse = match v.as_str() {
                    "ws" => false,
                    "sse" => true,
                    _ => bail!("--transport is ws or sse"),
                }
            }
            "--deflate" => {
                let offer = v.parse().context("--deflate is true or false")?;
                connect::OFFER_DEFLATE.store(offer, std::sync::atomic::Ordering::Relaxed);
            }
            "--pusher-subscribe" => {
                connect::PUSHER_SUBSCRIBE
                    .set(v.clone())
                    .map_err(|_| anyhow::anyhow!("--pusher-subscribe given twice"))?;
            }
            "--welcome" => {
                let expect = v.parse().context("--welcome is true or false")?;
                connect::EXPECT_WELCOME.store(expect, std::sync::atomic::Ordering::Relaxed);
            }
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok((mode, a))
}

/// Waits until `done` holds (checked every 50 ms), `deadline` passes or Ctrl-C.
async fn wait_until(deadline: Instant, done: impl Fn() -> bool) {
    let check = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = check => {}
        () = tokio::time::sleep_until(deadline.into()) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Every connection has all its events or has closed.
fn settled(tally: &Shared, opened: usize) -> bool {
    let t = lock(tally);
    t.complete + t.ended >= opened
}

/// `received D of E events (missing M, duplicates U, closed early C, close codes [CODExN]);
/// latency ...; last receipt at T us`, and every latency into `--latencies`.
fn report_received(a: &Args, tally: &Shared, opened: usize) -> anyhow::Result<String> {
    let mut t = lock(tally);
    let expected = opened * a.events;
    let received = t.latencies.len();
    let latency = summary(&mut t.latencies);
    let codes: Vec<String> = t.closes.iter().map(|(code, n)| format!("{code}x{n}")).collect();
    let line = format!(
        "received {received} of {expected} events (missing {}, duplicates {}, closed early {}, close codes [{}]); {}; {} bytes per delivery; last receipt at {} us",
        expected - received,
        t.duplicates,
        t.ended,
        codes.join(" "),
        latency,
        t.bytes.checked_div(received as u64).unwrap_or(0),
        t.last_us
    );
    let line = if a.resume {
        format!(
            "{line}\nresumed: reconnects {} (not recovered {}, sent back to retry later {}, gave up {}), last welcome at {} us",
            t.reconnects, t.unrecovered, t.deferred, t.gave_up, t.last_welcome_us
        )
    } else {
        line
    };
    if let Some(path) = &a.latencies {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {path}"))?);
        for l in &t.latencies {
            writeln!(out, "{l}")?;
        }
        out.flush()?;
    }
    Ok(line)
}

/// Opens the connections, each read from the moment its welcome arrived (an unread one
/// would not answer pings, and its server would close it).
async fn open_readers(a: &Args, tally: &Shared) -> anyhow::Result<(Vec<JoinHandle<()>>, Duration)> {
    let (events, resume) = (a.events, a.resume);
    if a.sse {
        anyhow::ensure!(!resume, "--resume is for WebSocket readers");
        return open_all(a, |url, source| {
            let tally = tally.clone();
            async move { Ok(spawn_sse_reader(open_sse(url, source).await?, events, tally)) }
        })
        .await;
    }
    let fallback: std::sync::Arc<[String]> = a.fallback.clone().into();
    open_all(a, |url, source| {
        let tally = tally.clone();
        let resume = resume.then(|| Resume { url: url.clone(), source, fallback: fallback.clone() });
        async move { Ok(spawn_reader(open_ws(url, source).await?, events, tally, resume)) }
    })
    .await
}

async fn subscribe(a: Args) -> anyhow::Result<()> {
    let tally = Shared::default();
    let (readers, took) = open_readers(&a, &tally).await?;
    let opened = readers.len();
    report_connected(opened, a.connections, took);
    wait_until(Instant::now() + Duration::from_secs(a.hold), || settled(&tally, opened)).await;
    if a.events > 0 {
        println!("{}", report_received(&a, &tally, opened)?);
    }
    for r in readers {
        r.abort();
    }
    Ok(())
}

async fn stalled(a: Args) -> anyhow::Result<()> {
    let (conns, took) = open_all(&a, open_ws).await?;
    report_connected(conns.len(), a.connections, took);
    wait_until(Instant::now() + Duration::from_secs(a.hold), || false).await;
    drop(conns);
    Ok(())
}

async fn sse_idle(a: Args) -> anyhow::Result<()> {
    let (streams, took) = open_all(&a, open_sse).await?;
    report_connected(streams.len(), a.connections, took);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut body| {
            tokio::spawn(async move {
                use http_body_util::BodyExt as _;
                while let Some(Ok(_)) = body.frame().await {}
            })
        })
        .collect();
    wait_until(Instant::now() + Duration::from_secs(a.hold), || false).await;
    for r in readers {
        r.abort();
    }
    Ok(())
}

/// The publish URL of publisher `k`: with several comma-separated `--publish` URLs, publishers
/// take them in turn, as a load balancer in front of several nodes would spread them.
fn publish_url(a: &Args, k: usize) -> &str {
    let urls: Vec<&str> = a.publish.split(',').collect();
    urls[k % urls.len()]
}

/// Publishes `--events` broadcasts numbered from 0 (paced at `--rate`); returns the time the
/// first was sent (Unix µs) and how long publishing took.
async fn publish_broadcasts(a: &Args) -> anyhow::Result<(u64, Duration)> {
    let attributes: Map<String, Value> = a.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let pad = "x".repeat(a.payload);
    let (started, first_us) = (Instant::now(), now_us());
    // Publisher `k` of `--publishers` sends events k, k + P, k + 2P, ...
    let publishers = (0..a.publishers).map(|k| {
        let (attributes, pad) = (&attributes, &pad);
        async move {
            let mut publisher = Publisher::connect(publish_url(a, k), &a.key).await?;
            for i in (k..a.events).step_by(a.publishers) {
                if a.rate > 0.0 {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / a.rate)).into()).await;
                }
                let event = match &a.channel {
                    Some(channel) => events::version(channel, i, a.payload, a.delta),
                    None => events::broadcast(i, attributes, pad),
                };
                publisher.send(&event).await?;
            }
            anyhow::Ok(())
        }
    });
    futures_util::future::try_join_all(publishers).await?;
    Ok((first_us, started.elapsed()))
}

async fn broadcast(a: Args) -> anyhow::Result<()> {
    let (first_us, took) = publish_broadcasts(&a).await?;
    println!("published {} events in {:.3}s, the first at {first_us} us", a.events, took.as_secs_f64());
    Ok(())
}

async fn fanout(a: Args) -> anyhow::Result<()> {
    measure_deliveries(a, Addressing::Broadcast).await
}

async fn targeted(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    measure_deliveries(a, Addressing::Users).await
}

/// Whom `measure_deliveries` publishes to.
#[derive(PartialEq)]
enum Addressing {
    /// One broadcast per round.
    Broadcast,
    /// One event per user per round, in batches.
    Users,
}

impl Addressing {
    fn name(&self) -> &'static str {
        if *self == Self::Broadcast { "broadcast" } else { "user-addressed" }
    }

    /// Events published for `rounds` rounds to `users` users.
    fn events(&self, rounds: usize, users: usize) -> usize {
        if *self == Self::Broadcast { rounds } else { rounds * users }
    }

    async fn publish(&self, a: &Args) -> anyhow::Result<(u64, Duration)> {
        if *self == Self::Broadcast { publish_broadcasts(a).await } else { publish_targeted(a).await }
    }
}

/// Connects subscribers, publishes, waits (at most 60 s) for every delivery and reports
/// deliveries per second and latency.
async fn measure_deliveries(a: Args, to: Addressing) -> anyhow::Result<()> {
    let tally = Shared::default();
    let (readers, took) = open_readers(&a, &tally).await?;
    let n = readers.len();
    println!("subscribers {n} connected in {:.2}s", took.as_secs_f64());
    let (first_us, published) = to.publish(&a).await?;
    wait_until(Instant::now() + Duration::from_secs(60), || settled(&tally, n)).await;
    let (received, last_us) = {
        let t = lock(&tally);
        (t.latencies.len(), t.last_us)
    };
    let elapsed = Duration::from_micros(last_us.saturating_sub(first_us));
    println!(
        "{} events {} published in {:.2}s; deliveries {received}/{} in {:.2}s = {:.0} deliveries/s; {}",
        to.name(),
        to.events(a.events, n),
        published.as_secs_f64(),
        n * a.events,
        elapsed.as_secs_f64(),
        received as f64 / elapsed.as_secs_f64(),
        report_received(&a, &tally, n)?
    );
    for r in readers {
        r.abort();
    }
    Ok(())
}

/// Sends `--events` rounds of one event to each user, `--batch` events per request (paced at
/// `--rate` events per second); returns the first send time (Unix µs) and how long it took.
async fn publish_targeted(a: &Args) -> anyhow::Result<(u64, Duration)> {
    let mut publisher = Publisher::connect(&a.publish, &a.key).await?;
    let users: Vec<String> = (a.first..a.first + a.connections).map(|i| format!("{}{i}", a.prefix)).collect();
    let pad = "x".repeat(a.payload);
    let (started, first_us) = (Instant::now(), now_us());
    let mut sent = 0usize;
    for round in 0..a.events {
        for chunk in users.chunks(a.batch) {
            if a.rate > 0.0 {
                tokio::time::sleep_until((started + Duration::from_secs_f64(sent as f64 / a.rate)).into()).await;
            }
            let body = Value::Array(chunk.iter().map(|u| events::targeted(u, round, &pad)).collect());
            publisher.send(&body).await?;
            sent += chunk.len();
        }
    }
    Ok((first_us, started.elapsed()))
}

async fn publish(a: Args) -> anyhow::Result<()> {
    let pad = "x".repeat(a.payload);
    let started = Instant::now();
    let publishers = (0..a.publishers).map(|k| {
        let pad = &pad;
        let a = &a;
        async move {
            let mut publisher = Publisher::connect(&a.publish, &a.key).await?;
            for i in (k..a.events).step_by(a.publishers) {
                let event = json!({"users": ["nobody"], "event": "bench", "data": {"n": i, "pad": pad, "ssn": "000"}});
                publisher.send(&event).await?;
            }
            anyhow::Ok(())
        }
    });
    futures_util::future::try_join_all(publishers).await?;
    let took = started.elapsed();
    println!(
        "published {} events in {:.2}s = {:.0} publishes/s ({:.1} us each)",
        a.events,
        took.as_secs_f64(),
        a.events as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / a.events as f64
    );
    Ok(())
}

async fn run(mode: String, a: Args) -> anyhow::Result<()> {
    match mode.as_str() {
        "subscribe" | "idle" => subscribe(a).await,
        "broadcast" => broadcast(a).await,
        "fanout" => fanout(a).await,
        "targeted" => targeted(a).await,
        "publish" => publish(a).await,
        "sse-idle" => sse_idle(a).await,
        "stalled" => stalled(a).await,
        "soak" => soak::soak(a).await,
        other => {
            bail!(
                "unknown mode {other}: subscribe, idle, broadcast, fanout, targeted, publish, sse-idle, stalled or soak"
            )
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, a) = parse(&args)?;
    // On a worker thread: the main thread would need waking for every connection it opens.
    tokio::spawn(run(mode, a)).await?
}
