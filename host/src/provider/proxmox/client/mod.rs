//! A small client for the Proxmox VE REST API (`/api2/json`).
//!
//! One request is [`PveClient::call_once`]: parameters as form text (query
//! for GET/DELETE), auth headers, and the answer turned into `data` or a
//! typed [`PveError`] carrying PVE's message, from either error shape: a JSON
//! body with `message`/`errors`, or only the HTTP status line's reason (PVE
//! puts the message there, e.g. `500 VM 100 is locked (clone)`), a 401
//! without body, or the proxy's 595/596/597 when a node is unreachable.
//! [`PveClient::call`] adds the retry policy ([`crate::retry`]), retrying
//! only failures that may pass ([`PveError::is_retryable`]: locks, lock
//! timeouts, agent not running, unreachable nodes, 5xx; never a 4xx). Endpoint wrappers live in
//! [`api`], task polling in [`task`].

pub mod api;
pub mod auth;
pub mod error;
pub mod task;
pub mod tls;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

pub use error::{FailureKind, PveError};
pub use task::Upid;
pub use wire::Params;

use super::settings::{Credentials, ProxmoxSettings, TlsSettings};
use crate::retry::RetryPolicy;

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read.
    Get,
    /// Create / action.
    Post,
    /// Update.
    Put,
    /// Remove.
    Delete,
}

impl Method {
    /// The verb.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
    fn is_write(self) -> bool {
        !matches!(self, Method::Get)
    }
}

/// The API client; cheap to clone.
#[derive(Clone)]
pub struct PveClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `https://host:port/api2/json`.
    base: String,
    credentials: Credentials,
    token_header: Option<String>,
    ticket: tokio::sync::Mutex<Option<auth::Ticket>>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.inner.base)
            .field("principal", &self.inner.credentials.principal())
            .finish_non_exhaustive()
    }
}

impl PveClient {
    /// A client for the configured cluster.
    pub fn new(settings: &ProxmoxSettings) -> Result<Self, PveError> {
        Self::build(
            &settings.url,
            settings.credentials.clone(),
            &settings.tls,
            RetryPolicy::default(),
        )
    }

    /// A client with explicit parts (tests use a fast retry policy).
    pub fn build(
        url: &str,
        credentials: Credentials,
        tls: &TlsSettings,
        retry: RetryPolicy,
    ) -> Result<Self, PveError> {
        if tls.insecure {
            tracing::warn!(
                url,
                "PROXMOX_INSECURE=1: the Proxmox API certificate is NOT verified; anyone on the \
                 path can read the API token. Pin it with PROXMOX_FINGERPRINT instead."
            );
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls::client_config(tls)?)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(90))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("delegate-host/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PveError::Tls(e.to_string()))?;
        let token_header = match &credentials {
            Credentials::Token { id, secret } => Some(auth::token_header(id, secret.expose())),
            Credentials::Ticket { .. } => None,
        };
        Ok(PveClient {
            inner: Arc::new(Inner {
                http,
                base: format!("{}/api2/json", url.trim_end_matches('/')),
                credentials,
                token_header,
                ticket: tokio::sync::Mutex::new(None),
                retry,
            }),
        })
    }

    /// The token id or user.
    pub fn principal(&self) -> &str {
        self.inner.credentials.principal()
    }

