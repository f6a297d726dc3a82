//! The store: the only code that writes SQLite and the files of the data
//! directory.
//!
//! Layout of the data directory (0700):
//! ```text
//! delegate.db (+ -wal, -shm)   jobs, events, artifact entries
//! host.lock                    flock'ed by the process that runs the engine
//! logs/<id>/stdout.log         the guest's stdout, append-only
//! logs/<id>/stderr.log         the guest's stderr, append-only
//! logs/<id>/combined.log       both, in arrival order
//! logs/<id>/egress.jsonl       the egress gateway's connection log
//! artifacts/<id>/artifacts.tar.gz
//! space.reserve                given up when the disk is full (space.rs)
//! artifacts/<id>/repo.tar.gz, repo.commit, patch.diff
//! ```
//! One writer connection behind a mutex and a small pool of readers: WAL
//! lets readers go on while the writer writes. Log files are only appended
//! under the writer lock, and only up to lengths that are then committed in
//! the same transaction, so a crash between the two is repaired by cutting
//! the file back to the committed length on the next append.
//!
//! # Calling the store from async code
//!
//! The store's methods block: a write waits for the writer mutex and, while
//! another process (a CLI) holds the database, sleeps between `SQLITE_BUSY`
//! retries (up to ~0.6 s); every call may wait on SQLite's busy timeout and
//! on file I/O. The rule: **async code calls the store only through
//! [`Store::run`]**, which runs the calls on tokio's blocking pool, never on
//! a runtime thread. Code above the job manager that uses the manager's
//! sync API from async code (the MCP layer) goes through
//! `JobManager::blocking`, which is `Store::run` underneath. Sync code (the
//! CLI's person-facing commands, code already on the blocking pool, tests)
//! calls the methods directly.
//!
//! One exception, on purpose: the provider's `on_created` callback records
//! a new VM inline, because the provider must not go on until the VM is on
//! record (a crash right after would otherwise leave it unknown).

mod artifacts;
mod db;
mod egress;
mod error;
mod events;
mod jobs;
mod lock;
mod logs;
mod pool;
mod prefix;
mod repo;
mod retention;
mod row;
mod space;
mod turns;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::retry::RetryPolicy;

pub use artifacts::{
    ArchiveCheck, ArtifactError, ArtifactRead, StagedArchive, hex, inspect_archive,
};
pub use error::StoreError;
pub use events::{EventLimits, EventsApplied};
pub use jobs::{AuthView, JobTx, NewJob, StateView};
pub use lock::HostLock;
pub use repo::{PATCH_FILE, REPO_FILE, StagedFile};
pub use space::{DiskSpace, RESERVE_BYTES, disk_space};
pub use turns::NewTurn;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "delegate.db";
/// Readers kept open for reuse.
const READ_POOL: usize = 4;
/// A write transaction that another process keeps busy (beyond SQLite's
/// own busy timeout): 6 attempts, waits from about 20 ms doubling, about
/// 0.6 s in all.
const BUSY_RETRY: RetryPolicy =
    RetryPolicy::new(6, Duration::from_millis(20), Duration::from_millis(320));

/// Handle to the data directory. Cheap to clone; all clones share one
/// writer connection and one read pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    db_path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the data directory and its database.
    /// A file that is not a delegate database is refused, never changed.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        for dir in [
            data_dir.to_path_buf(),
            data_dir.join("logs"),
            data_dir.join("artifacts"),
        ] {
            make_private_dir(&dir)?;
        }
        let db_path = data_dir.join(DB_FILE);
        refuse_emptied(data_dir, &db_path)?;
        let writer = db::open_writer(&db_path)?;
        let store = Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                db_path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            }),
        };
        // Best effort: a store on a full disk still opens (and says so
        // when a job needs the room).
        if let Err(e) = store.keep_reserve() {
            tracing::warn!(error = %e, "cannot keep the data directory's space reserve");
        }
        Ok(store)
    }

    /// Runs `f` with this store on tokio's blocking pool: how async code
    /// calls the store (see the module doc). A panic in `f` is re-raised.
    pub async fn run<T, E>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::Stopped.into()),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Takes the engine lock (`host.lock`); fails if another process holds it.
    pub fn lock_engine(&self) -> Result<HostLock, StoreError> {
        HostLock::acquire(&self.inner.data_dir)
    }

    fn logs_dir(&self, job_id: &str) -> PathBuf {
        self.inner.data_dir.join("logs").join(job_id)
    }

    fn artifacts_dir(&self, job_id: &str) -> PathBuf {
        self.inner.data_dir.join("artifacts").join(job_id)
    }

    fn sqlite(&self, e: rusqlite::Error) -> StoreError {
        db::sqlite_error(&self.inner.db_path, e)
    }

    /// Runs `f` on a pooled read connection.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match conn {
            Some(c) => c,
            None => db::open_reader(&self.inner.db_path)?,
        };
        let out = f(&conn);
        let mut pool = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
        out
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half transaction behind
        // (rusqlite rolls back on drop), so the connection is still usable.
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in an IMMEDIATE write transaction, retrying with backoff
    /// while another process holds the database lock. `f` may run more than
    /// once, so it must not have effects outside the transaction that a
    /// failed attempt leaves behind.
    fn write<T>(
        &self,
        mut f: impl FnMut(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer();
        let mut attempt = 1;
        loop {
            let result = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(tx) => {
                    let out = f(&tx)?;
                    tx.commit().map(|()| out)
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(out) => return Ok(out),
                Err(e) if db::is_busy(&e) && attempt < BUSY_RETRY.attempts => {
                    std::thread::sleep(BUSY_RETRY.delay(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(self.sqlite(e)),
            }
        }
    }
}

/// Refuses an empty database file in a data directory that already holds
/// jobs' logs or artifacts: only a really new data directory may start
/// from an empty file (SQLite creates one before writing its header).
fn refuse_emptied(data_dir: &Path, db_path: &Path) -> Result<(), StoreError> {
    let empty = std::fs::metadata(db_path).is_ok_and(|m| m.len() == 0);
    if !empty {
        return Ok(());
    }
    let holds_jobs = ["logs", "artifacts"].iter().any(|sub| {
        std::fs::read_dir(data_dir.join(sub)).is_ok_and(|mut entries| entries.next().is_some())
    });
    if holds_jobs {
        return Err(StoreError::Emptied {
            path: db_path.to_path_buf(),
        });
    }
    Ok(())
}

/// Creates `<dir>/<prefix>-<random>.part`, new and readable only by this
/// user (in `dir`, made private too): where an upload streams before it is
/// checked and renamed into place.
fn create_part_file(dir: &Path, prefix: &str) -> Result<PathBuf, StoreError> {
    make_private_dir(dir)?;
    let path = dir.join(format!("{prefix}-{}.part", uuid::Uuid::new_v4().simple()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Creates a directory (and parents) readable only by this user.
fn make_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Removes a directory tree; one that is already gone is fine.
fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}
