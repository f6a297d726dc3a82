//! The one error type of the callback transport: what went wrong, for which
//! operation, with the host's own message where it sent one.

use std::path::PathBuf;
use std::time::Duration;

/// Why a callback operation or the bootstrap search failed.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The callback URL cannot be used.
    #[error("callback URL {url:?} is not usable: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The job id could never form a valid path.
    #[error("job id {job_id:?} is not a valid job id (letters, digits and '-', at most 64)")]
    InvalidJobId {
        /// The id as given.
        job_id: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// 401/403: the host does not accept the token for this job.
    #[error("{op}: the host refused the job token (HTTP {status}): {message}")]
    Unauthorized {
        /// The operation, e.g. `GET manifest`.
        op: &'static str,
        /// 401 or 403.
        status: u16,
        /// The host's message.
        message: String,
    },
    /// 404: the host does not know this job.
    #[error("{op}: the host does not know this job (HTTP 404): {message}")]
    NotFound {
        /// The operation.
        op: &'static str,
        /// The host's message.
        message: String,
    },
    /// 409/410: the job is already final on the host; nothing more is accepted.
    #[error("{op}: the job is already final on the host (HTTP {status}): {message}")]
    JobFinal {
        /// The operation.
        op: &'static str,
        /// The status.
        status: u16,
        /// The host's message.
        message: String,
        /// True when an earlier attempt of the same request was sent but its
        /// answer was lost: that attempt probably made the job final itself.
        after_lost_response: bool,
    },
    /// 413 (or a body over the protocol's limit before sending).
    #[error("{op}: too large: {message}")]
    TooLarge {
        /// The operation.
        op: &'static str,
        /// The host's (or the local) message.
        message: String,
    },
    /// Another 4xx the host will answer the same way on a retry.
    #[error("{op}: the host rejected the request (HTTP {status}): {message}")]
    Rejected {
        /// The operation.
        op: &'static str,
        /// The status.
        status: u16,
        /// The host's message.
        message: String,
    },
    /// The host stayed unreachable (or kept failing with 5xx) for the whole
    /// retry budget.
    #[error("{op}: host unreachable after {attempts} attempts in {elapsed:?}: {last}")]
    Unreachable {
        /// The operation.
        op: &'static str,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },
    /// The host answered something this guest does not understand.
    #[error("{op}: protocol error: {detail}")]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A local file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bootstrap source exists but holds no valid bootstrap.
    #[error("bootstrap from {source_name} is invalid: {error}")]
    BadBootstrap {
        /// Where it came from (a path, `fw_cfg`, `SMBIOS serial`).
        source_name: String,
        /// Why it was refused.
        #[source]
        error: delegate_proto::bootstrap::BootstrapError,
    },
    /// A bootstrap file others could read or have planted.
    #[error("bootstrap file {path} is refused: {reason}")]
    InsecureBootstrap {
        /// The file.
        path: PathBuf,
        /// What is wrong with its owner or mode.
        reason: String,
    },
    /// The SMBIOS serial names a job but carries no token, and the file that
    /// should carry the whole bootstrap is not there (yet).
    #[error(
        "the SMBIOS serial names job {job_id} but carries no token; the bootstrap with the \
         token is expected at {} (written by the provider) and is not there",
        run_file.display()
    )]
    TokenMissing {
        /// The job id from the serial.
        job_id: String,
        /// Where the bootstrap was expected.
        run_file: PathBuf,
    },
    /// No source holds a bootstrap; `tried` says what each one held.
    #[error("no bootstrap found; tried: {}", tried.join("; "))]
    NoBootstrap {
        /// One line per source.
        tried: Vec<String>,
    },
}
