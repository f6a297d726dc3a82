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

/// This process's resident memory (the host runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Bytes of every file under `dir`.
fn tree_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// An artifact upload that announces 1 MB and sends a byte every 50 ms,
/// on a raw connection, until it is dropped.
async fn slow_upload(base: &str, job_id: &str, token: &str) {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://");
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         {}: 1\r\nContent-Length: 1000000\r\n\r\n",
        delegate_proto::api::artifacts_path(job_id),
        delegate_proto::api::PROTOCOL_HEADER,
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if s.write_all(b"x").await.is_err() {
            return;
        }
    }
}

/// Fault suite: a guest that misbehaves on purpose for a while (floods of
/// log chunks past the cap, gaps, huge offsets, replayed batches, slow
/// uploads on many connections) beside a job whose guest behaves. The
/// host's memory and its data directory stay bounded, and the good job's
/// log is exactly what its guest sent, each batch answered promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_guest_beside_a_good_one_stays_bounded() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    let seconds: u64 = std::env::var("DELEGATE_FAULT_HOSTILE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let (host, _fake, guests) =
        host_with_silent_jobs(dir.path(), 2, |s| s.max_log_bytes = LOG_CAP).await;
    let mut guests = guests.into_iter();
    let (bad, good) = (guests.next().unwrap(), guests.next().unwrap());
    let (bad, good) = (Arc::new(bad), Arc::new(good));
    let rss_before = rss();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Slow uploads on 32 connections for the whole run.
    let base = host.base_url();
    let uploads: Vec<_> = (0..32)
        .map(|_| {
            let (base, id, token) = (base.clone(), bad.job_id.clone(), bad.token().to_string());
            tokio::spawn(async move { slow_upload(&base, &id, &token).await })
        })
        .collect();

    // The hostile guest: rounds of floods, gaps, huge offsets and replays.
    let hostile = {
        let (bad, stop) = (bad.clone(), stop.clone());
        tokio::spawn(async move {
            let block = "y".repeat(2000);
            let (mut seq, mut offset, mut rounds) = (0u64, 0u64, 0u64);
            let mut refused = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rounds += 1;
                // 4000 chunks of 2 KB: 8 MB at once, far past the cap.
                let first = seq + 1;
                let flood: Vec<Event> = (0..4000)
                    .map(|_| {
                        seq += 1;
                        offset += block.len() as u64;
                        chunk(seq, offset - block.len() as u64, &block)
                    })
                    .collect();
                let (s, _) = bad.post_events(flood.clone()).await;
                refused += u64::from(s != StatusCode::OK);
                // The same batch again, and an older part of it.
                let (s, _) = bad.post_events(flood[..100].to_vec()).await;
                refused += u64::from(s != StatusCode::OK);
                // A gap: a chunk far past the end.
                seq += 1;
                offset += 1 << 30;
                let (s, _) = bad.post_events(vec![chunk(seq, offset, "gap")]).await;
                refused += u64::from(s != StatusCode::OK);
                offset += 3;
                // A huge offset, refused by name.
                let (s, _) = bad
                    .post_events(vec![chunk(seq + 1, u64::MAX - 1, "far")])
                    .await;
                assert_eq!(s, StatusCode::BAD_REQUEST, "a huge offset is refused");
                // A sequence from the far future: a gap in events, held back.
                let (s, _) = bad
                    .post_events(vec![chunk(first + 1_000_000, offset, "late")])
                    .await;
                refused += u64::from(s != StatusCode::OK);
            }
            (rounds, seq, refused)
        })
    };

    // The good guest: a line every 20 ms, in order, each answered promptly.
    let started = Instant::now();
    let (mut seq, mut offset, mut sent) = (0u64, 0u64, String::new());
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(seconds) {
        seq += 1;
        let line = format!("good line {seq}\n");
        let t = Instant::now();
        let (status, msg) = good.post_events(vec![chunk(seq, offset, &line)]).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(status, StatusCode::OK, "{msg}");
        offset += line.len() as u64;
        sent.push_str(&line);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (rounds, bad_events, refused) = hostile.await.unwrap();
    for u in uploads {
        u.abort();
    }
    sampler.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let disk = tree_size(dir.path());
    eprintln!(
        "hostile guest for {seconds} s: {rounds} rounds, {bad_events} events sent, {refused} \
         batches refused besides the huge offsets, 32 slow uploads; host RSS {} → peak {} MB; \
         data directory {} KB; the good guest's slowest answer {:.0} ms over {seq} batches",
        rss_before >> 20,
        peak >> 20,
        disk >> 10,
        slowest.as_secs_f64() * 1000.0
    );
    // Memory: what the budgeted bodies take, a few times over, not a
    // growth with the flood's total (1 GB sent in scripts/fault-suite's
    // 60 s, where the peak stayed near 135 MB). The bound is loose because
    // this process also builds the floods and runs other tests at once
    // (callback_memory alone adds up to 160 MB); the body budget below is
    // the exact check.
    assert!(
        peak - rss_before < 400 << 20,
        "RSS grew by {} MB",
        (peak - rss_before) >> 20
    );
    // Disk: the bad job's log at its cap (both streams and the combined
    // log with the notes) and a small database.
    assert!(
        disk < 3 * LOG_CAP + (16 << 20),
        "data directory {disk} bytes"
    );
    // Bodies read whole stay within the callback's budget however many
    // floods arrive (slow uploads stream to disk and hold none).
    assert!(
        delegate_host::callback::budget::peak_body_bytes()
            <= delegate_host::callback::budget::BUDGET_BYTES
    );
    // Answers for the good job are not starved (a loaded CI machine runs
    // other tests beside this one).
    assert!(
        slowest < Duration::from_secs(5),
        "slowest answer {slowest:?}"
    );
    let m = host.manager();
    let log = m
        .read_log(
            &good.job_id,
            delegate_host::model::LogSelector::Stream(LogStream::Stdout),
            0,
            4 << 20,
        )
        .unwrap();
    assert_eq!(String::from_utf8(log.data).unwrap(), sent);
    assert_eq!(m.get(&good.job_id).unwrap().state, JobState::Running);
    host.stop().await;
}
