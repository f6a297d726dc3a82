//! One job's HTTP endpoint: authenticated requests, how an answer's status
//! maps to "done", "retry" or a typed error, and the retry loop.

use std::future::Future;
use std::time::{Duration, Instant};

use delegate_proto::api::{ApiError, PROTOCOL_HEADER, PROTOCOL_VERSION};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::CallbackError;
use super::backoff::{Backoff, RetryPolicy};

/// Largest error body read from the host; the rest is not worth a log line.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// The job's callback endpoint with its credentials.
pub(crate) struct Endpoint {
    pub(crate) client: reqwest::Client,
    /// Base URL without a trailing `/`.
    pub(crate) base: String,
    pub(crate) job_id: String,
    /// `Bearer <token>`, marked sensitive so hyper never prints it.
    auth: HeaderValue,
}

impl Endpoint {
    pub(crate) fn new(
        client: reqwest::Client,
        base: String,
        job_id: String,
        token: &str,
    ) -> Result<Self, CallbackError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            CallbackError::Protocol {
                op: "job token",
                detail: "the token contains characters not allowed in an HTTP header".into(),
            }
        })?;
        auth.set_sensitive(true);
        Ok(Endpoint {
            client,
            base,
            job_id,
            auth,
        })
    }

    /// A request to `path` (one of `proto::api::*_path`) with the token and
    /// the protocol header.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base, path))
            .header(AUTHORIZATION, self.auth.clone())
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .field("job_id", &self.job_id)
            .field("token", &delegate_proto::REDACTED)
            .finish()
    }
}

/// Why one attempt did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt: the host was unreachable, timed out or said 5xx.
    Transient {
        why: String,
        /// The request may have reached the host and been applied.
        maybe_landed: bool,
    },
    /// The host will answer the same way again.
    Fatal(CallbackError),
}

impl Failure {
    /// A transport error from reqwest.
    pub(crate) fn from_reqwest(err: &reqwest::Error) -> Failure {
        // A connect failure never reached the host; anything later might have.
        Failure::Transient {
            why: error_chain(err),
            maybe_landed: !err.is_connect(),
        }
    }
}

/// An error with its causes, e.g. "error sending request ...: connection refused".
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Reads a successful answer as JSON of `T`, refusing bodies over `max` bytes;
/// any other status becomes a [`Failure`] via [`status_failure`].
pub(crate) async fn read_json<T: DeserializeOwned>(
    op: &'static str,
    resp: Response,
    max: usize,
) -> Result<T, Failure> {
    let status = resp.status();
    if !status.is_success() {
        let body = read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default();
        return Err(status_failure(op, status, &body));
    }
    let body = match read_capped(resp, max).await {
        Ok(body) => body,
        Err(ReadError::TooLong) => {
            return Err(Failure::Fatal(CallbackError::Protocol {
                op,
                detail: format!("the answer is larger than {max} bytes"),
            }));
        }
        Err(ReadError::Transport(e)) => return Err(Failure::from_reqwest(&e)),
    };
    serde_json::from_slice(&body).map_err(|e| {
        Failure::Fatal(CallbackError::Protocol {
            op,
            detail: format!("the answer is not the expected JSON: {e}"),
        })
    })
}

enum ReadError {
    TooLong,
    Transport(reqwest::Error),
}

/// Reads a body chunk by chunk so a hostile or broken host cannot make the
/// guest allocate without bound.
async fn read_capped(mut resp: Response, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLong);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Maps a non-2xx answer: which statuses are retried and which are final.
///
/// 408, 429 and 5xx are retried; 401/403, 404, 409/410 and 413 have their own
/// errors; any other 4xx is a rejection that a retry would not change.
pub(crate) fn status_failure(op: &'static str, status: StatusCode, body: &[u8]) -> Failure {
    let (code, message) = match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => (e.code, e.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            let text = if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            } else {
                text
            };
            (String::new(), text)
        }
    };
    let code_num = status.as_u16();
    if code == "unsupported_protocol" {
        return Failure::Fatal(CallbackError::Protocol {
            op,
            detail: format!(
                "the host does not speak protocol version {PROTOCOL_VERSION} (HTTP {code_num}): {message}"
            ),
        });
    }
    let fatal = match code_num {
        401 | 403 => CallbackError::Unauthorized {
            op,
            status: code_num,
            message,
        },
        404 => CallbackError::NotFound { op, message },
        409 | 410 => CallbackError::JobFinal {
            op,
            status: code_num,
            message,
            after_lost_response: false,
        },
        413 => CallbackError::TooLarge { op, message },
        408 | 429 | 500..=599 => {
            return Failure::Transient {
                why: format!("HTTP {code_num}: {message}"),
                maybe_landed: code_num >= 500,
            };
        }
        _ => CallbackError::Rejected {
            op,
            status: code_num,
            message,
        },
    };
    Failure::Fatal(fatal)
}

