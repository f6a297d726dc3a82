//! `serve --http`'s connection settings (`DELEGATE_HTTP_*`), resolved into
//! the rules [`crate::net::conn`] serves MCP over HTTP under.
//!
//! Every request needs the bearer token, but the connection rules hold
//! before any is read: a head must come in time and an idle connection is
//! closed. A tool call answered as an SSE stream, or a client's standing
//! GET stream, counts as being answered until it ends, so the idle timeout
//! never cuts it; a stream nothing can be written to for
//! [`BUSY_TIMEOUT`] (its client stopped reading) is closed.

use std::time::Duration;

use crate::net::conn::settings::{Answered, ConnSettings, cap, seconds};
use crate::resolve::SettingsError;

/// From a request head's first byte to its end.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest stall between two pieces of a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a request being answered may send and receive nothing: far
/// above the SSE keep-alive (rmcp's 15 s), which a reading client always
/// gets.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(300);

/// The settings as given (flags and variables alike).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpConnArgs {
    /// Seconds a `serve --http` connection may sit idle between requests
    /// (a streaming response is never idle).
    #[arg(long, env = "DELEGATE_HTTP_IDLE_TIMEOUT_SECONDS", default_value_t = 60)]
    pub http_idle_timeout_seconds: u64,
    /// Most `serve --http` connections held at once (lowered to fit the
    /// open-file limit); beyond it the oldest idle one is closed.
    #[arg(long, env = "DELEGATE_HTTP_MAX_CONNECTIONS", default_value_t = 256)]
    pub http_max_connections: usize,
}

impl HttpConnArgs {
    /// Checks the settings: the timeout and the cap at least 1.
    pub fn resolve(&self) -> Result<ConnSettings, SettingsError> {
        Ok(ConnSettings {
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            idle_timeout: seconds(
                "DELEGATE_HTTP_IDLE_TIMEOUT_SECONDS",
                self.http_idle_timeout_seconds,
            )?,
            busy_timeout: Some(BUSY_TIMEOUT),
            answered: Answered::AtBodyEnd,
            // rmcp ends its streams at shutdown.
            shutdown_grace: None,
            max_connections: cap("DELEGATE_HTTP_MAX_CONNECTIONS", self.http_max_connections)?,
        })
    }
}

/// `(variable, value)` pairs for `delegate-host config`.
pub fn describe(s: &ConnSettings) -> Vec<(&'static str, String)> {
    vec![
        (
            "DELEGATE_HTTP_IDLE_TIMEOUT_SECONDS",
            s.idle_timeout.as_secs().to_string(),
        ),
        (
            "DELEGATE_HTTP_MAX_CONNECTIONS",
            s.max_connections.to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_stay_answered_and_zero_is_refused_by_name() {
        let mut a = HttpConnArgs {
            http_idle_timeout_seconds: 60,
            http_max_connections: 256,
        };
        let s = a.resolve().unwrap();
        assert_eq!(s.answered, Answered::AtBodyEnd);
        assert_eq!(describe(&s).len(), 2);
        a.http_max_connections = 0;
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("DELEGATE_HTTP_MAX_CONNECTIONS"), "{e}");
    }
}
