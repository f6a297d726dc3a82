//! The store on real SQLite in temporary directories: job rows, states,
//! listing, events and logs, locks, damaged files, retention.

use std::sync::Arc;

use delegate_host::jobs::rules::{self, ResultApplied};
use delegate_host::model::{LogSelector, UnixMs};
use delegate_host::provider::{Isolation, VmRef};
use delegate_host::store::{EventLimits, NewJob, Store, StoreError};
use delegate_proto::event::{Event, EventKind, LogChunk, LogStream, Phase};
use delegate_proto::outcome::ErrorKind;
use delegate_proto::{JobManifest, JobState, ResultStatus};

use crate::support::wire::result;

fn manifest(task: &str) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": task,
        "agentType": "script",
        "env": {"API_KEY": "sekrit-value", "PLAIN": "x"},
        "secrets": ["API_KEY"]
    }))
    .unwrap()
}

fn new_job(store: &Store, id: &str, created_at: UnixMs) {
    store
        .insert_job(&NewJob {
            id: id.into(),
            manifest: manifest(&format!("task of {id}\nsecond line")),
            token_hash: [7; 32],
            created_at,
            deadline_at: created_at + 60_000,
            isolation: Isolation::ProcessSandbox,
        })
        .unwrap();
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        time_ms: seq,
        kind,
    }
}

fn log(seq: u64, stream: LogStream, offset: u64, text: &str) -> Event {
    event(
        seq,
        EventKind::Log(LogChunk::new(stream, offset, text.as_bytes())),
    )
}

const LIMITS: EventLimits = EventLimits {
    max_log_bytes: 1 << 20,
    max_event_rows: 1000,
    max_note_bytes: 64 << 10,
};

