//! `serve`: the engine plus MCP on stdio (until the client closes stdin) or
//! on streamable HTTP (until SIGINT or SIGTERM). An HTTP server must own the
//! data directory; stdio servers share it (see [`serve_stdio`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::{Engine, EngineError, start_engine};
use crate::jobs::{JobError, JobManager};
use crate::mcp::{self, Guard, JobsHandle};
use crate::retry::RetryPolicy;
use crate::store::{Store, StoreError};

use super::exit::{self, CliError};

/// Runs the server.
pub async fn run(settings: Settings, http: Option<SocketAddr>) -> Result<u8, CliError> {
    let stop = CancellationToken::new();
    // What a burst of calls or uploads freed goes back to the system.
    tokio::spawn(crate::memory::watch(stop.clone()));
    match http {
        Some(addr) => serve_http(settings, addr, stop).await,
        None => serve_stdio(settings, stop).await,
    }
}

/// MCP over streamable HTTP, with the engine in this process.
async fn serve_http(
    settings: Settings,
    addr: SocketAddr,
    stop: CancellationToken,
) -> Result<u8, CliError> {
    // Check what HTTP needs before starting anything.
    let guard = http_guard(&settings)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let engine = start_engine(settings, stop.clone()).await?;
    let signals = tokio::spawn(stop_on_signal(stop.clone()));
    if let Ok(local) = listener.local_addr() {
        // The one line a supervisor (or a test) waits for.
        super::out::note(&format!(
            "delegate-host: MCP over streamable HTTP at http://{local}{}",
            mcp::http::MCP_PATH
        ));
    }
    let served = mcp::http::serve(
        listener,
        engine.manager.clone(),
        guard,
        engine.http_conns.clone(),
        stop.clone(),
    )
    .await;
    signals.abort();
    engine.stop().await;
    served.map_err(mcp::ServeError::from)?;
    Ok(exit::OK)
}

/// How often a stdio server without the engine tries to take it over.
const TAKEOVER_EVERY: Duration = Duration::from_secs(2);
/// Until it works or the server stops, every [`TAKEOVER_EVERY`].
const TAKEOVER: RetryPolicy = RetryPolicy::fixed(u32::MAX, TAKEOVER_EVERY);

/// MCP on stdio. Every MCP client session (each Claude Code conversation)
/// starts its own `serve`; only one process can run the engine for a data
/// directory. The first one does; the others serve their client through the
/// shared store (submits and cancels reach the engine within a second,
/// reads are direct) and take the engine over as soon as its process ends,
/// so jobs never wait for a server that is gone.
async fn serve_stdio(settings: Settings, stop: CancellationToken) -> Result<u8, CliError> {
    let signals = tokio::spawn(stop_on_signal(stop.clone()));
    let engine: Arc<Mutex<Option<Engine>>> = Arc::new(Mutex::new(None));
    let handle = match start_engine(settings.clone(), stop.clone()).await {
        Ok(e) => {
            let handle = JobsHandle::new(e.manager.clone());
            *engine.lock().await = Some(e);
            handle
        }
        Err(e) if is_locked(&e) => {
            tracing::warn!(
                "{e}; serving this client through the shared store until that process ends"
            );
            let store = Store::open(&settings.data_dir)?;
            let handle = JobsHandle::new(JobManager::connect(Arc::new(settings.clone()), store));
            tokio::spawn(take_over(
                settings,
                handle.clone(),
                engine.clone(),
                stop.clone(),
            ));
            handle
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!("serving MCP on stdio");
    let served = session_until_stopped(handle, &stop).await;
    // Stop the takeover loop (it watches `stop`) before stopping the engine.
    stop.cancel();
    signals.abort();
    if let Some(e) = engine.lock().await.take() {
        e.stop().await;
    }
    served?;
    Ok(exit::OK)
}

/// How long a stdio session may take to end after SIGINT or SIGTERM.
const SESSION_GRACE: Duration = Duration::from_millis(500);

/// Serves the stdio session until its client leaves or a signal stops the
/// server. A session reading a terminal (a person trying `serve`) sits in a
/// blocking read that no signal ends, so after [`SESSION_GRACE`] it is left
/// behind and the process exits; and the session's "cancelled" is what a
/// stop means, not an error.
async fn session_until_stopped(
    handle: JobsHandle,
    stop: &CancellationToken,
) -> Result<(), mcp::ServeError> {
    let session = mcp::serve_stdio(handle, stop.clone());
    tokio::pin!(session);
    let served = tokio::select! {
        served = &mut session => served,
        () = stop.cancelled() => tokio::time::timeout(SESSION_GRACE, &mut session)
            .await
            .unwrap_or(Ok(())),
    };
    match served {
        Err(e) if stop.is_cancelled() => {
            tracing::debug!(error = %e, "stdio session ended by the stop");
            Ok(())
        }
        other => other,
    }
}

fn is_locked(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Store(StoreError::Locked { .. })
            | EngineError::Jobs(JobError::Store(StoreError::Locked { .. }))
    )
}

/// Waits until no process holds the data directory, then starts the engine
/// here and points the MCP server at it.
async fn take_over(
    settings: Settings,
    handle: JobsHandle,
    engine: Arc<Mutex<Option<Engine>>>,
    stop: CancellationToken,
) {
    // The engine was just found locked: wait once before the first try.
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(TAKEOVER_EVERY) => {}
    }
    let attempt = || async {
        // Hold the slot while starting, so shutdown cannot miss the engine.
        let mut slot = engine.lock().await;
        if stop.is_cancelled() {
            return Ok(());
        }
        match start_engine(settings.clone(), stop.clone()).await {
            Ok(e) => {
                tracing::info!("the engine's process ended; running the engine here now");
                handle.replace(e.manager.clone());
                *slot = Some(e);
                Ok(())
            }
            Err(e) => {
                if !is_locked(&e) {
                    tracing::warn!(error = %e, "cannot take over the engine; retrying");
                }
                Err(e)
            }
        }
    };
    // Every failure is worth another try: the lock's holder may end at any
    // time, and other failures (a port still in use) may pass too. Only
    // shutdown ends the loop, which is then all that `Err` can mean.
    let _ = TAKEOVER
        .run_until_cancelled("taking over the engine", &stop, |_| true, attempt)
        .await;
}

fn http_guard(settings: &Settings) -> Result<Guard, CliError> {
    let token = settings.http_token.as_ref().ok_or_else(|| {
        CliError::Usage(
            "serve --http needs a bearer token: set DELEGATE_HTTP_TOKEN, or \
             DELEGATE_HTTP_TOKEN_FILE to a file holding it (at least 16 characters)"
                .into(),
        )
    })?;
    Ok(Guard::new(
        token.expose(),
        &settings.allowed_hosts,
        &settings.allowed_origins,
    ))
}

/// Cancels `stop` on SIGINT or SIGTERM.
async fn stop_on_signal(stop: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
    stop.cancel();
}
