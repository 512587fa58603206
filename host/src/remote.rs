//! The command line's commands against a running host, over its HTTP API: `publish`,
//! `tenant ...` and `plugin ...`. The URL and credentials come from flags or the
//! environment. An answer is printed as JSON; an API error as its code and message, with
//! exit status 1.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Uri};
use serde_json::{Value, json};

/// Where the host is.
#[derive(Debug, Args)]
pub(crate) struct Host {
    /// The host's base URL: http:// or https://.
    #[arg(long, env = "NOTIFY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// For https://: a PEM file of the certificates to trust instead of the system's (a
    /// self-signed node's certificate, or a private CA's).
    #[arg(long, env = "NOTIFY_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

/// `notify-host publish`.
#[derive(Debug, Args)]
pub(crate) struct Publish {
    #[command(flatten)]
    host: Host,
    /// The tenant's publish key (it names the tenant).
    #[arg(long, env = "NOTIFY_PUBLISH_KEY", hide_env_values = true)]
    key: String,
    /// A user to deliver to (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// A channel to deliver to (repeatable).
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Deliver to every connection of the tenant.
    #[arg(long)]
    broadcast: bool,
    /// The event name.
    #[arg(long)]
    event: String,
    /// The payload, as JSON.
    #[arg(long)]
    data: Option<String>,
    /// Of the events with one key within the host's window, only the first is delivered.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// The admin token (or, for plugins, the tenant's management key).
#[derive(Debug, Args)]
pub(crate) struct Admin {
    #[command(flatten)]
    host: Host,
    #[arg(long, env = "NOTIFY_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Tenant {
    /// Create a tenant; prints its keys, once.
    #[command(
        after_help = "Example:\n  notify-host tenant create acme --url http://127.0.0.1:8080 --token dev-admin-token \\\n    --settings '{\"auth\":{\"mode\":\"jwt\",\"hs256_secret\":\"at-least-16-bytes-of-secret\"}}'"
    )]
    Create {
        #[command(flatten)]
        admin: Admin,
        id: String,
        /// Settings as a JSON object (`{"auth": {...}, "history": {...}}`).
        #[arg(long)]
        settings: Option<String>,
    },
    /// List every tenant (never a secret).
    #[command(
        after_help = "Example:\n  NOTIFY_ADMIN_TOKEN=dev-admin-token notify-host tenant list --url http://127.0.0.1:8080"
    )]
    List {
        #[command(flatten)]
        admin: Admin,
    },
    /// Replace a key; the previous one keeps working for `--overlap`.
    #[command(
        after_help = "Example:\n  notify-host tenant rotate-key acme --kind publish --overlap 10m --token dev-admin-token"
    )]
    RotateKey {
        #[command(flatten)]
        admin: Admin,
        id: String,
        /// `publish` or `management`.
        #[arg(long, default_value = "publish")]
        kind: String,
        /// How long the previous key keeps working (`10m`); none: it stops at once.
        #[arg(long)]
        overlap: Option<String>,
    },
    /// Give the tenant a Pusher app (app id, key, secret), or a new secret for the one it
    /// has; prints them, the secret once.
    #[command(after_help = "Example:\n  notify-host tenant pusher acme --client-events true --token dev-admin-token")]
    Pusher {
        #[command(flatten)]
        admin: Admin,
        id: String,
        /// Whether clients may send `client-*` events; unchanged without.
        #[arg(long)]
        client_events: Option<bool>,
    },
    /// Delete a tenant: its keys stop working and its connections are closed.
    #[command(after_help = "Example:\n  notify-host tenant delete acme --token dev-admin-token")]
    Delete {
        #[command(flatten)]
        admin: Admin,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Plugin {
    /// Upload a compiled component as the tenant's `auth`, `transform` or `route` plugin.
    #[command(
        after_help = "Example:\n  notify-host plugin upload demo transform plugins/target/wasm32-wasip2/release/redact.wasm \\\n    --plugin-config '{\"fields\":\"ssn\"}' --on-failure skip --token dev-admin-token"
    )]
    Upload {
        #[command(flatten)]
        admin: Admin,
        tenant: String,
        hook: String,
        file: PathBuf,
        /// The plugin's config, a JSON object of strings (`--config` names the host's file).
        #[arg(long)]
        plugin_config: Option<String>,
        /// `retry` (the default: once more, then drop), `skip` or `drop` (transform and route).
        #[arg(long)]
        on_failure: Option<String>,
    },
    /// List the tenant's plugins on every node.
    #[command(after_help = "Example:\n  notify-host plugin list demo --token dev-admin-token")]
    List {
        #[command(flatten)]
        admin: Admin,
        tenant: String,
    },
    /// Go back to the previous version.
    #[command(after_help = "Example:\n  notify-host plugin rollback demo transform --token dev-admin-token")]
    Rollback {
        #[command(flatten)]
        admin: Admin,
        tenant: String,
        hook: String,
    },
    /// Remove the plugin.
    #[command(after_help = "Example:\n  notify-host plugin delete demo transform --token dev-admin-token")]
    Delete {
        #[command(flatten)]
        admin: Admin,
        tenant: String,
        hook: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Webhook {
    /// Add a webhook endpoint to a tenant; prints its signing secret, once.
    #[command(
        after_help = "Example:\n  notify-host webhook add demo https://api.example.com/notify-hooks \\\n    --events user.online,user.offline --token dev-admin-token"
    )]
    Add {
        #[command(flatten)]
        admin: Admin,
        tenant: String,
        /// The endpoint's `https://...` (or `http://...`) URL.
        #[arg(value_name = "URL")]
        endpoint: String,
        /// Comma-separated event types; none: the default types.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// List the tenant's endpoints with this node's figures (never a secret).
    #[command(after_help = "Example:\n  notify-host webhook list demo --token dev-admin-token")]
    List {
        #[command(flatten)]
        admin: Admin,
        tenant: String,
    },
    /// Give an endpoint a new secret; the previous one keeps signing for `--overlap`.
    #[command(
        after_help = "Example:\n  notify-host webhook rotate-secret demo we_4be0c6f1a5b2e0d3 --overlap 24h --token dev-admin-token"
    )]
    RotateSecret {
        #[command(flatten)]
        admin: Admin,
        tenant: String,
        id: String,
        /// How long the previous secret keeps signing (`24h`); none: it stops at once.
        #[arg(long)]
        overlap: Option<String>,
    },
    /// Remove an endpoint.
    #[command(after_help = "Example:\n  notify-host webhook remove demo we_4be0c6f1a5b2e0d3 --token dev-admin-token")]
    Remove {
        #[command(flatten)]
        admin: Admin,
        tenant: String,
        id: String,
    },
}

