//! A hostile guest over real HTTP cannot fill the host's disk: dropped
//! reasons, gap markers and history rows are bounded per job, and bad
//! fields are refused with their name and limit. The flood is the one
//! issue 9 measured (79 MB of log and 187 MB of database with a 1 MB cap).

use delegate_proto::event::{Event, EventKind, LogChunk};
use delegate_proto::event_check::{MAX_DROPPED_REASON_BYTES, MAX_EVENT_MESSAGE_BYTES};
use delegate_proto::{JobState, LogStream};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::guest::host_with_silent_jobs;

const LOG_CAP: u64 = 1 << 20;

fn dropped(seq: u64, reason: &str) -> Event {
    Event {
        seq,
        time_ms: 0,
        kind: EventKind::Dropped {
            first_seq: seq,
            last_seq: seq,
            reason: reason.into(),
        },
    }
}

fn chunk(seq: u64, offset: u64, text: &str) -> Event {
    Event {
        seq,
        time_ms: 0,
        kind: EventKind::Log(LogChunk::new(LogStream::Stdout, offset, text.as_bytes())),
    }
}

fn size_of(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_dropped_events_and_gaps_stays_within_the_caps() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _fake, guests) =
        host_with_silent_jobs(dir.path(), 2, |s| s.max_log_bytes = LOG_CAP).await;
    let (g, quiet) = (&guests[0], &guests[1]);
    let started = std::time::Instant::now();
    let reason = "r".repeat(MAX_DROPPED_REASON_BYTES);
    let mut seq = 0;
    // Ten batches of 4000 dropped events with the longest reasons.
    for _ in 0..10 {
        let events = (0..4000)
            .map(|_| {
                seq += 1;
                dropped(seq, &reason)
            })
            .collect();
        let (status, msg) = g.post_events(events).await;
        assert_eq!(status, StatusCode::OK, "{msg}");
    }
    // Five batches of one-byte chunks each 1 MB past the last: a gap marker each.
    let mut offset = 0;
    for _ in 0..5 {
        let events = (0..4000)
            .map(|_| {
                seq += 1;
                offset += 1 << 20;
                chunk(seq, offset, "x")
            })
            .collect();
        let (status, msg) = g.post_events(events).await;
        assert_eq!(status, StatusCode::OK, "{msg}");
    }
    let logs = dir.path().join("logs").join(&g.job_id);
    let combined = size_of(&logs.join("combined.log"));
    let db = size_of(&dir.path().join("delegate.db"));
    eprintln!(
        "flood of {seq} events in {:.1} s: combined.log {combined} bytes, database {db} bytes \
         (WAL {} bytes)",
        started.elapsed().as_secs_f64(),
        size_of(&dir.path().join("delegate.db-wal"))
    );
    // Output is under the cap (one byte per chunk here); the host's notes
    // are under 64 KiB plus a closing line.
    assert!(
        combined <= 20_000 + 66 * 1024,
        "combined.log is {combined} bytes"
    );
    let text = std::fs::read_to_string(logs.join("combined.log")).unwrap();
    assert!(
        text.contains("further notes are not stored"),
        "{}",
        &text[text.len() - 300..]
    );
    let rows = host.manager().store().stored_events(&g.job_id).unwrap();
    assert_eq!(rows.len(), 1000, "history rows");
    assert!(db < 8 << 20, "the database is {db} bytes");
    // The job still follows the guest, and the other job is untouched.
    let rec = host.manager().get(&g.job_id).unwrap();
    assert_eq!(rec.state, JobState::Running);
    assert_eq!(
        host.manager().get(&quiet.job_id).unwrap().state,
        JobState::Provisioning
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _fake, guests) = host_with_silent_jobs(dir.path(), 1, |_| {}).await;
    let g = &guests[0];
    let progress = |seq: u64, percent: serde_json::Value, message: &str| json!({"seq": seq, "time_ms": 0, "type": "progress", "percent": percent, "message": message});
    let cases = [
        (
            json!({"events": [progress(1, json!(50), "ok"), progress(2, json!(-5), "m")]}),
            "events[1].percent: -5 is not a number from 0 to 100",
        ),
        (
            json!({"events": [progress(1, json!(1e308), "m")]}),
            "events[0].percent",
        ),
        (
            json!({"events": [progress(1, json!(1), &"m".repeat(MAX_EVENT_MESSAGE_BYTES + 1))]}),
            "events[0].message: 4097 bytes is over the limit of 4096 bytes",
        ),
        (
            json!({"events": [{"seq": 1, "time_ms": 0, "type": "dropped", "first_seq": 1,
                "last_seq": 1, "reason": "r".repeat(1900)}]}),
            "events[0].reason: 1900 bytes is over the limit of 1024 bytes",
        ),
    ];
    for (body, expect) in cases {
        let (status, msg) = g.post_events_json(&body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{expect}");
        assert!(msg.contains(expect), "{msg:?} should say {expect:?}");
    }
    // Nothing of a refused batch was kept.
    let rec = host.manager().get(&g.job_id).unwrap();
    assert_eq!(rec.progress, None);
    // A count over the cap says "events", not "bytes".
    let events: Vec<serde_json::Value> = (1..=4097)
        .map(|seq| json!({"seq": seq, "time_ms": 0, "type": "heartbeat", "stdout_bytes": 0, "stderr_bytes": 0}))
        .collect();
    let (status, msg) = g.post_events_json(&json!({ "events": events })).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        msg,
        "a batch of 4097 events is over the limit of 4096 events"
    );
    host.stop().await;
}
