//! The egress gateway: the one way out for a job's network traffic.
//!
//! An HTTP proxy on the host (`DELEGATE_EGRESS_LISTEN`, and a Unix socket
//! for sandboxes without a network) that guests reach through
//! `HTTP_PROXY`/`HTTPS_PROXY`. Each request names its job by id and token
//! (`auth`); the destination is checked against the job's `network` policy,
//! the host's ceiling and the private ranges (`policy`), resolved by the
//! gateway itself (`resolver`, `upstream`), and then tunnelled (`tunnel`,
//! `CONNECT`) or forwarded (`forward`, plain HTTP). `anthropic` is an
//! endpoint of its own: a `claude` job's `ANTHROPIC_BASE_URL` points at it
//! and the gateway adds the host's API key on the way out, so the key never
//! enters the VM. Every connection, allowed or denied, is appended to the
//! job's connection log (`log`).
//!
//! Connections are served by [`crate::net::conn`] under the gateway's own
//! timeouts and cap (`conn_settings`): a head must come in time, a
//! connection without a tunnel may not sit idle, a tunnel only not quiet
//! for too long, and at the cap the oldest idle connection goes. Each job
//! holds at most its share of upstream connections (`quota`), so one job
//! cannot starve the others.
//!
//! The chain: `settings`/`secrets`/`resolver` ← `policy` ← `upstream` ←
//! `tunnel`/`forward`/`anthropic` ← this module's listener.

mod anthropic;
mod auth;
pub mod ca;
pub mod conn_settings;
mod forward;
mod inject;
mod io;
pub mod log;
pub mod policy;
mod quota;
pub mod resolver;
pub mod secrets;
pub mod settings;
mod spec;
mod tunnel;
mod upstream;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::net::conn::{self, Conns, RequestBody};
use crate::store::Store;

pub use policy::check_manifest;
pub use settings::{EgressArgs, EgressSettings};
pub use spec::spec_for;

/// Response bodies: fixed text or a streamed upstream body.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;
/// A request as the gateway's listeners hand it over.
pub(crate) type Req = Request<RequestBody>;

/// What every connection handler shares.
pub(crate) struct Shared {
    settings: Arc<EgressSettings>,
    store: Store,
    /// This host's addresses and the Proxmox API's: refused unless allowed.
    own: Vec<IpAddr>,
    /// TLS for the connections the gateway makes itself.
    client_tls: Arc<rustls::ClientConfig>,
    /// Upstream connections held per job.
    jobs: Arc<quota::JobConns>,
}

