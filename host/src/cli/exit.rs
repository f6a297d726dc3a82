//! Exit codes and the error type of the command line.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success (for `submit --wait` and `result`: the job succeeded) |
//! | 1    | the job failed, or an unexpected error |
//! | 2    | bad usage or an invalid setting |
//! | 3    | another `delegate-host` owns the data directory |
//! | 4    | no such job, or a file that cannot be read |
//! | 5    | the manifest is invalid |
//! | 6    | the job is not finished (`result`) |
//! | 69   | the provider cannot work here (e.g. no namespaces) |
//! | 124  | the job timed out |
//! | 130  | the job was cancelled (or the wait was interrupted) |
//!
//! The job codes are those `delegate-guest run` uses for the same outcomes.

use std::path::PathBuf;

use delegate_proto::JobState;

use crate::engine::EngineError;
use crate::jobs::JobError;
use crate::mcp::ServeError;
use crate::provider::ProviderError;
use crate::resolve::SettingsError;
use crate::store::StoreError;

/// Success.
pub const OK: u8 = 0;
/// The job failed; also unexpected errors.
pub const FAILURE: u8 = 1;
/// Bad usage or an invalid setting.
pub const USAGE: u8 = 2;
/// Another process owns the data directory.
pub const LOCKED: u8 = 3;
/// No such job or file.
pub const NOT_FOUND: u8 = 4;
/// The manifest is invalid.
pub const INVALID_MANIFEST: u8 = 5;
/// The job is not finished.
pub const NOT_FINISHED: u8 = 6;
/// The provider cannot run here.
pub const UNAVAILABLE: u8 = 69;
/// The job timed out.
pub const TIMEOUT: u8 = 124;
/// The job was cancelled, or waiting was interrupted.
pub const CANCELLED: u8 = 130;

/// The exit code that reports a final job state.
pub fn for_state(state: JobState) -> u8 {
    match state {
        JobState::Success => OK,
        JobState::Timeout => TIMEOUT,
        JobState::Cancelled => CANCELLED,
        _ => FAILURE,
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting is invalid.
    #[error("invalid setting: {0}")]
    Config(#[from] SettingsError),
    /// The store failed (or is locked by another process).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A job operation failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Serving MCP failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A file given on the command line could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The MCP HTTP listener could not be opened.
    #[error("cannot listen on {addr} for MCP over HTTP (--http): {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The command line is inconsistent with the settings.
    #[error("{0}")]
    Usage(String),
    /// Writing to stdout failed (e.g. a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl CliError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => USAGE,
            CliError::Store(StoreError::Locked { .. })
            | CliError::Engine(EngineError::Store(StoreError::Locked { .. }))
            | CliError::Engine(EngineError::Jobs(JobError::Store(StoreError::Locked { .. })))
            | CliError::Job(JobError::Store(StoreError::Locked { .. })) => LOCKED,
            CliError::Job(JobError::NotFound(_)) | CliError::Read { .. } => NOT_FOUND,
            CliError::Job(JobError::InvalidManifest(_)) => INVALID_MANIFEST,
            CliError::Job(JobError::NotFinished(_)) => NOT_FINISHED,
            CliError::Engine(EngineError::Provider(ProviderError::Unavailable(_)))
            | CliError::Job(JobError::Provider(ProviderError::Unavailable(_))) => UNAVAILABLE,
            _ => FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_map_like_the_guest() {
        use delegate_proto::ResultStatus;
        for (state, status) in [
            (JobState::Success, ResultStatus::Success),
            (JobState::Failed, ResultStatus::Failed),
            (JobState::Timeout, ResultStatus::Timeout),
            (JobState::Cancelled, ResultStatus::Cancelled),
        ] {
            assert_eq!(i32::from(for_state(state)), status.exit_code());
        }
    }

    #[test]
    fn errors_map_to_documented_codes() {
        let locked = CliError::Store(StoreError::Locked {
            pid: Some(1),
            data_dir: "/tmp/x".into(),
        });
        assert_eq!(locked.exit_code(), LOCKED);
        assert_eq!(
            CliError::Job(JobError::NotFound("x".into())).exit_code(),
            NOT_FOUND
        );
        assert_eq!(CliError::Usage("x".into()).exit_code(), USAGE);
    }
}
