//! The gateway's connection settings (`DELEGATE_EGRESS_*` timeouts and
//! caps), resolved into the rules [`crate::net::conn`] serves it under and
//! the per-job cap [`super::quota`] keeps.
//!
//! A guest may open connections and send heads as slowly as it likes, so a
//! connection that has not yet become a tunnel has the header and idle
//! timeouts of any listener. A tunnel, or a forwarded request whose
//! response streams, is a transfer: a long download is legitimate, so only
//! a transfer quiet both ways for the tunnel idle timeout is cut (the same
//! stall ends a forwarded upload).

use crate::net::conn::settings::{Answered, ConnSettings, cap, seconds};
use crate::resolve::SettingsError;

/// The connection settings as given (flags and variables alike).
#[derive(Debug, Clone, clap::Args)]
pub struct EgressConnArgs {
    /// Seconds a gateway connection has to send a whole request head once
    /// its first byte came.
    #[arg(
        long,
        env = "DELEGATE_EGRESS_HEADER_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub egress_header_timeout_seconds: u64,
    /// Seconds a gateway connection that carries no tunnel may sit idle
    /// between requests.
    #[arg(
        long,
        env = "DELEGATE_EGRESS_IDLE_TIMEOUT_SECONDS",
        default_value_t = 60
    )]
    pub egress_idle_timeout_seconds: u64,
    /// Seconds a tunnel (or a forwarded transfer) may carry nothing either
    /// way before it is closed.
    #[arg(
        long,
        env = "DELEGATE_EGRESS_TUNNEL_IDLE_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    pub egress_tunnel_idle_timeout_seconds: u64,
    /// Most gateway connections held at once (TCP and Unix socket
    /// together, lowered to fit the open-file limit); beyond it the oldest
    /// one without a tunnel is closed.
    #[arg(long, env = "DELEGATE_EGRESS_MAX_CONNECTIONS", default_value_t = 1024)]
    pub egress_max_connections: usize,
    /// Most connections one job holds open through the gateway at once
    /// (tunnels and forwarded requests); more are answered 429.
    #[arg(
        long,
        env = "DELEGATE_EGRESS_MAX_CONNECTIONS_PER_JOB",
        default_value_t = 256
    )]
    pub egress_max_connections_per_job: usize,
}

/// The gateway's connection rules, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressConns {
    /// The rules of every gateway connection.
    pub conn: ConnSettings,
    /// Most upstream connections one job holds at once.
    pub per_job: usize,
}

impl EgressConnArgs {
    /// Checks the settings: every timeout and cap at least 1.
    pub fn resolve(&self) -> Result<EgressConns, SettingsError> {
        let tunnel = seconds(
            "DELEGATE_EGRESS_TUNNEL_IDLE_TIMEOUT_SECONDS",
            self.egress_tunnel_idle_timeout_seconds,
        )?;
        Ok(EgressConns {
            conn: ConnSettings {
                header_timeout: seconds(
                    "DELEGATE_EGRESS_HEADER_TIMEOUT_SECONDS",
                    self.egress_header_timeout_seconds,
                )?,
                body_timeout: tunnel,
                idle_timeout: seconds(
                    "DELEGATE_EGRESS_IDLE_TIMEOUT_SECONDS",
                    self.egress_idle_timeout_seconds,
                )?,
                busy_timeout: Some(tunnel),
                answered: Answered::AtBodyEnd,
                // Tunnels and transfers end with the host, as they always
                // did; the job's client reconnects to the next one.
                shutdown_grace: Some(std::time::Duration::ZERO),
                max_connections: cap(
                    "DELEGATE_EGRESS_MAX_CONNECTIONS",
                    self.egress_max_connections,
                )?,
            },
            per_job: cap(
                "DELEGATE_EGRESS_MAX_CONNECTIONS_PER_JOB",
                self.egress_max_connections_per_job,
            )?,
        })
    }
}

impl EgressConns {
    /// `(variable, value)` pairs for `delegate-host config`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let secs = |d: std::time::Duration| d.as_secs().to_string();
        vec![
            (
                "DELEGATE_EGRESS_HEADER_TIMEOUT_SECONDS",
                secs(self.conn.header_timeout),
            ),
            (
                "DELEGATE_EGRESS_IDLE_TIMEOUT_SECONDS",
                secs(self.conn.idle_timeout),
            ),
            (
                "DELEGATE_EGRESS_TUNNEL_IDLE_TIMEOUT_SECONDS",
                secs(self.conn.body_timeout),
            ),
            (
                "DELEGATE_EGRESS_MAX_CONNECTIONS",
                self.conn.max_connections.to_string(),
            ),
            (
                "DELEGATE_EGRESS_MAX_CONNECTIONS_PER_JOB",
                self.per_job.to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> EgressConnArgs {
        EgressConnArgs {
            egress_header_timeout_seconds: 10,
            egress_idle_timeout_seconds: 60,
            egress_tunnel_idle_timeout_seconds: 600,
            egress_max_connections: 1024,
            egress_max_connections_per_job: 256,
        }
    }

    #[test]
    fn tunnels_are_cut_only_when_quiet_and_zero_is_refused_by_name() {
        let s = args().resolve().unwrap();
        assert_eq!(s.conn.busy_timeout, Some(s.conn.body_timeout));
        assert_eq!(s.conn.answered, Answered::AtBodyEnd);
        assert_eq!(s.describe().len(), 5);
        let mut a = args();
        a.egress_max_connections_per_job = 0;
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("DELEGATE_EGRESS_MAX_CONNECTIONS_PER_JOB"), "{e}");
        let mut a = args();
        a.egress_tunnel_idle_timeout_seconds = 0;
        let e = a.resolve().unwrap_err().to_string();
        assert!(
            e.contains("DELEGATE_EGRESS_TUNNEL_IDLE_TIMEOUT_SECONDS"),
            "{e}"
        );
    }
}