/// The gateway's listeners, bound before the engine starts so the guests'
/// URL carries the real port.
pub struct BoundGateway {
    tcp: TcpListener,
    client_tls: Arc<rustls::ClientConfig>,
    unix: Vec<(UnixListener, PathBuf)>,
    /// The TCP address actually bound.
    pub addr: SocketAddr,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[error("egress gateway: cannot listen on {what}: {source}")]
pub struct BindError {
    what: String,
    #[source]
    source: std::io::Error,
}

/// Binds the settings' TCP address and Unix socket, and `provider_socket`
/// (where the provider's sandboxes find the gateway); `None` when the host
/// runs no gateway.
pub async fn bind(
    settings: &EgressSettings,
    provider_socket: Option<&Path>,
) -> Result<Option<BoundGateway>, BindError> {
    let Some(listen) = settings.listen else {
        return Ok(None);
    };
    let err = |what: String| move |source| BindError { what, source };
    let client_tls = upstream::client_config(&settings.upstream_roots)
        .map_err(std::io::Error::other)
        .map_err(err("TLS client set-up".into()))?;
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(err(listen.to_string()))?;
    let addr = tcp.local_addr().map_err(err(listen.to_string()))?;
    let mut unix = Vec::new();
    // The provider's socket may be the one the settings name already.
    let provider_socket = provider_socket.filter(|p| settings.socket.as_deref() != Some(*p));
    for path in settings
        .socket
        .iter()
        .map(PathBuf::as_path)
        .chain(provider_socket)
    {
        // Connectable by the job's uid, like the callback socket: what it
        // may do there is decided by its token, not the file's mode.
        let l = crate::callback::bind_unix(path).map_err(err(path.display().to_string()))?;
        unix.push((l, path.to_path_buf()));
    }
    Ok(Some(BoundGateway {
        tcp,
        client_tls,
        unix,
        addr,
    }))
}

impl BoundGateway {
    /// Serves until `shutdown` is cancelled, every listener under `conns`.
    pub fn serve(
        self,
        settings: Arc<EgressSettings>,
        store: Store,
        conns: Conns,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let mut own = upstream::own_addresses();
        tokio::spawn(async move {
            for host in &settings.always_denied_hosts {
                if let Ok(addrs) = settings.resolver.resolve(host, 443).await {
                    own.extend(addrs.iter().map(SocketAddr::ip));
                }
            }
            let jobs = quota::JobConns::new(settings.conns.per_job);
            let shared = Arc::new(Shared {
                settings,
                store,
                own,
                client_tls: self.client_tls,
                jobs,
            });
            let app = tower::service_fn(move |req| handle(shared.clone(), req));
            tracing::info!(addr = %self.addr, cap = conns.cap(), "egress gateway listening");
            let mut loops = tokio::task::JoinSet::new();
            loops.spawn(conn::serve(
                self.tcp,
                app.clone(),
                conns.clone(),
                shutdown.clone(),
            ));
            let mut paths = Vec::new();
            for (unix, path) in self.unix {
                loops.spawn(conn::serve(
                    unix,
                    app.clone(),
                    conns.clone(),
                    shutdown.clone(),
                ));
                paths.push(path);
            }
            while loops.join_next().await.is_some() {}
            for path in paths {
                let _ = std::fs::remove_file(path);
            }
        })
    }
}

async fn handle(shared: Arc<Shared>, req: Req) -> Result<Response<Body>, Infallible> {
    Ok(if req.method() == Method::CONNECT {
        tunnel::handle(shared, req).await
    } else if req.uri().scheme().is_some() {
        forward::handle(shared, req).await
    } else if req.uri().path().starts_with(anthropic::PREFIX) {
        anthropic::handle(shared, req).await
    } else {
        text(
            StatusCode::BAD_REQUEST,
            "this is delegate's egress gateway: use it as an HTTP proxy",
        )
    })
}

/// A short plain-text response.
pub(crate) fn text(status: StatusCode, message: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The 407 that asks for the job's credentials.
pub(crate) fn need_auth() -> Response<Body> {
    let mut r = text(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "the egress gateway needs the job's id and token as proxy credentials",
    );
    r.headers_mut().insert(
        hyper::header::PROXY_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"delegate\""),
    );
    r
}

/// The proxy path's common steps: who the job is, and whether its policy
/// allows `host:port` by name. A refusal is logged and answered.
pub(crate) async fn admit(
    shared: &Shared,
    headers: &hyper::HeaderMap,
    host: &str,
    port: u16,
    via: log::Via,
) -> Result<auth::JobIdentity, Response<Body>> {
    let creds = headers
        .get(hyper::header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::parse_basic);
    let Some((id, token)) = creds else {
        return Err(need_auth());
    };
    let Some(job) = auth::authenticate(&shared.store, id, token).await else {
        tracing::warn!(host, port, "egress gateway: unknown job or wrong token");
        return Err(need_auth());
    };
    let verdict = match &job.manifest.network {
        None => Err("the job has no network policy (manifest network), so nothing leaves".into()),
        Some(net) => policy::JobPolicy::expand(&shared.settings, net)
            .map_err(|e| e.to_string())
            .and_then(|p| p.check_name(&shared.settings, host, port)),
    };
    if let Err(why) = verdict {
        return Err(deny(shared, &job.id, host, port, via, why).await);
    }
    Ok(job)
}

/// Everything before a proxied connection carries bytes: the job and the
/// destination admitted by name ([`admit`]), then a connection within the
/// address policy ([`connect`]). Each refusal or failure is already logged
/// and answered.
pub(crate) async fn open(
    shared: &Shared,
    headers: &hyper::HeaderMap,
    host: &str,
    port: u16,
    via: log::Via,
) -> Result<(auth::JobIdentity, Upstream), Response<Body>> {
    let job = admit(shared, headers, host, port, via).await?;
    let upstream = connect(shared, &job.id, host, port, via).await?;
    Ok((job, upstream))
}

/// An upstream connection, counted against its job's cap while held.
pub(crate) struct Upstream {
    pub stream: TcpStream,
    pub counted: quota::JobConn,
}

/// A connection to `host:port` for an admitted job: a job holding its cap
/// of connections is refused (429), a destination whose addresses the
/// policy refuses is denied (403), one that cannot be reached fails (502);
/// each is logged.
pub(crate) async fn connect(
    shared: &Shared,
    job_id: &str,
    host: &str,
    port: u16,
    via: log::Via,
) -> Result<Upstream, Response<Body>> {
    let counted = match shared.jobs.take(job_id) {
        Ok(c) => c,
        Err(over) => return Err(over_cap(shared, job_id, host, port, via, over).await),
    };
    match upstream::connect(shared, host, port).await {
        Ok(stream) => Ok(Upstream { stream, counted }),
        Err(e @ upstream::ConnectError::Denied(_)) => {
            Err(deny(shared, job_id, host, port, via, e.reason().to_string()).await)
        }
        Err(upstream::ConnectError::Failed(why)) => {
            Err(failed(shared, job_id, log::ConnRecord::now(host, port, via), why).await)
        }
    }
}

/// Logs an allowed connection that failed upstream and answers 502.
pub(crate) async fn failed(
    shared: &Shared,
    job_id: &str,
    mut record: log::ConnRecord,
    why: String,
) -> Response<Body> {
    record.reason = Some(why.clone());
    log::append(&shared.store, job_id, &record).await;
    text(StatusCode::BAD_GATEWAY, &why)
}

/// Logs a job's connection beyond its cap and answers 429 with the reason.
pub(crate) async fn over_cap(
    shared: &Shared,
    job_id: &str,
    host: &str,
    port: u16,
    via: log::Via,
    over: quota::OverCap,
) -> Response<Body> {
    let why = over.to_string();
    let mut record = log::ConnRecord::now(host, port, via);
    record.reason = Some(why.clone());
    log::append(&shared.store, job_id, &record).await;
    tracing::warn!(
        job = job_id,
        host,
        port,
        cap = over.cap,
        "egress refused: the job holds its connection cap"
    );
    text(StatusCode::TOO_MANY_REQUESTS, &why)
}

/// Logs a refusal and answers 403 with the reason.
pub(crate) async fn deny(
    shared: &Shared,
    job_id: &str,
    host: &str,
    port: u16,
    via: log::Via,
    why: String,
) -> Response<Body> {
    let mut record = log::ConnRecord::now(host, port, via);
    record.reason = Some(why.clone());
    log::append(&shared.store, job_id, &record).await;
    tracing::info!(job = job_id, host, port, reason = %why, "egress denied");
    text(StatusCode::FORBIDDEN, &format!("egress denied: {why}"))
}
