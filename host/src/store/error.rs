//! What can go wrong in the store, with the path or job it concerns.

use std::path::PathBuf;

use delegate_proto::JobState;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("database {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not a SQLite database, or is damaged.
    #[error(
        "{} is not a usable delegate database ({reason}); it was left untouched. \
         Keep a copy of the data directory; `sqlite3 {} .recover` may save its jobs; \
         to start with an empty store, move the file away or set DELEGATE_DATA_DIR to \
         another directory",
        path.display(),
        path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// The database file is empty while the data directory holds the logs
    /// or artifacts of earlier jobs: it was truncated or replaced, and
    /// taking it as a new store would orphan them silently.
    #[error(
        "{} is empty, but the data directory holds the logs or artifacts of earlier jobs: \
         the database was lost or truncated. Nothing was changed. Restore it from a backup, \
         or move the data directory away (keeping it) to start with an empty store",
        path.display()
    )]
    Emptied {
        /// The database file.
        path: PathBuf,
    },
    /// The file is a SQLite database of some other program.
    #[error(
        "{} is a SQLite database that delegate did not create; it was left untouched: \
         set DELEGATE_DATA_DIR to another directory",
        path.display()
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
    },
    /// The database was written by a newer delegate.
    #[error(
        "{} has schema version {found}, newer than this delegate-host knows ({known}); \
         upgrade delegate-host",
        path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// Another process runs the engine on this data directory.
    #[error(
        "another delegate-host (pid {}) is already serving the data directory {}; \
         stop it, or give this one its own DELEGATE_DATA_DIR",
        pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()),
        data_dir.display()
    )]
    Locked {
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
        /// The data directory.
        data_dir: PathBuf,
    },
    /// A file or directory could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No job with this id.
    #[error("no job {0}")]
    NotFound(String),
    /// A state change that proto's transition function refuses (decided
    /// in the job layer, and carried out of the store's transaction so the
    /// transaction rolls back).
    #[error("job {job_id}: {source}")]
    Transition {
        /// The job.
        job_id: String,
        /// The refused transition.
        #[source]
        source: delegate_proto::TransitionError,
    },
    /// A compare-and-set found the job in another state than expected.
    #[error("job {job_id} is no longer {expected}")]
    StateMoved {
        /// The job.
        job_id: String,
        /// The state the change expected.
        expected: JobState,
    },
    /// A stored value no longer parses (a damaged row).
    #[error("job {job_id}: stored {field} is unreadable: {message}")]
    Decode {
        /// The job.
        job_id: String,
        /// The column.
        field: &'static str,
        /// What failed.
        message: String,
    },
    /// The runtime shut down before a store call on its blocking pool ran.
    #[error("the store call was cancelled: the runtime is shutting down")]
    Stopped,
    /// Another follow-up turn of the session took this number first.
    #[error("job {session_id} already has a turn {turn}")]
    TurnTaken {
        /// The session's first job.
        session_id: String,
        /// The number both wanted.
        turn: u32,
    },
    /// A list cursor that this store did not hand out.
    #[error("cursor {0:?} is not one that list_jobs returned")]
    BadCursor(String),
}

impl StoreError {
    /// Whether this failed because the data directory's file system is
    /// full (SQLite's `SQLITE_FULL`, or `ENOSPC`/`EDQUOT` from a file).
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }

    /// The state a refused transition found, if that is what this is.
    pub fn refused_from(&self) -> Option<JobState> {
        match self {
            StoreError::Transition { source, .. } => Some(source.from),
            _ => None,
        }
    }
}