#[test]
fn jobs_round_trip_and_list_newest_first_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..5 {
        new_job(&store, &format!("job-{i}"), 1000 + i);
    }
    let rec = store.get_job("job-2").unwrap();
    assert_eq!(rec.state, JobState::Pending);
    assert_eq!(rec.manifest.env["API_KEY"], "sekrit-value");
    assert_eq!(rec.isolation, Isolation::ProcessSandbox);
    assert!(matches!(
        store.get_job("nope"),
        Err(StoreError::NotFound(_))
    ));

    let page = store.list_jobs(None, 2, None).unwrap();
    let ids: Vec<_> = page.items.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(ids, ["job-4", "job-3"]);
    assert_eq!(page.items[0].task, "task of job-4");
    let page2 = store
        .list_jobs(None, 2, page.next_cursor.as_deref())
        .unwrap();
    let ids: Vec<_> = page2.items.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(ids, ["job-2", "job-1"]);
    let page3 = store
        .list_jobs(None, 2, page2.next_cursor.as_deref())
        .unwrap();
    assert_eq!(page3.items.len(), 1);
    assert_eq!(page3.next_cursor, None);

    rules::transition(&store, "job-1", JobState::Cancelled, None, 2000).unwrap();
    let cancelled = store
        .list_jobs(Some(JobState::Cancelled), 10, None)
        .unwrap();
    assert_eq!(cancelled.items.len(), 1);
    assert_eq!(cancelled.items[0].job_id, "job-1");
    assert!(cancelled.items[0].completed_at.is_some());
    for bad in ["x", "c", "c-1", "c0", "9"] {
        assert!(
            matches!(
                store.list_jobs(None, 2, Some(bad)),
                Err(StoreError::BadCursor(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn a_final_state_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    new_job(&store, "j", 1);
    rules::transition(&store, "j", JobState::Provisioning, None, 2).unwrap();
    rules::transition(&store, "j", JobState::Running, None, 3).unwrap();
    let rec = rules::transition(
        &store,
        "j",
        JobState::Cancelled,
        Some(("cancelled by a client", ErrorKind::Cancelled)),
        4,
    )
    .unwrap();
    assert_eq!(rec.state, JobState::Cancelled);
    assert_eq!(rec.completed_at, Some(4));
    assert_eq!(rec.error_kind, Some(ErrorKind::Cancelled));
    // Secrets are gone from the stored manifest once the job is over.
    assert_eq!(rec.manifest.env["API_KEY"], delegate_proto::REDACTED);

    for to in JobState::ALL {
        let err = rules::transition(&store, "j", to, None, 5).unwrap_err();
        assert_eq!(err.refused_from(), Some(JobState::Cancelled), "{to}");
    }
    // A success arriving in the grace period is kept, the state is not.
    assert_eq!(
        rules::store_result(&store, "j", &result(ResultStatus::Success), 10, 100).unwrap(),
        ResultApplied::Late(JobState::Cancelled)
    );
    assert_eq!(
        rules::store_result(&store, "j", &result(ResultStatus::Success), 11, 100).unwrap(),
        ResultApplied::Duplicate(JobState::Cancelled)
    );
    let rec = store.get_job("j").unwrap();
    assert_eq!(rec.state, JobState::Cancelled);
    assert_eq!(rec.completed_at, Some(4));
    assert!(rec.result.is_some());

    // After the grace period nothing is taken.
    new_job(&store, "k", 1);
    rules::transition(&store, "k", JobState::Timeout, None, 5).unwrap();
    assert_eq!(
        rules::store_result(&store, "k", &result(ResultStatus::Success), 5_000, 100).unwrap(),
        ResultApplied::Stale(JobState::Timeout)
    );
    assert!(store.get_job("k").unwrap().result.is_none());
}

#[test]
fn results_end_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    new_job(&store, "j", 1);
    rules::transition(&store, "j", JobState::Provisioning, None, 2).unwrap();
    let mut r = result(ResultStatus::Failed);
    r.exit_code = Some(3);
    r.error = Some("exit status 3".into());
    assert_eq!(
        rules::store_result(&store, "j", &r, 9, 0).unwrap(),
        ResultApplied::Final(JobState::Failed)
    );
    let rec = store.get_job("j").unwrap();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.error.as_deref(), Some("exit status 3"));
    assert_eq!(rec.error_kind, Some(ErrorKind::Exit));
    assert_eq!(rec.result.unwrap().exit_code, Some(3));
}

#[test]
fn events_are_deduplicated_in_order_and_logs_read_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    new_job(&store, "j", 1);
    rules::transition(&store, "j", JobState::Provisioning, None, 2).unwrap();
    let batch1 = vec![
        event(
            1,
            EventKind::Phase {
                phase: Phase::Running,
                message: Some("running bash".into()),
            },
        ),
        log(2, LogStream::Stdout, 0, "hello "),
        log(3, LogStream::Stderr, 0, "warn\n"),
    ];
    let out = rules::apply_events(&store, "j", &batch1, LIMITS, 10).unwrap();
    assert_eq!(out.highest_seq, 3);
    assert_eq!(out.state, Some(JobState::Running));
    assert!(out.state_changed && out.log_changed && out.progress_changed);

    // The same batch again changes nothing.
    let again = rules::apply_events(&store, "j", &batch1, LIMITS, 11).unwrap();
    assert_eq!((again.highest_seq, again.applied), (3, 0));

    // A batch after a gap is not taken: the ack says where to resume.
    let gap = vec![log(5, LogStream::Stdout, 6, "late")];
    assert_eq!(
        rules::apply_events(&store, "j", &gap, LIMITS, 12)
            .unwrap()
            .highest_seq,
        3
    );
    // Overlapping log bytes (a guest that re-sent from an older offset)
    // are kept once.
    let next = vec![
        log(4, LogStream::Stdout, 3, "lo world\n"),
        event(
            5,
            EventKind::Progress {
                percent: Some(50.0),
                message: "half".into(),
            },
        ),
        event(
            6,
            EventKind::Heartbeat {
                stdout_bytes: 12,
                stderr_bytes: 5,
            },
        ),
    ];
    let out = rules::apply_events(&store, "j", &next, LIMITS, 13).unwrap();
    assert_eq!(out.highest_seq, 6);

    let rec = store.get_job("j").unwrap();
    assert_eq!(rec.phase, Some(Phase::Running));
    assert_eq!(rec.progress, Some(50.0));
    assert_eq!(rec.message.as_deref(), Some("half"));
    assert_eq!(rec.last_event_at, Some(13));
    assert_eq!(rec.highest_seq, 6);

    let stdout = store
        .read_log("j", LogSelector::Stream(LogStream::Stdout), 0, 1024)
        .unwrap()
        .unwrap();
    assert_eq!(stdout.data, b"hello world\n");
    assert!(!stdout.complete);
    let part = store
        .read_log("j", LogSelector::Combined, 0, 4)
        .unwrap()
        .unwrap();
    assert_eq!(part.data, b"hell");
    let rest = store
        .read_log("j", LogSelector::Combined, part.next_cursor, 1024)
        .unwrap()
        .unwrap();
    assert_eq!(rest.data, b"o warn\nworld\n");
    assert!(
        store
            .read_log("j", LogSelector::Combined, 10_000, 10)
            .unwrap()
            .is_none(),
        "a cursor past the end is refused"
    );
    // Tails: the last bytes of each log, with where they start; a tail
    // longer than the log is the whole log; an empty one reads nothing.
    let [tail, all, again] = store
        .read_log_tails(
            "j",
            [
                LogSelector::Stream(LogStream::Stdout),
                LogSelector::Combined,
                LogSelector::Stream(LogStream::Stdout),
            ],
            6,
        )
        .unwrap();
    assert_eq!((tail.data.as_slice(), tail.start), (&b"world\n"[..], 6));
    assert_eq!(tail.next_cursor, 12);
    assert_eq!((all.data.as_slice(), all.start), (&b"world\n"[..], 11));
    assert_eq!(again, tail, "the same log twice reads the same");
    let [whole] = store
        .read_log_tails("j", [LogSelector::Stream(LogStream::Stderr)], 1 << 20)
        .unwrap();
    assert_eq!((whole.data.as_slice(), whole.start), (&b"warn\n"[..], 0));
    let [empty] = store
        .read_log_tails("j", [LogSelector::Stream(LogStream::Stdout)], 0)
        .unwrap();
    assert_eq!((empty.data.len(), empty.start), (0, 12));
    assert!(matches!(
        store.read_log_tails("nope", [LogSelector::Combined], 10),
        Err(StoreError::NotFound(_))
    ));
    let kinds: Vec<String> = store
        .stored_events("j")
        .unwrap()
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(kinds, ["phase", "progress"]);

    rules::transition(&store, "j", JobState::Failed, None, 20).unwrap();
    let done = store
        .read_log("j", LogSelector::Combined, 0, 1 << 20)
        .unwrap()
        .unwrap();
    assert!(done.complete);
}

#[test]
fn logs_stop_at_the_cap_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    new_job(&store, "j", 1);
    let limits = EventLimits {
        max_log_bytes: 10,
        ..LIMITS
    };
    let events = vec![
        log(1, LogStream::Stdout, 0, "0123456"),
        log(2, LogStream::Stdout, 7, "789abcdef"),
        log(3, LogStream::Stdout, 16, "more"),
    ];
    rules::apply_events(&store, "j", &events, limits, 5).unwrap();
    let out = store
        .read_log("j", LogSelector::Stream(LogStream::Stdout), 0, 100)
        .unwrap()
        .unwrap();
    assert_eq!(out.data, b"0123456789");
    let combined = store
        .read_log("j", LogSelector::Combined, 0, 1000)
        .unwrap()
        .unwrap();
    let text = String::from_utf8(combined.data).unwrap();
    assert!(text.contains("log limit of 10 bytes"), "{text}");
    assert_eq!(text.matches("log limit").count(), 1, "{text}");
}

