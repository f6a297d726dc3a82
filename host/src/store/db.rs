//! SQLite connections: every PRAGMA, the schema migrations, the check that
//! a file is ours before anything is written to it, and the retry on
//! `SQLITE_BUSY` that lets a CLI process and the engine share the file.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::StoreError;

/// `PRAGMA application_id` of delegate databases ("DLGT").
const APPLICATION_ID: i64 = 0x444C_4754;

/// How long one statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Numbered migrations; `user_version` is how many have run. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, their events and artifact entries.
    r#"
    CREATE TABLE jobs (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        id               TEXT NOT NULL UNIQUE,
        state            TEXT NOT NULL,
        manifest         TEXT NOT NULL,
        agent_type       TEXT NOT NULL,
        task_summary     TEXT NOT NULL,
        persistent       INTEGER NOT NULL,
        token_hash       BLOB NOT NULL,
        isolation        TEXT NOT NULL,
        phase            TEXT,
        progress         REAL,
        message          TEXT,
        error            TEXT,
        error_kind       TEXT,
        created_at       INTEGER NOT NULL,
        started_at       INTEGER,
        running_at       INTEGER,
        completed_at     INTEGER,
        deadline_at      INTEGER NOT NULL,
        last_event_at    INTEGER,
        provisioned_at   INTEGER,
        highest_seq      INTEGER NOT NULL DEFAULT 0,
        vm_provider      TEXT,
        vm_id            TEXT,
        vm_node          TEXT,
        vm_destroyed     INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        result           TEXT,
        result_at        INTEGER,
        stdout_bytes     INTEGER NOT NULL DEFAULT 0,
        stderr_bytes     INTEGER NOT NULL DEFAULT 0,
        combined_bytes   INTEGER NOT NULL DEFAULT 0,
        stdout_guest_end INTEGER NOT NULL DEFAULT 0,
        stderr_guest_end INTEGER NOT NULL DEFAULT 0,
        log_truncated    INTEGER NOT NULL DEFAULT 0,
        archive_size     INTEGER,
        archive_sha256   TEXT
    );
    CREATE INDEX jobs_by_state ON jobs(state, seq);
    CREATE INDEX jobs_cancel_requested ON jobs(cancel_requested) WHERE cancel_requested = 1;
    CREATE TABLE events (
        job_id  TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        time_ms INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        body    TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE artifacts (
        job_id TEXT NOT NULL,
        path   TEXT NOT NULL,
        size   INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (job_id, path)
    ) WITHOUT ROWID;
    "#,
    // 2: follow-up turns of persistent jobs. A turn is a job of its own
    // whose `session_id` names the session's first job (turn 1, whose VM
    // the turns run in); `released_at` on that first job ends its kept VM.
    r#"
    ALTER TABLE jobs ADD COLUMN session_id TEXT;
    ALTER TABLE jobs ADD COLUMN turn INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN released_at INTEGER;
    CREATE UNIQUE INDEX jobs_turns ON jobs(session_id, turn) WHERE session_id IS NOT NULL;
    CREATE INDEX jobs_kept ON jobs(seq)
        WHERE persistent = 1 AND vm_destroyed = 0 AND session_id IS NULL;
    "#,
    // 3: warm pools: idle VMs and their claims (store/pool.rs), and how
    // each job's VM started.
    r#"
    CREATE TABLE pool_vms (
        vm_provider  TEXT NOT NULL,
        vm_id        TEXT NOT NULL,
        vm_node      TEXT,
        class        TEXT NOT NULL,
        template_ver TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('starting', 'ready', 'claimed')),
        job_id       TEXT UNIQUE,
        created_at   INTEGER NOT NULL,
        ready_at     INTEGER,
        claimed_at   INTEGER,
        PRIMARY KEY (vm_provider, vm_id),
        CHECK ((state = 'claimed') = (job_id IS NOT NULL))
    );
    CREATE INDEX pool_vms_ready ON pool_vms(class, state, ready_at);
    ALTER TABLE jobs ADD COLUMN start_kind TEXT;
    ALTER TABLE jobs ADD COLUMN start_ms INTEGER;
    "#,
    // 4: what the provider could not do for a job's VM (a JSON array of
    // sentences), for its status.
    r#"
    ALTER TABLE jobs ADD COLUMN warnings TEXT;
    "#,
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Maps a SQLite error on `path`, telling damage apart from other failures.
pub fn sqlite_error(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: source.to_string(),
        },
        _ => StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// The one row `sql` selects, if any, through the connection's statement
/// cache: `Connection::query_row` prepares the statement anew on every call,
/// which costs more than most of our lookups themselves.
pub fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(map).transpose()
}

/// True for the errors that another connection's lock causes.
pub fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Checks the first bytes of an existing file: an empty file is a database
/// that was never written; anything but the SQLite header is not ours.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    if read == 0 || &header[..read] == b"SQLite format 3\0" {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "the file does not start with the SQLite header".into(),
        })
    }
}

/// Opens the writer connection: checks the file is ours (or new), sets WAL
/// and runs pending migrations.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    check_header(path)?;
    let err = |e| sqlite_error(path, e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;

    // Decide whether the file is ours before changing anything in it.
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(err)?;
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if app_id != APPLICATION_ID && (app_id != 0 || tables > 0) {
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
        });
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }

    if version > 0 {
        check_integrity(&conn, path)?;
    }

    // WAL: readers never wait for the writer; NORMAL sync is durable
    // across process crashes, which is what a restart needs.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("cannot switch to WAL mode (got {mode})"),
        });
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        .map_err(err)?;
    migrate(&conn, version).map_err(err)?;
    Ok(conn)
}

/// Refuses a database with damaged pages before anything is written to
/// it: SQLite opens such a file happily, and the damage surfaced only later,
/// as failed reads of the jobs on the damaged pages. `quick_check` reads
/// every page once (milliseconds for a typical store).
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let damaged = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| damaged(e.to_string()))?;
    let found: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| damaged(e.to_string()))?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(damaged(format!("damaged pages: {}", found.join("; "))))
}

fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let to = i as i64 + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{sql}\nPRAGMA application_id = {APPLICATION_ID};\n\
             PRAGMA user_version = {to};\nCOMMIT;"
        ))?;
    }
    Ok(())
}

/// Opens a read connection (the schema must already be in place).
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let err = |e| sqlite_error(path, e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    Ok(conn)
}