    /// GET and decode `data`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: Params,
    ) -> Result<T, PveError> {
        let value = self.call(Method::Get, path, params).await?;
        decode(Method::Get, path, value)
    }

    /// A call with the retry policy.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        params: Params,
    ) -> Result<serde_json::Value, PveError> {
        self.inner
            .retry
            .run(path, PveError::is_retryable, || {
                self.call_once(method, path, params.clone())
            })
            .await
    }

    /// One call (a ticket is renewed, and a 401 with a ticket retried once
    /// after logging in again).
    pub async fn call_once(
        &self,
        method: Method,
        path: &str,
        params: Params,
    ) -> Result<serde_json::Value, PveError> {
        if self.inner.token_header.is_some() {
            return self.send(method, path, &params, None).await;
        }
        let ticket = self.ticket(false).await?;
        match self.send(method, path, &params, Some(&ticket)).await {
            Err(PveError::Unauthorized { .. }) => {
                let ticket = self.ticket(true).await?;
                self.send(method, path, &params, Some(&ticket)).await
            }
            other => other,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        ticket: Option<&auth::Ticket>,
    ) -> Result<serde_json::Value, PveError> {
        let url = format!("{}{}", self.inner.base, path);
        let http = &self.inner.http;
        let req = match method {
            Method::Get => http.get(&url).query(&params.0),
            Method::Delete => http.delete(&url).query(&params.0),
            Method::Post => http.post(&url).form(&params.0),
            Method::Put => http.put(&url).form(&params.0),
        };
        let req = auth::apply(
            req,
            self.inner.token_header.as_deref(),
            ticket,
            method.is_write(),
        );
        let resp = req.send().await.map_err(|source| PveError::Transport {
            method: method.as_str(),
            path: path.to_string(),
            source,
        })?;
        self.answer(method, path, resp).await
    }

    async fn answer(
        &self,
        method: Method,
        path: &str,
        resp: reqwest::Response,
    ) -> Result<serde_json::Value, PveError> {
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).trim().to_string())
            .filter(|r| !r.is_empty())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let bytes = resp.bytes().await.map_err(|source| PveError::Transport {
            method: method.as_str(),
            path: path.to_string(),
            source,
        })?;
        let body: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            let Some(mut body) = body else {
                return Err(PveError::Decode {
                    method: method.as_str(),
                    path: path.to_string(),
                    message: format!("not JSON: {}", String::from_utf8_lossy(&bytes)),
                });
            };
            return Ok(body
                .get_mut("data")
                .map(serde_json::Value::take)
                .unwrap_or(serde_json::Value::Null));
        }
        let message = body
            .as_ref()
            .and_then(|b| b.get("message"))
            .and_then(|m| m.as_str())
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .unwrap_or(reason);
        let errors: BTreeMap<String, String> = body
            .as_ref()
            .and_then(|b| b.get("errors"))
            .and_then(|e| e.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        (k.clone(), text.trim().to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let code = status.as_u16();
        Err(match code {
            401 => PveError::Unauthorized {
                principal: self.principal().to_string(),
                message: if message.is_empty() || message == "Unauthorized" {
                    "the API answered 401 (wrong token/secret, expired or disabled token, or \
                     wrong password)"
                        .into()
                } else {
                    message
                },
            },
            595..=597 => PveError::Unreachable {
                method: method.as_str(),
                path: path.to_string(),
                status: code,
                message,
            },
            _ => PveError::Api {
                method: method.as_str(),
                path: path.to_string(),
                status: code,
                message,
                errors,
            },
        })
    }

    /// The current ticket, fetched or renewed when needed.
    async fn ticket(&self, force: bool) -> Result<auth::Ticket, PveError> {
        let Credentials::Ticket { user, password } = &self.inner.credentials else {
            return Err(PveError::Tls(
                "ticket requested with token credentials".into(),
            ));
        };
        let mut slot = self.inner.ticket.lock().await;
        let now = Instant::now();
        if let Some(t) = slot.as_ref()
            && !force
            && !t.is_due(now)
        {
            return Ok(t.clone());
        }
        // Renew with the old ticket first; PVE treats a valid ticket as a
        // password. Fall back to the real password.
        let mut fresh = None;
        if let Some(old) = slot.as_ref().filter(|_| !force) {
            fresh = self.login(user, &old.ticket).await.ok();
        }
        let fresh = match fresh {
            Some(t) => t,
            None => self.login(user, password.expose()).await?,
        };
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    async fn login(&self, user: &str, password: &str) -> Result<auth::Ticket, PveError> {
        let params = Params::new()
            .text("username", user)
            .text("password", password);
        let value = self
            .send(Method::Post, "/access/ticket", &params, None)
            .await
            .map_err(|e| match e {
                PveError::Unauthorized { .. } | PveError::Api { status: 401, .. } => {
                    PveError::Unauthorized {
                        principal: user.to_string(),
                        message: "authentication failure (wrong user or password)".into(),
                    }
                }
                other => other,
            })?;
        let answer: auth::TicketAnswer = decode(Method::Post, "/access/ticket", value)?;
        Ok(auth::Ticket {
            ticket: answer.ticket,
            csrf: answer.csrf,
            obtained: Instant::now(),
        })
    }

    /// Makes the cached ticket look old, so the next call renews it (tests).
    #[doc(hidden)]
    pub async fn age_ticket(&self, by: Duration) {
        if let Some(t) = self.inner.ticket.lock().await.as_mut() {
            t.obtained = t.obtained.checked_sub(by).unwrap_or(t.obtained);
        }
    }
}

fn decode<T: DeserializeOwned>(
    method: Method,
    path: &str,
    value: serde_json::Value,
) -> Result<T, PveError> {
    serde_json::from_value(value).map_err(|e| PveError::Decode {
        method: method.as_str(),
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// The retry policy applied to PVE's failures, as [`PveClient::call`] does.
#[cfg(test)]
mod retry_tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn err(status: u16, msg: &str) -> PveError {
        PveError::Api {
            method: "POST",
            path: "/p".into(),
            status,
            message: msg.into(),
            errors: BTreeMap::new(),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy::new(4, Duration::from_millis(1), Duration::from_millis(4))
    }

    #[tokio::test]
    async fn retries_locks_until_success() {
        let calls = AtomicU32::new(0);
        let out = fast()
            .run("t", PveError::is_retryable, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(err(500, "VM 1 is locked (clone)"))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn never_retries_4xx_and_stops_after_attempts() {
        let calls = AtomicU32::new(0);
        let e = fast()
            .run::<(), _, _, _>("t", PveError::is_retryable, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(err(400, "Parameter verification failed."))
            })
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = AtomicU32::new(0);
        fast()
            .run::<(), _, _, _>("t", PveError::is_retryable, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(err(500, "got timeout"))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
