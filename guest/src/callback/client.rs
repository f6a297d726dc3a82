//! `CallbackClient`: the manifest, the artifacts upload and the result, each
//! a request retried within its budget.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use delegate_proto::JobResult;
use delegate_proto::api::{self, ArtifactsAck, JobSpec, ResultAck};
use delegate_proto::bootstrap::{self, CallbackAddress};
use delegate_proto::manifest::MAX_MANIFEST_BYTES;
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use super::http::{self, Endpoint, Failure, body_timeout, with_retries};
use super::uplink::Uplink;
use super::{CallbackError, CallbackOptions};

/// Largest JSON acknowledgement read from the host (artifact entry lists can
/// be long).
const MAX_ACK_BYTES: usize = 8 * 1024 * 1024;

/// A client of one job's callback API. Cheap to clone; every clone shares one
/// connection pool.
#[derive(Clone)]
pub struct CallbackClient {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) opts: Arc<CallbackOptions>,
    /// `JobSpec::max_artifact_bytes` once the spec was fetched (0: unknown).
    max_artifact_bytes: Arc<AtomicU64>,
}

impl std::fmt::Debug for CallbackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Endpoint's Debug hides the token.
        f.debug_struct("CallbackClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl CallbackClient {
    /// A client for job `job_id` at `base_url` (`http://` or `https://`,
    /// optionally with a path prefix), authenticating with `token`.
    pub fn new(
        base_url: &str,
        job_id: &str,
        token: String,
        opts: CallbackOptions,
    ) -> Result<Self, CallbackError> {
        if !api::is_valid_job_id(job_id) {
            return Err(CallbackError::InvalidJobId {
                job_id: job_id.to_string(),
            });
        }
        let (base, socket) = match bootstrap::callback_address(base_url) {
            Ok(CallbackAddress::Unix(path)) => (UNIX_BASE.to_string(), Some(path)),
            Ok(CallbackAddress::Http(_)) => (check_base_url(base_url)?, None),
            Err(reason) => {
                return Err(CallbackError::InvalidUrl {
                    url: base_url.to_string(),
                    reason: reason.to_string(),
                });
            }
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .user_agent(concat!("delegate-guest/", env!("CARGO_PKG_VERSION")))
            // The callback API is reached directly; a proxy from the VM's
            // environment would only see the token.
            .no_proxy();
        if let Some(path) = socket {
            // Every request goes over the host's socket (the local sandbox
            // has no network); the URL only carries the paths.
            builder = builder.unix_socket(path);
        }
        let client = builder.build().map_err(CallbackError::Client)?;
        let endpoint = Endpoint::new(client, base, job_id.to_string(), &token)?;
        Ok(CallbackClient {
            endpoint: Arc::new(endpoint),
            opts: Arc::new(opts),
            max_artifact_bytes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The job this client serves.
    pub fn job_id(&self) -> &str {
        &self.endpoint.job_id
    }

    /// `GET manifest`: the job's spec. Retried with backoff while the host is
    /// unreachable or answers 5xx, up to `fetch_retry.budget`; 401/403
    /// ([`CallbackError::Unauthorized`]) and 404 ([`CallbackError::NotFound`])
    /// are not retried.
    pub async fn fetch_spec(&self) -> Result<JobSpec, CallbackError> {
        const OP: &str = "GET manifest";
        let path = api::manifest_path(self.job_id());
        let spec: JobSpec = with_retries(OP, &self.opts.fetch_retry, false, || async {
            let resp = self
                .endpoint
                .request(Method::GET, &path)
                .timeout(self.opts.request_timeout)
                .send()
                .await
                .map_err(|e| Failure::from_reqwest(&e))?;
            http::read_json(OP, resp, MAX_MANIFEST_BYTES + 64 * 1024).await
        })
        .await?;
        if spec.job_id != self.job_id() {
            return Err(CallbackError::Protocol {
                op: OP,
                detail: format!(
                    "the host sent the spec of job {:?}, not of {:?}",
                    spec.job_id,
                    self.job_id()
                ),
            });
        }
        self.max_artifact_bytes
            .store(spec.max_artifact_bytes, Ordering::Relaxed);
        Ok(spec)
    }

    /// Starts the event uplink: a background task on the current tokio
    /// runtime that batches, sends, retries and spools events in `spool_dir`.
    /// See [`Uplink`].
    pub fn start_uplink(&self, spool_dir: PathBuf) -> Uplink {
        Uplink::start(self.clone(), spool_dir)
    }

    /// `PUT artifacts`: streams the tar.gz at `tar_gz` from disk (it is never
    /// read into memory), with its length, retried on transient failures.
    /// 413 gives [`CallbackError::TooLarge`] with the host's message. After
    /// [`CallbackClient::fetch_spec`], a file over the spec's
    /// `max_artifact_bytes` is refused the same way without a request: a host
    /// that answers 413 before reading the body often resets the connection
    /// under the upload, and the answer then only arrives on a later attempt.
    pub async fn upload_artifacts(&self, tar_gz: &Path) -> Result<ArtifactsAck, CallbackError> {
        let path = api::artifacts_path(self.job_id());
        self.put_file("PUT artifacts", &path, tar_gz, "application/gzip")
            .await
    }

    /// Streams the file at `file` to `api_path` with `PUT` (never read into
    /// memory), retried on transient failures; see
    /// [`CallbackClient::upload_artifacts`] for the size check.
    pub(crate) async fn put_file<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        api_path: &str,
        file: &Path,
        content_type: &'static str,
    ) -> Result<T, CallbackError> {
        let io_err = |source| CallbackError::Io {
            op: "reading an upload",
            path: file.to_path_buf(),
            source,
        };
        let size = tokio::fs::metadata(file).await.map_err(io_err)?.len();
        let max = self.max_artifact_bytes.load(Ordering::Relaxed);
        if max > 0 && size > max {
            return Err(CallbackError::TooLarge {
                op,
                message: format!("the upload is {size} bytes; the host accepts at most {max}"),
            });
        }
        let timeout = body_timeout(self.opts.request_timeout, size, self.opts.upload_min_rate);
        with_retries(op, &self.opts.upload_retry, false, || async {
            // Reopened per attempt: a retry sends the file from its start.
            let body = tokio::fs::File::open(file)
                .await
                .map_err(|e| Failure::Fatal(io_err(e)))?;
            let resp = self
                .endpoint
                .request(Method::PUT, api_path)
                .header(CONTENT_TYPE, content_type)
                .header(CONTENT_LENGTH, size)
                .timeout(timeout)
                .body(reqwest::Body::from(body))
                .send()
                .await
                .map_err(|e| Failure::from_reqwest(&e))?;
            http::read_json(op, resp, MAX_ACK_BYTES).await
        })
        .await
    }

    /// `POST result`: retried until the host acknowledges it or the budget is
    /// spent. 409/410 ([`CallbackError::JobFinal`]) mean the job was already
    /// final; with `after_lost_response` set, our own earlier attempt most
    /// likely made it final (its answer was lost), so the result is stored.
    ///
    /// Send it only after [`Uplink::flush`]: once the result is stored the
    /// host stops accepting the job's token, events included.
    pub async fn post_result(&self, result: &JobResult) -> Result<ResultAck, CallbackError> {
        const OP: &str = "POST result";
        let body = serde_json::to_vec(result).map_err(|e| CallbackError::Protocol {
            op: OP,
            detail: format!("cannot encode the result: {e}"),
        })?;
        if body.len() > api::MAX_RESULT_BODY {
            return Err(CallbackError::TooLarge {
                op: OP,
                message: format!(
                    "the result is {} bytes, the host accepts at most {}",
                    body.len(),
                    api::MAX_RESULT_BODY
                ),
            });
        }
        let path = api::result_path(self.job_id());
        with_retries(OP, &self.opts.result_retry, true, || async {
            let resp = self
                .endpoint
                .request(Method::POST, &path)
                .header(CONTENT_TYPE, "application/json")
                .timeout(self.opts.request_timeout)
                .body(body.clone())
                .send()
                .await
                .map_err(|e| Failure::from_reqwest(&e))?;
            http::read_json(OP, resp, MAX_ACK_BYTES).await
        })
        .await
    }
}

/// The base URL of requests sent over a Unix socket.
const UNIX_BASE: &str = "http://localhost";

/// Checks the base URL and strips trailing slashes, so `base + path` is right.
fn check_base_url(base_url: &str) -> Result<String, CallbackError> {
    let invalid = |reason: &str| CallbackError::InvalidUrl {
        url: base_url.to_string(),
        reason: reason.to_string(),
    };
    let url = reqwest::Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(invalid("there is no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "a query or fragment cannot be combined with API paths",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials belong in the token, not the URL"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_normalised() {
        assert_eq!(
            check_base_url("http://10.0.2.2:8765/").unwrap(),
            "http://10.0.2.2:8765"
        );
        assert_eq!(
            check_base_url("https://h.example/prefix/").unwrap(),
            "https://h.example/prefix"
        );
        for bad in ["ftp://x", "not a url", "http://x/?a=b", "http://u:p@x/"] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unix_socket_urls_are_accepted_and_checked() {
        let token = "t".repeat(64);
        let client = CallbackClient::new(
            "unix:///run/delegate/host/callback.sock",
            "job-1",
            token.clone(),
            Default::default(),
        )
        .unwrap();
        assert_eq!(client.endpoint.base, UNIX_BASE);
        let err = CallbackClient::new("unix://relative.sock", "job-1", token, Default::default());
        assert!(matches!(err, Err(CallbackError::InvalidUrl { .. })));
    }

    #[test]
    fn new_refuses_bad_job_ids_and_hides_the_token() {
        let token = "t".repeat(64);
        let err = CallbackClient::new("http://x", "../a", token.clone(), Default::default());
        assert!(matches!(err, Err(CallbackError::InvalidJobId { .. })));
        let client =
            CallbackClient::new("http://x", "job-1", token.clone(), Default::default()).unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains(&token), "{debug}");
        assert!(debug.contains("job-1"), "{debug}");
    }
}