#[test]
fn a_crash_between_log_append_and_commit_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    new_job(&store, "j", 1);
    rules::apply_events(
        &store,
        "j",
        &[log(1, LogStream::Stdout, 0, "ok\n")],
        LIMITS,
        2,
    )
    .unwrap();
    // Bytes a crashed write left behind, never committed.
    let path = dir.path().join("logs/j/stdout.log");
    std::fs::write(&path, b"ok\nGARBAGE").unwrap();
    rules::apply_events(
        &store,
        "j",
        &[log(2, LogStream::Stdout, 3, "next\n")],
        LIMITS,
        3,
    )
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"ok\nnext\n");
}

#[test]
fn concurrent_readers_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    new_job(&store, "j", 1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for seq in 1..=400u64 {
                let offset = (seq - 1) * 8;
                rules::apply_events(
                    &store,
                    "j",
                    &[log(seq, LogStream::Stdout, offset, &format!("{seq:07}\n"))],
                    LIMITS,
                    seq as i64,
                )
                .unwrap();
                if seq % 50 == 0 {
                    new_job(&store, &format!("other-{seq}"), 100 + seq as i64);
                }
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let rec = store.get_job("j").unwrap();
                    assert!(rec.highest_seq >= last, "sequence went backwards");
                    last = rec.highest_seq;
                    let slice = store
                        .read_log("j", LogSelector::Stream(LogStream::Stdout), 0, 1 << 20)
                        .unwrap()
                        .unwrap();
                    // Readers only ever see whole committed lines.
                    assert_eq!(slice.data.len() % 8, 0);
                    store.list_jobs(None, 20, None).unwrap();
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    writer.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(store.get_job("j").unwrap().highest_seq, 400);
}

#[test]
fn another_process_sees_writes_and_cancel_requests() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Store::open(dir.path()).unwrap();
    let cli = Store::open(dir.path()).unwrap();
    new_job(&cli, "j", 1);
    assert_eq!(engine.pending_ids(10).unwrap(), ["j"]);
    let (rec, changed) = rules::request_cancel(&cli, "j", 5).unwrap();
    assert!(changed);
    assert_eq!(rec.state, JobState::Cancelled);
    assert_eq!(engine.take_cancel_requests().unwrap(), ["j"]);
    assert!(engine.take_cancel_requests().unwrap().is_empty());
    let (_, changed) = rules::request_cancel(&cli, "j", 6).unwrap();
    assert!(!changed, "a final job is left as it is");
}

