//! The callback listener's connection settings (`DELEGATE_CALLBACK_*`),
//! resolved into the rules [`crate::net::conn`] serves it under.

use crate::net::conn::settings::{Answered, ConnSettings, cap, seconds};
use crate::resolve::SettingsError;

/// The connection settings as given (flags and variables alike).
#[derive(Debug, Clone, clap::Args)]
pub struct CallbackConnArgs {
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

impl CallbackConnArgs {
    /// Checks the settings: every timeout and the cap at least 1. A held
    /// control request is quiet by design, so busy connections have no
    /// timeout; answers are small, so a request is answered at its head.
    pub fn resolve(&self) -> Result<ConnSettings, SettingsError> {
        Ok(ConnSettings {
            header_timeout: seconds(
                "DELEGATE_CALLBACK_HEADER_TIMEOUT_SECONDS",
                self.callback_header_timeout_seconds,
            )?,
            body_timeout: seconds(
                "DELEGATE_CALLBACK_BODY_TIMEOUT_SECONDS",
                self.callback_body_timeout_seconds,
            )?,
            idle_timeout: seconds(
                "DELEGATE_CALLBACK_IDLE_TIMEOUT_SECONDS",
                self.callback_idle_timeout_seconds,
            )?,
            busy_timeout: None,
            answered: Answered::AtHead,
            // Held control requests are answered at shutdown; uploads
            // under way may finish.
            shutdown_grace: None,
            max_connections: cap(
                "DELEGATE_CALLBACK_MAX_CONNECTIONS",
                self.callback_max_connections,
            )?,
        })
    }
}

/// `(variable, value)` pairs for `delegate-host config`.
pub fn describe(s: &ConnSettings) -> Vec<(&'static str, String)> {
    vec![
        (
            "DELEGATE_CALLBACK_HEADER_TIMEOUT_SECONDS",
            s.header_timeout.as_secs().to_string(),
        ),
        (
            "DELEGATE_CALLBACK_BODY_TIMEOUT_SECONDS",
            s.body_timeout.as_secs().to_string(),
        ),
        (
            "DELEGATE_CALLBACK_IDLE_TIMEOUT_SECONDS",
            s.idle_timeout.as_secs().to_string(),
        ),
        (
            "DELEGATE_CALLBACK_MAX_CONNECTIONS",
            s.max_connections.to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn args() -> CallbackConnArgs {
        CallbackConnArgs {
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
        assert_eq!(describe(&s).len(), 4);
    }
}
