//! Authentication headers. An API token is one static header. A ticket
//! (`POST /access/ticket`) is a cookie plus, on every write, the
//! `CSRFPreventionToken` header; tickets live two hours, so we renew at
//! 90 minutes by presenting the current ticket as the password (as the PVE
//! web UI does), and fall back to the password when that fails.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// Renew a ticket once it is this old (PVE accepts it for two hours).
pub const TICKET_RENEW_AFTER: Duration = Duration::from_secs(90 * 60);

/// A ticket and its CSRF token.
#[derive(Clone)]
pub struct Ticket {
    /// The `PVEAuthCookie` value.
    pub ticket: String,
    /// Sent as `CSRFPreventionToken` on writes.
    pub csrf: String,
    /// When we got it.
    pub obtained: Instant,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("obtained", &self.obtained)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// Whether it should be renewed before the next call.
    pub fn is_due(&self, now: Instant) -> bool {
        now.duration_since(self.obtained) >= TICKET_RENEW_AFTER
    }
}

/// The `data` of `POST /access/ticket`.
#[derive(Deserialize)]
pub struct TicketAnswer {
    /// The ticket.
    pub ticket: String,
    /// The CSRF token.
    #[serde(rename = "CSRFPreventionToken")]
    pub csrf: String,
}

/// `PVEAPIToken=USER@REALM!NAME=SECRET`.
pub fn token_header(id: &str, secret: &str) -> String {
    format!("PVEAPIToken={id}={secret}")
}

/// Adds the headers for one request.
pub fn apply(
    req: reqwest::RequestBuilder,
    token: Option<&str>,
    ticket: Option<&Ticket>,
    write: bool,
) -> reqwest::RequestBuilder {
    if let Some(header) = token {
        return req.header(reqwest::header::AUTHORIZATION, header);
    }
    match ticket {
        Some(t) => {
            let req = req.header(
                reqwest::header::COOKIE,
                format!("PVEAuthCookie={}", t.ticket),
            );
            if write {
                req.header("CSRFPreventionToken", &t.csrf)
            } else {
                req
            }
        }
        None => req,
    }
}
