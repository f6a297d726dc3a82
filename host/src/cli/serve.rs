//! `serve`: the engine plus MCP on stdio (until the client closes stdin) or
//! on streamable HTTP (until SIGINT or SIGTERM).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::start_engine;
use crate::mcp::{self, Guard};

use super::exit::{self, CliError};

/// Runs the server.
pub async fn run(settings: Settings, http: Option<SocketAddr>) -> Result<u8, CliError> {
    // Check what HTTP needs before starting anything.
    let guard = match http {
        Some(_) => Some(http_guard(&settings)?),
        None => None,
    };
    let listener = match http {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| CliError::Listen {
                    addr: addr.to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let stop = CancellationToken::new();
    let engine = start_engine(settings, stop.clone()).await?;
    let signals = tokio::spawn(stop_on_signal(stop.clone()));
    let served = match (listener, guard) {
        (Some(listener), Some(guard)) => {
            let local = listener.local_addr().ok();
            if let Some(addr) = local {
                // The one line a supervisor (or a test) waits for.
                eprintln!(
                    "delegate-host: MCP over streamable HTTP at http://{addr}{}",
                    mcp::http::MCP_PATH
                );
            }
            mcp::http::serve(listener, engine.manager.clone(), guard, stop.clone())
                .await
                .map_err(mcp::ServeError::from)
        }
        _ => {
            tracing::info!("serving MCP on stdio");
            mcp::serve_stdio(engine.manager.clone(), stop.clone()).await
        }
    };
    signals.abort();
    engine.stop().await;
    served?;
    Ok(exit::OK)
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
