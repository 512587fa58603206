//! Listener, routes and shutdown orchestration.
//!
//! Shutdown follows tokio's mini-redis: a signal (the lifecycle's `drain`, a `Drain`
//! handle) plus completion tracking (its `connections` and `workers`, task trackers). Draining refuses new
//! WebSocket upgrades and publishes, turns `/readyz` to 503, and has every connection flush
//! its queue and close with 1001; the host then waits for the connection tasks for at most
//! `server.shutdown_grace`, stops the listener and returns.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::addresses::{AcceptRefused, Accepted, Socket};
use crate::api::Refusal;
pub use crate::app::StartError;
use crate::app::{App, BackendStart};
use crate::backend::ingest::Ingestion;
use crate::config::Config;
use crate::drain::Drain;
use crate::handoff::{self, Predecessor};
use crate::metrics::HandshakeFailure;
use crate::plugin::Hook;
use crate::takeover::{Io, Served};
use crate::tls::{Secured, Tls};

/// How long plain HTTP connections get to finish once the host stops.
const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long a socket refused at accept gets to send its request and read the refusal.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Refused sockets answered at once; beyond this, a refused socket is closed unanswered,
/// so that a flood of refusals costs no more than this many tasks.
const MAX_REFUSING: usize = 256;

/// A bound host, ready to run.
pub struct Server {
    app: App,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The node this one took the listener over from (`server.handoff_socket`), told to
    /// drain once this one accepts.
    predecessor: Option<Predecessor>,
    /// `server.metrics_listen`: `/metrics` for Prometheus, apart from the client port.
    metrics: Option<TcpListener>,
    /// The backend's ingestion, started once the node listens.
    ingestion: Option<Ingestion>,
}

/// Starts draining the host it came from.
#[derive(Clone)]
pub struct ShutdownHandle(Drain);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.start();
    }
}

impl Server {
    /// Loads plugins and binds `config.server.listen` (port 0 picks a free port), or takes
    /// over the listener of the node serving `server.handoff_socket`.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let (app, BackendStart { tasks, ingestion }) = App::new(config).await?;
        for (name, task) in tasks {
            app.lifecycle().spawn(name, task);
        }
        crate::control::load(&app).await.map_err(|e| StartError::Control(e.into()))?;
        let taken = match handoff_path(&app) {
            Some(path) => handoff::take_over(&path).await?,
            None => None,
        };
        let (listener, predecessor) = match taken {
            Some((listener, predecessor)) => {
                listener.set_nonblocking(true)?;
                tracing::info!(addr = %listener.local_addr()?, "took over the listener of the previous node");
                (TcpListener::from_std(listener)?, Some(predecessor))
            }
            None => (listen(app.config().server.listen, app.config().server.accept_backlog)?, None),
        };
        let local_addr = listener.local_addr()?;
        let metrics = app.config().server.metrics_listen.map(metrics_listener).transpose()?;
        Ok(Self { app, listener, local_addr, predecessor, metrics, ingestion })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served without credentials, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.app.lifecycle().drain.clone())
    }

    /// Serves until shutdown is requested and the drain is over.
    pub async fn run(self) {
        let Self { app, listener, local_addr, predecessor, metrics, ingestion } = self;
        let insecure = app
            .tenants()
            .all()
            .into_iter()
            .filter(|t| t.auth.is_insecure() && app.pipeline().plugins.get(&t.id, Hook::Auth).is_none());
        for t in insecure {
            tracing::warn!(
                tenant = &*t.id,
                "tenant uses INSECURE auth: any client can claim any user with ?user=. Development only; set auth.mode = \"jwt\" in production"
            );
        }
        tracing::info!(addr = %local_addr, "notify-host listening on {local_addr}");
        start_node_tasks(&app);
        let stop = CancellationToken::new();
        if let Some(metrics) = metrics {
            tokio::spawn(serve_metrics(app.clone(), metrics, stop.clone()));
        }
        // Stops the accept loop alone: at the end, or once a successor took the listener over.
        let release = stop.child_token();
        let http_conns = TaskTracker::new();
        let router = crate::api::router(app.clone());
        let offered = handoff_path(&app).map(|path| (path, listener.as_fd().try_clone_to_owned()));
        let acceptor =
            tokio::spawn(accept_loop(app.clone(), router, listener, release.clone(), stop.clone(), http_conns.clone()));
        if let Some(predecessor) = predecessor {
            predecessor.accepting().await;
        }
        match offered {
            Some((path, Ok(fd))) => {
                drop(tokio::spawn(handoff::offer(app.lifecycle().drain.clone(), path, fd, release)))
            }
            Some((_, Err(e))) => tracing::error!("cannot offer the listener to a successor: {e}"),
            None => {}
        }
        if let Some(start) = ingestion
            && let Err(e) = start(Arc::new(app.clone()), app.lifecycle().workers.clone()).await
        {
            tracing::error!(error = %e, "ingestion through the broker not started");
        }

        app.lifecycle().drain.started().await;
        let grace = app.config().server.shutdown_grace;
        let told = app.hub().drain(app.config().connections.reconnect_spread);
        tracing::info!(?grace, connections = told, "draining: closing every connection with 1001");
        app.lifecycle().connections.close();
        app.lifecycle().workers.close();
        let drained = async {
            app.lifecycle().workers.wait().await;
            app.lifecycle().connections.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("shutdown grace elapsed with connections still flushing");
        }
        stop.cancel();
        let _ = acceptor.await;
        http_conns.close();
        let _ = tokio::time::timeout(HTTP_CLOSE_GRACE, http_conns.wait()).await;
        app.lifecycle().stop_tasks().await;
        tracing::info!("stopped");
    }
}

