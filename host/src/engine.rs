//! Starting everything that runs in the server process, in order: the
//! store, the provider, the job manager (which takes `host.lock` and
//! recovers), and the callback API. `main` calls [`start_engine`] and keeps
//! the [`Engine`] until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ProviderKind, Settings, derive_callback_url};
use crate::jobs::{JobError, JobManager};
use crate::net::conn::Conns;
use crate::net::conn::fds::{self, Want};
use crate::provider::local::LocalProvider;
use crate::provider::proxmox::ProxmoxProvider;
use crate::provider::{Provider, ProviderError};
use crate::store::{Store, StoreError};

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The data directory or its database is unusable, or another engine
    /// holds it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The callback API cannot listen.
    #[error("cannot listen on {addr} for the callback API (CALLBACK_HOST/CALLBACK_PORT): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The callback API cannot listen on the provider's Unix socket.
    #[error("cannot listen on {path} for the callback API: {source}")]
    BindUnix {
        /// The socket path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The egress gateway's CA (for credential injection) is unusable.
    #[error(transparent)]
    EgressCa(#[from] crate::egress::ca::CaError),
    /// `/healthz` and `/metrics` cannot listen.
    #[error("cannot listen on {addr} for /healthz and /metrics (DELEGATE_METRICS_ADDR): {source}")]
    BindMetrics {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The provider cannot work here.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The manager failed to start (recovery).
    #[error(transparent)]
    Jobs(#[from] JobError),
}

/// The running engine.
pub struct Engine {
    /// The job manager (clone it freely).
    pub manager: JobManager,
    /// Where the callback API listens.
    pub callback_addr: SocketAddr,
    /// Where `/healthz` and `/metrics` listen, when they are served.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the egress gateway listens, when the host runs one.
    pub egress_addr: Option<SocketAddr>,
    /// The connections `serve --http` may hold: its share of the open-file
    /// limit beside the callback API's and the gateway's.
    pub http_conns: Conns,
    shutdown: CancellationToken,
    /// The callback API's server, then the operator's, if any.
    servers: Vec<(&'static str, JoinHandle<std::io::Result<()>>)>,
    gateway: Option<JoinHandle<()>>,
}

/// Builds the provider the settings name, from its own settings.
pub fn build_provider(settings: &Settings) -> Result<Arc<dyn Provider>, EngineError> {
    let missing = |var: &str| {
        ProviderError::Unavailable(format!(
            "DELEGATE_PROVIDER={} but its settings were not resolved ({var})",
            settings.provider.as_str()
        ))
    };
    Ok(match settings.provider {
        ProviderKind::Local => {
            let local = settings
                .local
                .clone()
                .ok_or_else(|| missing("DELEGATE_GUEST_BIN"))?;
            Arc::new(LocalProvider::new(local)?)
        }
        ProviderKind::Proxmox => {
            let px = settings
                .proxmox
                .clone()
                .ok_or_else(|| missing("PROXMOX_*"))?;
            Arc::new(ProxmoxProvider::from_settings(px)?)
        }
        ProviderKind::Qemu => {
            let qemu = settings
                .qemu
                .clone()
                .ok_or_else(|| missing("DELEGATE_QEMU_*"))?;
            Arc::new(crate::provider::qemu::QemuProvider::new(qemu)?)
        }
    })
}

/// Raises the open-file limit and shares what it leaves among the
/// listeners: the callback API's, the egress gateway's (two descriptors a
/// connection, the job's and the upstream's; nothing without a gateway)
/// and `serve --http`'s.
fn listener_conns(settings: &Settings) -> (Conns, Conns, Conns) {
    let nofile = fds::raise_nofile_limit();
    let egress = settings.egress.conns.conn;
    let caps = fds::connection_caps(
        nofile,
        &[
            Want {
                connections: settings.callback_conn.max_connections,
                fds_each: 1,
            },
            Want {
                connections: if settings.egress.listen.is_some() {
                    egress.max_connections
                } else {
                    0
                },
                fds_each: 2,
            },
            Want {
                connections: settings.http_conn.max_connections,
                fds_each: 1,
            },
        ],
    );
    (
        Conns::new(
            "callback API",
            "DELEGATE_CALLBACK_MAX_CONNECTIONS",
            settings.callback_conn,
            caps[0],
        ),
        Conns::new(
            "egress gateway",
            "DELEGATE_EGRESS_MAX_CONNECTIONS",
            egress,
            caps[1],
        ),
        Conns::new(
            "MCP HTTP server",
            "DELEGATE_HTTP_MAX_CONNECTIONS",
            settings.http_conn,
            caps[2],
        ),
    )
}

/// Opens the store, builds the provider from the settings, starts the job
/// manager and serves the callback API; everything stops when `shutdown`
/// is cancelled (then call [`Engine::wait`]).
pub async fn start_engine(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<Engine, EngineError> {
    let provider = build_provider(&settings)?;
    if let Some(why) = &settings.provider_pick {
        tracing::info!(
            provider = provider.name(),
            "DELEGATE_PROVIDER=auto picked {why}"
        );
    }
    tracing::info!(provider = provider.name(), "{}", provider.describe());
    start_engine_with(settings, provider, shutdown).await
}

/// [`start_engine`] with a given provider (tests, benchmarks).
pub async fn start_engine_with(
    mut settings: Settings,
    provider: Arc<dyn Provider>,
    shutdown: CancellationToken,
) -> Result<Engine, EngineError> {
    // Descriptor headroom first: the listeners' caps follow from the
    // limit, and the store needs descriptors too.
    let (conns, egress_conns, http_conns) = listener_conns(&settings);
    let store = Store::open(&settings.data_dir)?;
    // Take the lock before binding, so a second server on the same data
    // directory hears "already served by pid N", not "address in use".
    let lock = store.lock_engine()?;
    let listener = TcpListener::bind(settings.callback_bind)
        .await
        .map_err(|source| EngineError::Bind {
            addr: settings.callback_bind,
            source,
        })?;
    let callback_addr = listener.local_addr().map_err(|source| EngineError::Bind {
        addr: settings.callback_bind,
        source,
    })?;
    let metrics = match settings.metrics_bind {
        None => None,
        Some(addr) => {
            let bind_err = |source| EngineError::BindMetrics { addr, source };
            let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
            let bound = listener.local_addr().map_err(bind_err)?;
            Some((listener, bound))
        }
    };
    if settings.callback_url_derived {
        // Derived from the bind address: use the port actually bound (the
        // settings may have asked for port 0).
        settings.callback_url =
            derive_callback_url(settings.provider, callback_addr).map_err(|e| {
                EngineError::Bind {
                    addr: callback_addr,
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
    }
    // Bound before recovery, so resumed sandboxes find their host at once.
    let unix_listener = match provider.callback_socket() {
        Some(path) => Some(
            crate::callback::bind_unix(&path)
                .map_err(|source| EngineError::BindUnix { path, source })?,
        ),
        None => None,
    };
    // The gateway is bound before the manager starts, so the URL guests
    // are told carries the port actually bound.
    let gateway = crate::egress::bind(&settings.egress, provider.egress_socket().as_deref())
        .await
        .map_err(|e| EngineError::Bind {
            addr: settings.egress.listen.unwrap_or(callback_addr),
            source: std::io::Error::other(e.to_string()),
        })?;
    if let Some(g) = &gateway {
        settings.egress.url = Some(settings.egress.url_for(&settings.callback_url, g.addr));
        if !settings.egress.injections.is_empty() {
            let hosts: Vec<String> = settings
                .egress
                .injections
                .iter()
                .map(|i| i.host.clone())
                .collect();
            let ca = crate::egress::ca::InjectCa::load_or_create(&settings.data_dir, &hosts)?;
            settings.egress.ca = Some(Arc::new(ca));
        }
    }
    let egress_addr = gateway.as_ref().map(|g| g.addr);
    let egress_settings = Arc::new(settings.egress.clone());
    let gateway_store = store.clone();
    let manager =
        JobManager::start_locked(Arc::new(settings), store, lock, provider, shutdown.clone())
            .await?;
    let gateway = gateway.map(|g| {
        g.serve(
            egress_settings,
            gateway_store,
            egress_conns,
            shutdown.clone(),
        )
    });
    let mut servers = vec![(
        "callback API",
        tokio::spawn(crate::callback::serve(
            listener,
            manager.clone(),
            conns.clone(),
            shutdown.clone(),
        )),
    )];
    let metrics_addr = metrics.map(|(listener, bound)| {
        servers.push((
            "/healthz and /metrics",
            tokio::spawn(crate::callback::serve_ops(
                listener,
                manager.clone(),
                shutdown.clone(),
            )),
        ));
        bound
    });
    if let Some(l) = unix_listener {
        servers.push((
            "callback API (Unix socket)",
            tokio::spawn(crate::callback::serve_unix(
                l,
                manager.clone(),
                conns,
                shutdown.clone(),
            )),
        ));
    }
    Ok(Engine {
        manager,
        callback_addr,
        metrics_addr,
        egress_addr,
        http_conns,
        shutdown,
        servers,
        gateway,
    })
}

impl Engine {
    /// Stops everything (cancels the shutdown token) and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the servers and the engine tasks have ended (after
    /// the shutdown token was cancelled), releasing `host.lock`.
    pub async fn wait(self) {
        for (what, server) in self.servers {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "{what} failed"),
                Err(e) => tracing::error!(error = %e, "{what} task failed"),
            }
        }
        if let Some(g) = self.gateway
            && let Err(e) = g.await
        {
            tracing::error!(error = %e, "egress gateway task failed");
        }
        self.manager.join().await;
    }
}