#[test]
fn host_lock_is_exclusive_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let held = store.lock_engine().unwrap();
    match Store::open(dir.path()).unwrap().lock_engine() {
        Err(StoreError::Locked { pid, data_dir }) => {
            assert_eq!(pid, Some(std::process::id()));
            assert_eq!(data_dir, dir.path());
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let msg = store.lock_engine().unwrap_err().to_string();
    assert!(msg.contains("DELEGATE_DATA_DIR"), "{msg}");
    drop(held);
    store.lock_engine().unwrap();
}

#[test]
fn damaged_and_foreign_files_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("delegate.db");
    let garbage = b"this is not a database, but someone's notes\n".repeat(100);
    std::fs::write(&db, &garbage).unwrap();
    let err = Store::open(dir.path()).err().expect("garbage refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage);

    // A valid header over a damaged body.
    let dir2 = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir2.path()).unwrap();
        new_job(&s, "j", 1);
    }
    let db2 = dir2.path().join("delegate.db");
    let _ = std::fs::remove_file(dir2.path().join("delegate.db-wal"));
    let _ = std::fs::remove_file(dir2.path().join("delegate.db-shm"));
    let mut bytes = std::fs::read(&db2).unwrap();
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&db2, &bytes).unwrap();
    let err = Store::open(dir2.path()).err().expect("damaged db refused");
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Sqlite { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read(&db2).unwrap(), bytes);

    // Some other program's SQLite database.
    let dir3 = tempfile::tempdir().unwrap();
    let db3 = dir3.path().join("delegate.db");
    {
        let c = rusqlite::Connection::open(&db3).unwrap();
        c.execute_batch("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
    }
    let before = std::fs::read(&db3).unwrap();
    let err = Store::open(dir3.path()).err().expect("foreign db refused");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&db3).unwrap(), before);

    // A newer delegate's database.
    let dir4 = tempfile::tempdir().unwrap();
    drop(Store::open(dir4.path()).unwrap());
    {
        let c = rusqlite::Connection::open(dir4.path().join("delegate.db")).unwrap();
        c.execute_batch("PRAGMA user_version = 99").unwrap();
    }
    let err = Store::open(dir4.path())
        .err()
        .expect("newer schema refused");
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        new_job(&store, "j", 1);
        store
            .set_vm(
                "j",
                &VmRef {
                    provider: "local".into(),
                    id: "42".into(),
                    node: None,
                },
                Isolation::ProcessSandbox,
            )
            .unwrap();
        rules::apply_events(&store, "j", &[log(1, LogStream::Stdout, 0, "x")], LIMITS, 2).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let rec = store.get_job("j").unwrap();
    assert_eq!(rec.vm.unwrap().id, "42");
    assert_eq!(rec.highest_seq, 1);
}

