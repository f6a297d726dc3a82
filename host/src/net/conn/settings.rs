//! One listener's connection rules, checked: how long a connection may take
//! to send a request's head, how long a body may stall, how long it may
//! wait idle for its next request, how long one busy with a request may go
//! without a byte either way, when a request counts as answered, and how
//! many connections are held at once. Each listener declares its own
//! settings (clap, like every setting) and resolves them into these.

use std::time::Duration;

use crate::resolve::{SettingsError, invalid};

/// When a request stops counting as being answered: from then on the idle
/// timeout applies again and the connection may be closed for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// When the response's head is sent: a client that stops reading the
    /// body can then not hold its connection beyond the idle timeout.
    AtHead,
    /// When the response's body has ended: long streams (MCP's SSE, a
    /// proxied download) stay answered however quiet they are, bounded by
    /// [`ConnSettings::busy_timeout`] where one is set.
    AtBodyEnd,
}

/// A listener's connection rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSettings {
    /// From a request head's first byte to its end.
    pub header_timeout: Duration,
    /// Longest stall between two pieces of a request body.
    pub body_timeout: Duration,
    /// Longest wait for the next request on an idle connection.
    pub idle_timeout: Duration,
    /// Longest time a connection answering a request (or carrying a
    /// tunnel) may send and receive nothing; `None`: no limit.
    pub busy_timeout: Option<Duration>,
    /// When a request counts as answered.
    pub answered: Answered,
    /// At shutdown, how long requests being answered may take to finish;
    /// `None`: as long as they need (the service ends them itself).
    pub shutdown_grace: Option<Duration>,
    /// Most connections held at once, before the open-file limit's say.
    pub max_connections: usize,
}

/// `n` seconds of the setting named `setting`, at least one.
pub fn seconds(setting: &'static str, n: u64) -> Result<Duration, SettingsError> {
    if n == 0 {
        Err(invalid(setting, "must be at least 1 second"))
    } else {
        Ok(Duration::from_secs(n))
    }
}

/// A connection cap of the setting named `setting`, at least one.
pub fn cap(setting: &'static str, n: usize) -> Result<usize, SettingsError> {
    if n == 0 {
        Err(invalid(setting, "must be at least 1"))
    } else {
        Ok(n)
    }
}