/// One API call.
struct Call<'a> {
    method: Method,
    path: String,
    token: &'a str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    /// What the host is doing meanwhile, told on stderr every few seconds of a long wait.
    waiting: Option<&'static str>,
}

impl Publish {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let data: Option<Value> =
            self.data.as_deref().map(serde_json::from_str).transpose().context("--data is not JSON")?;
        let mut body =
            json!({ "users": self.users, "channels": self.channels, "broadcast": self.broadcast, "event": self.event });
        if let Some(data) = data {
            body["data"] = data;
        }
        if let Some(key) = self.idempotency_key {
            body["idempotency_key"] = json!(key);
        }
        let call = Call::new(Method::POST, "/v1/publish".into(), &self.key).json(&body);
        print(call.send(&self.host))
    }
}

impl Tenant {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let (admin, call) = match &self {
            Tenant::Create { admin, id, settings } => {
                let mut body: Value = match settings {
                    Some(s) => serde_json::from_str(s).context("--settings is not a JSON object")?,
                    None => json!({}),
                };
                body.as_object_mut().context("--settings is not a JSON object")?.insert("id".into(), json!(id));
                (admin, Call::new(Method::POST, "/v1/admin/tenants".into(), &admin.token).json(&body))
            }
            Tenant::List { admin } => (admin, Call::new(Method::GET, "/v1/admin/tenants".into(), &admin.token)),
            Tenant::RotateKey { admin, id, kind, overlap } => {
                let path = format!("/v1/admin/tenants/{id}/keys/{kind}");
                let body = overlap.as_ref().map_or(json!({}), |o| json!({ "overlap": o }));
                (admin, Call::new(Method::POST, path, &admin.token).json(&body))
            }
            Tenant::Pusher { admin, id, client_events } => {
                let body = client_events.map_or(json!({}), |c| json!({ "client_events": c }));
                (admin, Call::new(Method::POST, format!("/v1/admin/tenants/{id}/pusher"), &admin.token).json(&body))
            }
            Tenant::Delete { admin, id } => {
                (admin, Call::new(Method::DELETE, format!("/v1/admin/tenants/{id}"), &admin.token))
            }
        };
        print(call.send(&admin.host))
    }
}