#[test]
fn retention_prunes_finished_jobs_with_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for id in ["old", "new", "kept-vm", "running"] {
        new_job(&store, id, 1);
        rules::apply_events(&store, id, &[log(1, LogStream::Stdout, 0, "x")], LIMITS, 2).unwrap();
    }
    rules::transition(&store, "old", JobState::Failed, None, 10).unwrap();
    rules::transition(&store, "new", JobState::Failed, None, 1000).unwrap();
    store
        .set_vm(
            "kept-vm",
            &VmRef {
                provider: "local".into(),
                id: "1".into(),
                node: None,
            },
            Isolation::ProcessSandbox,
        )
        .unwrap();
    rules::transition(&store, "kept-vm", JobState::Failed, None, 10).unwrap();
    let pruned = store.prune_finished(500).unwrap();
    assert_eq!(pruned, ["old"]);
    assert!(matches!(store.get_job("old"), Err(StoreError::NotFound(_))));
    assert!(!dir.path().join("logs/old").exists());
    assert!(dir.path().join("logs/new").exists());
    store.get_job("kept-vm").unwrap();
    store.get_job("running").unwrap();
    let counts = store.count_by_state().unwrap();
    assert!(counts.contains(&(JobState::Failed, 2)), "{counts:?}");
    assert!(counts.contains(&(JobState::Pending, 1)), "{counts:?}");
}

fn pool_vm(id: &str) -> VmRef {
    VmRef {
        provider: "proxmox".into(),
        id: id.into(),
        node: Some("pve1".into()),
    }
}

#[test]
fn a_pool_vm_is_claimed_once_with_its_job_in_one_transaction() {
    use delegate_host::model::PoolVmState;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for id in ["a", "b", "c"] {
        new_job(&store, id, 1);
        rules::transition(&store, id, JobState::Provisioning, None, 2).unwrap();
    }
    let claim = |job: &str, version: &str| {
        store
            .pool_claim(job, "t:1c1g8g", version, Isolation::Vm, 10)
            .unwrap()
    };
    // Nothing ready: a starting VM is not offered.
    store
        .pool_add(&pool_vm("101"), "t:1c1g8g", "v1", 3)
        .unwrap();
    assert_eq!(claim("a", "v1"), None);
    assert!(store.pool_ready(&pool_vm("101"), 4).unwrap());
    store
        .pool_add(&pool_vm("102"), "t:1c1g8g", "v1", 5)
        .unwrap();
    assert!(store.pool_ready(&pool_vm("102"), 6).unwrap());
    // Another version or class is not taken.
    assert_eq!(claim("a", "v0"), None);
    assert_eq!(
        store
            .pool_claim("a", "t:2c2g8g", "v1", Isolation::Vm, 10)
            .unwrap(),
        None
    );

    // The oldest ready VM goes to the job, recorded on both sides.
    assert_eq!(claim("a", "v1"), Some(pool_vm("101")));
    let rec = store.get_job("a").unwrap();
    assert_eq!(rec.vm, Some(pool_vm("101")));
    assert_eq!(rec.isolation, Isolation::Vm);
    // A job with a VM claims nothing more; the next job gets the next VM.
    assert_eq!(claim("a", "v1"), None);
    assert_eq!(claim("b", "v1"), Some(pool_vm("102")));
    // Empty pool.
    assert_eq!(claim("c", "v1"), None);
    let rows = store.pool_list().unwrap();
    assert!(rows.iter().all(|r| r.state == PoolVmState::Claimed));
    assert_eq!(rows[0].job_id.as_deref(), Some("a"));
    assert_eq!(rows[1].job_id.as_deref(), Some("b"));
    // A claimed VM never becomes ready again.
    assert!(!store.pool_ready(&pool_vm("101"), 11).unwrap());

    // A job no longer provisioning (a cancel won) claims nothing.
    store
        .pool_add(&pool_vm("103"), "t:1c1g8g", "v1", 12)
        .unwrap();
    store.pool_ready(&pool_vm("103"), 13).unwrap();
    rules::transition(&store, "c", JobState::Cancelled, None, 14).unwrap();
    assert_eq!(claim("c", "v1"), None);
    assert_eq!(store.get_job("c").unwrap().vm, None);

    // Destroyed VMs are forgotten; how a job's VM started is kept.
    store.pool_forget(&pool_vm("101")).unwrap();
    store.pool_forget(&pool_vm("404")).unwrap();
    assert_eq!(store.pool_list().unwrap().len(), 2);
    store.set_vm_start("a", true, 180).unwrap();
    let start = store.get_job("a").unwrap().vm_start.unwrap();
    assert!(start.warm);
    assert_eq!(start.ms, 180);
    assert_eq!(store.get_job("b").unwrap().vm_start, None);

    // The rows survive a reopen, as a crash leaves them.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let rows = store.pool_list().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].state, PoolVmState::Claimed);
    assert_eq!(rows[1].state, PoolVmState::Ready);
}