/// Starts the node's own long-lived tasks, named and tracked by the lifecycle, once it
/// listens: the control plane's (following the store, reporting, obeying commands) and
/// housekeeping.
fn start_node_tasks(app: &App) {
    let life = &app.lifecycle();
    life.spawn("control follow", crate::control::follow(app.clone()));
    life.spawn("control report", crate::control::report(app.clone()));
    life.spawn("control commands", crate::control::obey_commands(app.clone()));
    life.spawn("heap trim", crate::trim::run(life.drain.clone(), life.connections.clone()));
    if let Some(tls) = &app.edge().tls {
        life.spawn("tls watch", tls.clone().watch(life.drain.clone()));
    }
    crate::control::start_webhooks(app);
    life.spawn("webhook pauses", crate::control::record_webhook_pauses(app.clone()));
    let summaries =
        crate::webhook::sum_up_refusals(app.webhooks().clone(), app.tenants().clone(), app.node_id().into());
    life.spawn("webhook refusals", summaries);
    life.spawn("presence channel members sweep", crate::ws::sweep_members(app.clone()));
    let push =
        crate::push::run(app.pipeline().push.clone(), app.tenants().clone(), app.history_arc(), life.drain.clone());
    life.spawn("push escalations", push);
}

/// Binds `addr` with a listen backlog of `backlog` (tokio's `bind` uses 1024), warning when
/// the kernel will cap it lower.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(cap) = cap.filter(|cap| *cap < backlog) {
        tracing::warn!(
            backlog,
            somaxconn = cap,
            "server.accept_backlog is above net.core.somaxconn; the kernel uses {cap}"
        );
    }
    socket.listen(backlog)
}

/// Binds `server.metrics_listen`. With `SO_REUSEPORT`, so that a successor taking over the
/// client listener (`server.handoff_socket`) binds it too while this node drains.
fn metrics_listener(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bind = || {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        socket.listen(64)
    };
    bind().map_err(|source| StartError::MetricsListen { addr, source })
}

/// Serves `GET /metrics` on the metrics listener until the node stops.
async fn serve_metrics(app: App, listener: TcpListener, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening on {addr}");
    }
    let router = crate::api::metrics_router(app);
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!("the metrics listener failed: {e}");
    }
}

