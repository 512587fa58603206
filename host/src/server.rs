//! Listener, routes and shutdown orchestration.
//!
//! Shutdown follows tokio's mini-redis: a signal (`App::draining`, a cancellation token)
//! plus completion tracking (`App::connections`, a task tracker). Draining refuses new
//! WebSocket upgrades and publishes, turns `/readyz` to 503, and has every connection flush
//! its queue and close with 1001; the host then waits for the connection tasks for at most
//! `server.shutdown_grace`, stops the listener and returns.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::config::{BrokerConfig, Config};
use crate::http::{self, Body};
use crate::plugin::Hook;
use crate::tenant::Tenant;

/// How long plain HTTP connections get to finish once the host stops.
const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
}

/// A bound host, ready to run.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    local_addr: SocketAddr,
}

/// Starts draining the host it came from.
#[derive(Clone)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

impl Server {
    /// Loads plugins and binds `config.server.listen` (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let app = Arc::new(App::new(config).await?);
        let listener = TcpListener::bind(app.config.server.listen).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self { app, listener, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.app.draining.clone())
    }

    /// Serves until shutdown is requested and the drain is over.
    pub async fn run(self) {
        let Self { app, listener, local_addr } = self;
        let insecure =
            app.tenants.iter().filter(|t| t.auth.is_insecure() && app.plugins.get(&t.id, Hook::Auth).is_none());
        for t in insecure {
            tracing::warn!(
                tenant = &*t.id,
                "tenant uses INSECURE auth: any client can claim any user with ?user=. Development only; set auth.mode = \"jwt\" in production"
            );
        }
        tracing::info!(addr = %local_addr, "notify-host listening on {local_addr}");
        let stop = CancellationToken::new();
        let http_conns = TaskTracker::new();
        let acceptor = tokio::spawn(accept_loop(app.clone(), listener, stop.clone(), http_conns.clone()));
        if let BrokerConfig::Redis(redis) = &app.config.broker
            && redis.ingest
            && let Err(e) = crate::ingest::redis::start(&app, redis).await
        {
            tracing::error!(error = %e, "Redis ingestion not started");
        }

        app.draining.cancelled().await;
        let grace = app.config.server.shutdown_grace;
        tracing::info!(?grace, "draining: closing every connection with 1001");
        app.connections.close();
        app.workers.close();
        let drained = async {
            app.workers.wait().await;
            app.connections.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("shutdown grace elapsed with connections still flushing");
        }
        stop.cancel();
        let _ = acceptor.await;
        http_conns.close();
        let _ = tokio::time::timeout(HTTP_CLOSE_GRACE, http_conns.wait()).await;
        tracing::info!("stopped");
    }
}

async fn accept_loop(app: Arc<App>, listener: TcpListener, stop: CancellationToken, conns: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                conns.spawn(serve_http(app.clone(), tcp, peer, stop.clone()));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning, and keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve_http(app: Arc<App>, tcp: TcpStream, peer: SocketAddr, stop: CancellationToken) {
    let timeout = app.config.server.handshake_timeout;
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(route(&app, req, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tcp), service)
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

async fn route(app: &Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/healthz") => http::json(StatusCode::OK, &json!({ "status": "ok" })),
        (Method::GET, "/readyz") => readyz(app),
        (Method::GET, "/metrics") => http::prometheus(StatusCode::OK, app.render_metrics()),
        (Method::POST, "/v1/publish") => crate::ingest::http::publish(app, req, false).await,
        (Method::POST, "/v1/publish/batch") => crate::ingest::http::publish(app, req, true).await,
        (_, p) if p.starts_with("/v1/admin/tenants/") => {
            let rest = &p["/v1/admin/tenants/".len()..];
            crate::admin::handle(app, req, rest).await
        }
        (Method::GET, p) if p.starts_with("/v1/presence/") => presence(app, &req, &p["/v1/presence/".len()..]).await,
        (Method::GET, p) if p.starts_with("/v1/users/") && p.ends_with("/unread") => {
            unread(app, &req, &p["/v1/users/".len()..p.len() - "/unread".len()]).await
        }
        (Method::GET, p) if p.starts_with("/v1/ws/") => {
            let tenant = &p["/v1/ws/".len()..];
            crate::ws::upgrade::handle(app, req, tenant, peer).await
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/v1/publish" | "/v1/publish/batch") => {
            http::error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed")
        }
        _ => http::error(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}")),
    }
}

/// The tenant whose publish key the request bears, and the user id from the path.
fn tenant_and_user<'a>(
    app: &'a App,
    req: &Request<Incoming>,
    user: &str,
    route: &str,
) -> Result<(&'a Arc<Tenant>, String), Box<Response<Body>>> {
    let tenant = crate::ingest::http::publisher(app, req.headers())?;
    let user = percent_decode(user);
    if !crate::channel::valid_name(&user) {
        let message = format!("{route} needs a user id of 1-128 characters of A-Z a-z 0-9 _ - . : @");
        return Err(Box::new(http::error(StatusCode::BAD_REQUEST, "bad_request", message)));
    }
    Ok((tenant, user))
}

/// `GET /v1/presence/{user}` with the tenant's publish key.
async fn presence(app: &App, req: &Request<Incoming>, user: &str) -> Response<Body> {
    let (tenant, user) = match tenant_and_user(app, req, user, "GET /v1/presence/{user}") {
        Ok(found) => found,
        Err(response) => return *response,
    };
    match app.presence.status(tenant, &user).await {
        Ok(s) => http::json(
            StatusCode::OK,
            &json!({ "user": user, "online": s.connections > 0, "connections": s.connections }),
        ),
        Err(e) => http::error(StatusCode::SERVICE_UNAVAILABLE, "presence_unavailable", e.to_string()),
    }
}

/// `GET /v1/users/{user}/unread` with the tenant's publish key: the user's read cursor.
async fn unread(app: &App, req: &Request<Incoming>, user: &str) -> Response<Body> {
    let (tenant, user) = match tenant_and_user(app, req, user, "GET /v1/users/{user}/unread") {
        Ok(found) => found,
        Err(response) => return *response,
    };
    if !tenant.config.history.acks {
        let message = "this tenant keeps no read cursors; set history.acks = true";
        return http::error(StatusCode::CONFLICT, "acks_disabled", message);
    }
    match app.history.cursor(tenant, &user).await {
        Ok(c) => http::json(
            StatusCode::OK,
            &json!({ "user": user, "epoch": c.epoch, "offset": c.offset, "acked": c.acked, "unread": c.unread() }),
        ),
        Err(e) => http::error(StatusCode::SERVICE_UNAVAILABLE, "history_unavailable", e.to_string()),
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("u={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn readyz(app: &App) -> Response<Body> {
    if app.draining.is_cancelled() {
        return http::json(StatusCode::SERVICE_UNAVAILABLE, &json!({ "status": "draining" }));
    }
    if !app.broker.healthy() {
        return http::json(StatusCode::SERVICE_UNAVAILABLE, &json!({ "status": "broker_unavailable" }));
    }
    http::json(StatusCode::OK, &json!({ "status": "ready" }))
}