/// Runs `attempt` until it succeeds, fails for good, or the policy's budget
/// is spent. With `final_once_landed`, a refusal after an attempt that may
/// have landed is reported as [`CallbackError::JobFinal`] with
/// `after_lost_response`: for `POST result` that refusal most likely means
/// our own earlier attempt made the job final.
pub(crate) async fn with_retries<T, F, Fut>(
    op: &'static str,
    policy: &RetryPolicy,
    final_once_landed: bool,
    mut attempt: F,
) -> Result<T, CallbackError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let start = Instant::now();
    let mut backoff = Backoff::new(policy.initial, policy.max);
    let mut attempts = 0u32;
    let mut maybe_landed = false;
    loop {
        attempts += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Fatal(err)) => {
                return Err(if final_once_landed && maybe_landed {
                    mark_after_lost_response(err)
                } else {
                    err
                });
            }
            Err(Failure::Transient {
                why,
                maybe_landed: landed,
            }) => {
                maybe_landed |= landed;
                let delay = backoff.next_delay();
                let elapsed = start.elapsed();
                if elapsed + delay > policy.budget {
                    return Err(CallbackError::Unreachable {
                        op,
                        attempts,
                        elapsed,
                        last: why,
                    });
                }
                tracing::warn!(op, attempt = attempts, retry_in = ?delay, "{why}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn mark_after_lost_response(err: CallbackError) -> CallbackError {
    match err {
        CallbackError::Unauthorized {
            op,
            status,
            message,
        }
        | CallbackError::JobFinal {
            op,
            status,
            message,
            ..
        } => CallbackError::JobFinal {
            op,
            status,
            message,
            after_lost_response: true,
        },
        other => other,
    }
}

/// The timeout of a request whose body is `bytes` long: the JSON timeout plus
/// time to move the body at `min_rate` bytes per second.
pub(crate) fn body_timeout(base: Duration, bytes: u64, min_rate: u64) -> Duration {
    base + Duration::from_secs(bytes / min_rate.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let body = br#"{"code":"conflict","message":"job is final"}"#;
        let cases: [(u16, &str); 9] = [
            (401, "Unauthorized"),
            (403, "Unauthorized"),
            (404, "NotFound"),
            (409, "JobFinal"),
            (410, "JobFinal"),
            (413, "TooLarge"),
            (400, "Rejected"),
            (503, "transient"),
            (429, "transient"),
        ];
        for (status, kind) in cases {
            let got = status_failure("op", StatusCode::from_u16(status).unwrap(), body);
            let name = match &got {
                Failure::Transient { .. } => "transient".to_string(),
                Failure::Fatal(e) => format!("{e:?}"),
            };
            assert!(name.starts_with(kind), "{status}: {name}");
        }
        let unsupported = br#"{"code":"unsupported_protocol","message":"want 2"}"#;
        let got = status_failure("op", StatusCode::BAD_REQUEST, unsupported);
        assert!(matches!(
            got,
            Failure::Fatal(CallbackError::Protocol { .. })
        ));
    }

    #[test]
    fn host_message_is_kept() {
        let Failure::Fatal(err) = status_failure(
            "PUT artifacts",
            StatusCode::PAYLOAD_TOO_LARGE,
            br#"{"code":"too_large","message":"artifacts exceed 10 bytes"}"#,
        ) else {
            panic!("413 must be fatal")
        };
        assert!(
            err.to_string().contains("artifacts exceed 10 bytes"),
            "{err}"
        );
        let Failure::Fatal(err) = status_failure("op", StatusCode::IM_A_TEAPOT, b"") else {
            panic!()
        };
        assert!(err.to_string().contains("418"), "{err}");
    }
}