/// The handoff socket's path, relative to the config file.
fn handoff_path(app: &App) -> Option<std::path::PathBuf> {
    app.config().server.handoff_socket.as_ref().map(|p| app.config().base_dir.join(p))
}

/// Accepts until `release`; the connections it spawns finish gracefully on `stop`.
async fn accept_loop(
    app: App,
    router: Router,
    listener: TcpListener,
    release: CancellationToken,
    stop: CancellationToken,
    conns: TaskTracker,
) {
    let header_timeout = app.config().server.handshake_timeout;
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let accepted = tokio::select! {
            () = release.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                match app.edge().addresses.accept(peer.ip()) {
                    Ok(accepted) => match &app.edge().tls {
                        None => drop(conns.spawn(serve_http(
                            router.clone(),
                            Io::Plain(tcp),
                            peer,
                            accepted,
                            stop.clone(),
                            header_timeout,
                        ))),
                        Some(tls) => {
                            let secured = secure(app.clone(), tls.clone(), tcp, peer);
                            conns.spawn(serve_secured(
                                secured,
                                router.clone(),
                                peer,
                                accepted,
                                stop.clone(),
                                header_timeout,
                            ));
                        }
                    },
                    Err(why) => {
                        let Refusal(failure, error) = crate::api::refused_at_accept(why);
                        app.metrics().handshake_failed(failure);
                        tracing::debug!(%peer, reason = error.code().as_str(), "socket refused: {error}");
                        if let Ok(permit) = refusing.clone().try_acquire_owned() {
                            conns.spawn(async move {
                                refuse(tcp, why).await;
                                drop(permit);
                            });
                        }
                    }
                }
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning, and keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Answers a refused socket's request with the refusal, then closes it.
async fn refuse(tcp: TcpStream, why: AcceptRefused) {
    let service = service_fn(move |_req: hyper::Request<Incoming>| {
        let res = crate::api::refused_at_accept(why).1.into_response();
        std::future::ready(Ok::<_, Infallible>(res))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_GRACE)
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), service);
    let _ = tokio::time::timeout(REFUSAL_GRACE * 2, conn).await;
}

/// Completes the TLS handshake (within `server.handshake_timeout`), or lets a plain
/// connection through where `server.tls.allow_plaintext` says so; counts a failure.
async fn secure(app: App, tls: Arc<Tls>, tcp: TcpStream, peer: SocketAddr) -> Option<Secured> {
    let failure = match tokio::time::timeout(app.config().server.handshake_timeout, tls.secure(tcp)).await {
        Ok(Ok(secured)) => return Some(secured),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            HandshakeFailure::Tls
        }
        Err(_) => HandshakeFailure::Timeout,
    };
    app.metrics().handshake_failed(failure);
    None
}

/// Serves a connection once [`secure`] let it through.
async fn serve_secured(
    secured: impl Future<Output = Option<Secured>>,
    router: Router,
    peer: SocketAddr,
    accepted: Accepted,
    stop: CancellationToken,
    header_timeout: Duration,
) {
    match secured.await {
        Some(Secured::Tls(tls)) => serve_http(router, Io::Tls(tls), peer, accepted, stop, header_timeout).await,
        Some(Secured::Plain(tcp)) => serve_http(router, Io::Plain(tcp), peer, accepted, stop, header_timeout).await,
        None => {}
    }
}

/// Serves one HTTP/1 connection with the router, until it closes, upgrades, is taken over
/// (an SSE stream) or the host stops. The socket's handshake slot is freed with its first
/// answer (a `101` included); its place in its address's count goes with the socket, or
/// with the WebSocket or SSE stream it becomes.
async fn serve_http(
    router: Router,
    io: Io,
    peer: SocketAddr,
    accepted: Accepted,
    stop: CancellationToken,
    header_timeout: Duration,
) {
    let socket = Socket::new(accepted);
    let (io, takeover) = Served::new(io);
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(socket.clone());
        req.extensions_mut().insert(takeover.clone());
        let answered = router.clone().oneshot(req);
        let socket = socket.clone();
        async move {
            let res = answered.await;
            socket.answered();
            res
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
