//! Errors of the job manager, each with a message a client can act on.

use delegate_proto::{JobState, ManifestError};

use crate::provider::ProviderError;
use crate::store::StoreError;

/// Why a job manager operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job with this id (in this data directory).
    #[error("no job with id {0:?}; list_jobs shows the known ones")]
    NotFound(String),
    /// The manifest broke a rule.
    #[error(transparent)]
    InvalidManifest(#[from] ManifestError),
    /// An argument is malformed (a cursor, a path, a limit).
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What is wrong with which argument.
        what: String,
    },
    /// A follow-up turn or a release was refused: the job is not
    /// persistent, its VM is no longer kept, or a turn still runs.
    #[error("{0}")]
    Session(String),
    /// The job has no result yet.
    #[error("job is not finished yet (status {0}); wait_for_job waits for it")]
    NotFinished(JobState),
    /// Something is bigger than allowed.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The engine is not running in this process (a client-only manager
    /// cannot do this), or it has been shut down.
    #[error("the job engine is not running: {0}")]
    EngineStopped(&'static str),
}
