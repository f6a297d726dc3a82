//! A damaged store is refused, never taken as new and never changed: a
//! database file emptied under a data directory that holds jobs, and one
//! with a damaged page, both stop the host (and the CLI) with a message that
//! says what to do. A really new data directory still starts.

use std::process::Command;

use delegate_host::provider::Isolation;
use delegate_host::store::{NewJob, Store, StoreError};
use delegate_proto::JobManifest;
use delegate_proto::LogStream;
use delegate_proto::event::{Event, EventKind, LogChunk};

const BIN: &str = env!("CARGO_BIN_EXE_delegate-host");

/// A store with `n` jobs, each with a line of log, closed again.
fn store_with_jobs(dir: &std::path::Path, n: usize) {
    let store = Store::open(dir).unwrap();
    for i in 0..n {
        let id = format!("job-{i}");
        store
            .insert_job(&NewJob {
                id: id.clone(),
                manifest: JobManifest::from_value(serde_json::json!({
                    "task": format!("task {i} {}", "x".repeat(500)),
                    "agentType": "script",
                }))
                .unwrap(),
                token_hash: [7; 32],
                created_at: 1,
                deadline_at: 60_000,
                isolation: Isolation::ProcessSandbox,
            })
            .unwrap();
        let line = Event {
            seq: 1,
            time_ms: 0,
            kind: EventKind::Log(LogChunk::new(LogStream::Stdout, 0, b"hello\n")),
        };
        let limits = delegate_host::store::EventLimits {
            max_log_bytes: 1 << 20,
            max_event_rows: 10,
            max_note_bytes: 1024,
        };
        store
            .apply_events(&id, &[line], limits, 2, |_, _| Ok(()))
            .unwrap();
    }
}

/// `delegate-host list` on the data directory: exit code and stderr.
fn cli_list(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("list")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("DELEGATE_DATA_DIR", dir)
        .env("DELEGATE_PROVIDER", "local")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_emptied_database_beside_old_jobs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_jobs(dir.path(), 2);
    let db = dir.path().join("delegate.db");
    std::fs::File::create(&db).unwrap(); // truncates to zero bytes
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, StoreError::Emptied { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("Restore it from a backup"), "{msg}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left untouched");
    assert!(dir.path().join("logs/job-0/stdout.log").exists());
    let (code, stderr) = cli_list(dir.path());
    assert_ne!(code, 0);
    assert!(
        stderr.contains("is empty, but the data directory holds"),
        "{stderr}"
    );
}

#[test]
fn a_really_new_data_directory_may_start_from_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("delegate.db")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.list_jobs(None, 10, None).is_ok());
}

#[test]
fn a_database_with_a_damaged_page_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_jobs(dir.path(), 200);
    let db = dir.path().join("delegate.db");
    // Everything into the main file, so the damage is not masked by the WAL.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&db).unwrap();
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    assert!(bytes.len() >= page * 8, "the store spans pages");
    // Scribble over the third page, a b-tree page of the jobs table.
    for b in &mut bytes[page * 2..page * 3] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(".recover"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "left untouched");
    let (code, stderr) = cli_list(dir.path());
    assert_ne!(code, 0);
    assert!(
        stderr.contains("not a usable delegate database"),
        "{stderr}"
    );
}
