//! Exit codes and the error type of the command line.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success (for `submit --wait` and `result`: the job succeeded) |
//! | 1    | the job failed, or an unexpected error |
//! | 2    | bad usage, an invalid setting, a file that cannot be read, an ambiguous job id prefix |
//! | 3    | another `delegate-host` owns the data directory |
//! | 4    | no such job |
//! | 5    | the manifest is invalid |
//! | 6    | the job is not finished (`result`) |
//! | 7    | the job cannot be continued or released (not persistent, its VM no longer kept, a turn still running) |
//! | 69   | the provider cannot work here (e.g. no namespaces) |
//! | 124  | the job timed out |
//! | 130  | the job was cancelled (or the wait was interrupted) |
//! | 141  | stdout was closed early (`status ID \| head`); nothing more is said |
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
/// No such job.
pub const NOT_FOUND: u8 = 4;
/// The manifest is invalid.
pub const INVALID_MANIFEST: u8 = 5;
/// The job is not finished.
pub const NOT_FINISHED: u8 = 6;
/// The job cannot be continued or released.
pub const NO_KEPT_VM: u8 = 7;
/// The provider cannot run here.
pub const UNAVAILABLE: u8 = 69;
/// The job timed out.
pub const TIMEOUT: u8 = 124;
/// The job was cancelled, or waiting was interrupted.
pub const CANCELLED: u8 = 130;
/// stdout was closed before everything was written (128 + SIGPIPE, what
/// a shell reports for tools that the signal ends).
pub const CLOSED_OUTPUT: u8 = 141;

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
    /// A job operation failed. Errors that name an MCP tool in their
    /// message arrive as the variants below instead (see `From<JobError>`).
    #[error(transparent)]
    Job(JobError),
    /// No job has this id or id prefix.
    #[error("no job with id {0:?}; `delegate-host list` shows the known ones")]
    NoSuchJob(String),
    /// Several jobs' ids start with the prefix given.
    #[error(
        "{prefix:?} is the start of several job ids: {}{}; give more of the id",
        candidates.join(", "),
        if *more { ", ..." } else { "" }
    )]
    AmbiguousId {
        /// What was typed.
        prefix: String,
        /// Some of the ids it starts.
        candidates: Vec<String>,
        /// More ids match than are named.
        more: bool,
    },
    /// The job has no result yet.
    #[error(
        "job {id} is not finished yet (status {state}); `delegate-host wait {id}` waits for it"
    )]
    NotFinished {
        /// The job.
        id: String,
        /// Its state now.
        state: JobState,
    },
    /// The manifest file is not a manifest (JSON syntax, wrong shape).
    #[error("{}: {message}", path.display())]
    Manifest {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// What is wrong, with line and column for a syntax error.
        message: String,
    },
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
    /// A file or directory named on the command line could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
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
            CliError::Config(_)
            | CliError::Usage(_)
            | CliError::Read { .. }
            | CliError::Write { .. }
            | CliError::AmbiguousId { .. }
            | CliError::Job(JobError::InvalidArgument { .. }) => USAGE,
            CliError::Store(StoreError::Locked { .. })
            | CliError::Engine(EngineError::Store(StoreError::Locked { .. }))
            | CliError::Engine(EngineError::Jobs(JobError::Store(StoreError::Locked { .. })))
            | CliError::Job(JobError::Store(StoreError::Locked { .. })) => LOCKED,
            CliError::NoSuchJob(_) | CliError::Job(JobError::NotFound(_)) => NOT_FOUND,
            CliError::Manifest { .. } | CliError::Job(JobError::InvalidManifest(_)) => {
                INVALID_MANIFEST
            }
            CliError::NotFinished { .. } | CliError::Job(JobError::NotFinished(_)) => NOT_FINISHED,
            CliError::Job(JobError::Session(_)) => NO_KEPT_VM,
            CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => CLOSED_OUTPUT,
            CliError::Engine(EngineError::Provider(ProviderError::Unavailable(_)))
            | CliError::Job(JobError::Provider(ProviderError::Unavailable(_))) => UNAVAILABLE,
            _ => FAILURE,
        }
    }

    /// Whether this error is stdout closing early, which ends the command
    /// quietly (a reader such as `head` has all it wanted).
    pub fn is_closed_output(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

impl From<JobError> for CliError {
    /// The manager words some errors for MCP clients ("list_jobs shows the
    /// known ones"); a person at the command line gets the commands instead.
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound(id) => CliError::NoSuchJob(id),
            e => CliError::Job(e),
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
        let missing_file = CliError::Read {
            path: "nope.json".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(missing_file.exit_code(), USAGE);
        let closed = CliError::Output(std::io::ErrorKind::BrokenPipe.into());
        assert!(closed.is_closed_output());
        assert_eq!(closed.exit_code(), CLOSED_OUTPUT);
    }

    #[test]
    fn messages_name_commands_not_tools() {
        let e = CliError::from(JobError::NotFound("ab12".into())).to_string();
        assert!(
            e.contains("delegate-host list") && !e.contains("list_jobs"),
            "{e}"
        );
        let e = CliError::NotFinished {
            id: "ab12".into(),
            state: JobState::Running,
        }
        .to_string();
        assert!(
            e.contains("delegate-host wait ab12") && !e.contains("wait_for_job"),
            "{e}"
        );
    }
}
