//! The callback listener's connection settings: how long a connection may
//! take to send a request's head, how long a body may stall between two
//! pieces, how long a connection may wait idle for its next request, and
//! how many connections are held at once. Parsed by clap like every
//! setting ([`ConnArgs`]), resolved into [`ConnSettings`].

use std::time::Duration;

use crate::resolve::{SettingsError, invalid};

/// The connection settings as given (flags and variables alike).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Seconds a callback connection has to send a whole request head once
    /// its first byte came (slow clients are cut).
    #[arg(
        long,
        env = "DELEGATE_CALLBACK_HEADER_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub callback_header_timeout_seconds: u64,
    /// Seconds a request body may stall between two pieces.
    #[arg(
        long,
        env = "DELEGATE_CALLBACK_BODY_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub callback_body_timeout_seconds: u64,
    /// Seconds a callback connection may sit idle between requests.
    #[arg(
        long,
        env = "DELEGATE_CALLBACK_IDLE_TIMEOUT_SECONDS",
        default_value_t = 60
    )]
    pub callback_idle_timeout_seconds: u64,
    /// Most callback connections held at once (lowered to fit the open-file
    /// limit); beyond it the oldest idle one is closed.
    #[arg(
        long,
        env = "DELEGATE_CALLBACK_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub callback_max_connections: usize,
}

/// The connection settings, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSettings {
    /// From a request head's first byte to its end.
    pub header_timeout: Duration,
    /// Longest stall between two pieces of a request body.
    pub body_timeout: Duration,
    /// Longest wait for the next request on an idle connection.
    pub idle_timeout: Duration,
    /// Most connections held at once, before the open-file limit's say.
    pub max_connections: usize,
}

impl ConnArgs {
    /// Checks the settings: every timeout and the cap at least 1.
    pub fn resolve(&self) -> Result<ConnSettings, SettingsError> {
        let secs = |setting: &'static str, n: u64| {
            if n == 0 {
                Err(invalid(setting, "must be at least 1 second"))
            } else {
                Ok(Duration::from_secs(n))
            }
        };
        if self.callback_max_connections == 0 {
            return Err(invalid(
                "DELEGATE_CALLBACK_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        Ok(ConnSettings {
            header_timeout: secs(
                "DELEGATE_CALLBACK_HEADER_TIMEOUT_SECONDS",
                self.callback_header_timeout_seconds,
            )?,
            body_timeout: secs(
                "DELEGATE_CALLBACK_BODY_TIMEOUT_SECONDS",
                self.callback_body_timeout_seconds,
            )?,
            idle_timeout: secs(
                "DELEGATE_CALLBACK_IDLE_TIMEOUT_SECONDS",
                self.callback_idle_timeout_seconds,
            )?,
            max_connections: self.callback_max_connections,
        })
    }
}

impl ConnSettings {
    /// `(variable, value)` pairs for `delegate-host config`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "DELEGATE_CALLBACK_HEADER_TIMEOUT_SECONDS",
                self.header_timeout.as_secs().to_string(),
            ),
            (
                "DELEGATE_CALLBACK_BODY_TIMEOUT_SECONDS",
                self.body_timeout.as_secs().to_string(),
            ),
            (
                "DELEGATE_CALLBACK_IDLE_TIMEOUT_SECONDS",
                self.idle_timeout.as_secs().to_string(),
            ),
            (
                "DELEGATE_CALLBACK_MAX_CONNECTIONS",
                self.max_connections.to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ConnArgs {
        ConnArgs {
            callback_header_timeout_seconds: 10,
            callback_body_timeout_seconds: 30,
            callback_idle_timeout_seconds: 60,
            callback_max_connections: 1024,
        }
    }

    #[test]
    fn zero_is_refused_with_the_setting_named() {
        let mut a = args();
        a.callback_idle_timeout_seconds = 0;
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("DELEGATE_CALLBACK_IDLE_TIMEOUT_SECONDS"), "{e}");
        let mut a = args();
        a.callback_max_connections = 0;
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("DELEGATE_CALLBACK_MAX_CONNECTIONS"), "{e}");
        let s = args().resolve().unwrap();
        assert_eq!(s.header_timeout, Duration::from_secs(10));
        assert_eq!(s.describe().len(), 4);
    }
}