impl Plugin {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let base = |tenant: &str| format!("/v1/admin/tenants/{tenant}/plugins");
        let (admin, call) = match &self {
            Plugin::Upload { admin, tenant, hook, file, plugin_config, on_failure } => {
                let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                eprintln!(
                    "uploading {} ({} KiB): the host compiles it before it answers, in seconds for Rust, \
                     10-20 s for JavaScript and Python",
                    file.display(),
                    wasm.len() / 1024
                );
                let query = on_failure.as_ref().map(|p| format!("?on_failure={p}")).unwrap_or_default();
                let mut call = Call::new(Method::PUT, format!("{}/{hook}{query}", base(tenant)), &admin.token);
                call.body = wasm;
                call.waiting = Some("compiling");
                call.headers.push(("content-type", "application/wasm".into()));
                if let Some(config) = plugin_config {
                    call.headers.push(("notify-plugin-config", config.clone()));
                }
                (admin, call)
            }
            Plugin::List { admin, tenant } => (admin, Call::new(Method::GET, base(tenant), &admin.token)),
            Plugin::Rollback { admin, tenant, hook } => {
                (admin, Call::new(Method::POST, format!("{}/{hook}/rollback", base(tenant)), &admin.token))
            }
            Plugin::Delete { admin, tenant, hook } => {
                (admin, Call::new(Method::DELETE, format!("{}/{hook}", base(tenant)), &admin.token))
            }
        };
        print(call.send(&admin.host))
    }
}

impl Webhook {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let base = |tenant: &str| format!("/v1/admin/tenants/{tenant}/webhooks");
        let (admin, call) = match &self {
            Webhook::Add { admin, tenant, endpoint, events } => {
                let body = json!({ "url": endpoint, "events": events });
                (admin, Call::new(Method::POST, base(tenant), &admin.token).json(&body))
            }
            Webhook::List { admin, tenant } => (admin, Call::new(Method::GET, base(tenant), &admin.token)),
            Webhook::RotateSecret { admin, tenant, id, overlap } => {
                let body = overlap.as_ref().map_or(json!({}), |o| json!({ "overlap": o }));
                (admin, Call::new(Method::POST, format!("{}/{id}/secret", base(tenant)), &admin.token).json(&body))
            }
            Webhook::Remove { admin, tenant, id } => {
                (admin, Call::new(Method::DELETE, format!("{}/{id}", base(tenant)), &admin.token))
            }
        };
        print(call.send(&admin.host))
    }
}

/// Prints an answer's JSON (nothing for an empty one).
fn print(answer: anyhow::Result<Bytes>) -> anyhow::Result<()> {
    let body = answer?;
    if !body.is_empty() {
        let value: Value = serde_json::from_slice(&body).context("the host answered something other than JSON")?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(())
}

impl<'a> Call<'a> {
    fn new(method: Method, path: String, token: &'a str) -> Self {
        Self { method, path, token, body: Vec::new(), headers: Vec::new(), waiting: None }
    }

    fn json(mut self, body: &Value) -> Self {
        self.body = body.to_string().into_bytes();
        self.headers.push(("content-type", "application/json".into()));
        self
    }

    /// Sends the call on a runtime of its own; an error status becomes the API's error.
    fn send(self, host: &Host) -> anyhow::Result<Bytes> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let waiting = self.waiting;
        let answer = self.send_async(host);
        let Some(what) = waiting else { return runtime.block_on(answer) };
        runtime.block_on(async {
            tokio::pin!(answer);
            let every = std::time::Duration::from_secs(5);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let started = std::time::Instant::now();
            loop {
                tokio::select! {
                    answer = &mut answer => return answer,
                    _ = ticks.tick() => eprintln!("{what}... {} s", started.elapsed().as_secs()),
                }
            }
        })
    }

    async fn send_async(self, host: &Host) -> anyhow::Result<Bytes> {
        let base: Uri = host.url.parse().with_context(|| format!("--url {:?} is not a URL", host.url))?;
        let secure = match base.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("--url must be http://HOST:PORT or https://HOST:PORT"),
        };
        let authority = base.authority().context("--url has no host")?.clone();
        let port = authority.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        let tls = if secure { Some(tls(host)?) } else { None };
        let mut sender = crate::outbound::open(tcp, tls.as_ref(), authority.host()).await?;
        let prefix = base.path().trim_end_matches('/');
        let mut req = Request::builder()
            .method(self.method)
            .uri(format!("{prefix}{}", self.path))
            .header("host", authority.as_str())
            .header("authorization", format!("Bearer {}", self.token));
        for (name, value) in self.headers {
            req = req.header(name, value);
        }
        let res = sender.send_request(req.body(Full::new(Bytes::from(self.body)))?).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let error: Value = serde_json::from_slice(&body).unwrap_or_default();
        match (error["error"]["code"].as_str(), error["error"]["message"].as_str()) {
            (Some(code), Some(message)) => bail!("{code}: {message}"),
            _ => bail!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
        }
    }
}

/// TLS trusting `--ca-cert`, or else the system's certificates.
fn tls(host: &Host) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match &host.ca_cert {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("reading {}", path.display()))? {
                roots.add(cert.with_context(|| format!("{} is not PEM", path.display()))?)?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(crate::outbound::crypto()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}
