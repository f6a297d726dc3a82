//! The callback transport against a real HTTP host on 127.0.0.1: retries,
//! batching, outages, the spool and its bound, cancel, artifacts, result.

mod support;

use std::path::Path;
use std::time::Duration;

use delegate_guest::callback::{CallbackClient, CallbackError, CallbackOptions, RetryPolicy};
use delegate_proto::{
    Event, EventKind, JobResult, LogChunk, LogStream, OutputTails, Phase, ResultStatus,
};
use support::host::{JOB_ID, TestHost, token};

const LONG: Duration = Duration::from_secs(60);

fn fast_retry(budget: Duration) -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        budget,
    }
}

fn opts() -> CallbackOptions {
    CallbackOptions {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
        fetch_retry: fast_retry(LONG),
        upload_retry: fast_retry(LONG),
        result_retry: fast_retry(LONG),
        events_retry_initial: Duration::from_millis(20),
        events_retry_max: Duration::from_millis(200),
        batch_interval: Duration::from_millis(20),
        ..CallbackOptions::default()
    }
}

fn client(host: &TestHost, opts: CallbackOptions) -> CallbackClient {
    CallbackClient::new(&host.url(), JOB_ID, token(), opts).unwrap()
}

fn log(seq: u64, len: usize) -> Event {
    let text = format!("{seq:08} {}\n", "x".repeat(len.saturating_sub(10)));
    Event {
        seq,
        time_ms: 1,
        kind: EventKind::Log(LogChunk::new(
            LogStream::Stdout,
            seq * 10_000,
            text.as_bytes(),
        )),
    }
}

fn phase(seq: u64, phase: Phase) -> Event {
    Event {
        seq,
        time_ms: 1,
        kind: EventKind::Phase {
            phase,
            message: None,
        },
    }
}

fn result(status: ResultStatus) -> JobResult {
    JobResult {
        status,
        exit_code: Some(0),
        signal: None,
        duration_ms: 5,
        output: OutputTails::default(),
        artifacts: Vec::new(),
        error: None,
        error_kind: None,
        agent_result: None,
    }
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// Every seq in 1..=n is held by the host once: as itself or inside one
/// `Dropped` range. Returns the dropped ranges.
fn assert_accounted(events: &[Event], n: u64) -> Vec<(u64, u64)> {
    let mut covered = vec![0u32; n as usize + 1];
    let mut ranges = Vec::new();
    for e in events {
        if let EventKind::Dropped {
            first_seq,
            last_seq,
            ..
        } = &e.kind
        {
            for s in *first_seq..=*last_seq {
                covered[s as usize] += 1;
            }
            ranges.push((*first_seq, *last_seq));
        } else {
            covered[e.seq as usize] += 1;
        }
    }
    for (seq, count) in covered.iter().enumerate().skip(1) {
        assert_eq!(*count, 1, "seq {seq} held {count} times");
    }
    ranges
}

fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

// ---- GET manifest -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_spec_retries_5xx_then_succeeds() {
    let host = TestHost::start().await;
    host.state().fail_next = 3;
    let spec = client(&host, opts()).fetch_spec().await.unwrap();
    assert_eq!(spec.job_id, JOB_ID);
    assert_eq!(spec.manifest.task, "echo hello");
    assert_eq!(host.state().requests["manifest"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_spec_waits_for_a_host_that_is_not_up_yet() {
    let host = TestHost::start().await;
    host.go_down().await;
    let c = client(&host, opts());
    let fetch = tokio::spawn(async move { c.fetch_spec().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.come_back().await;
    let spec = fetch.await.unwrap().unwrap();
    assert_eq!(spec.job_id, JOB_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused_once_and_not_retried() {
    let host = TestHost::start().await;
    let c = CallbackClient::new(&host.url(), JOB_ID, "f".repeat(64), opts()).unwrap();
    let err = c.fetch_spec().await.unwrap_err();
    assert!(
        matches!(err, CallbackError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad token"), "{err}");
    assert_eq!(host.state().requests["manifest"], 1);
    assert!(!format!("{err:?}").contains(&"f".repeat(64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_job_is_not_found_and_not_retried() {
    let host = TestHost::start().await;
    let c = CallbackClient::new(&host.url(), "other-job", token(), opts()).unwrap();
    let err = c.fetch_spec().await.unwrap_err();
    assert!(matches!(err, CallbackError::NotFound { .. }), "{err:?}");
    assert_eq!(host.state().requests["manifest"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_fails_after_the_budget() {
    let host = TestHost::start().await;
    host.go_down().await;
    let mut o = opts();
    o.fetch_retry = fast_retry(Duration::from_millis(600));
    let err = client(&host, o).fetch_spec().await.unwrap_err();
    match err {
        CallbackError::Unreachable { attempts, .. } => assert!(attempts >= 2, "{attempts}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_5xx_fails_after_the_budget_with_the_host_message() {
    let host = TestHost::start().await;
    host.state().fail_next = u32::MAX;
    let mut o = opts();
    o.fetch_retry = fast_retry(Duration::from_millis(500));
    let err = client(&host, o).fetch_spec().await.unwrap_err();
    assert!(matches!(err, CallbackError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("injected failure"), "{err}");
}

// ---- events ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_batched_in_order() {
    let host = TestHost::start().await;
    let spool = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.batch_max_events = 25;
    o.batch_interval = Duration::from_millis(100);
    let uplink = client(&host, o).start_uplink(spool.path().join("spool"));
    for seq in 1..=200 {
        uplink.send(log(seq, 50));
    }
    let report = uplink.flush(LONG).await;
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.delivered_up_to, 200);
    let st = host.state();
    assert_eq!(
        st.events.keys().copied().collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    assert_eq!(st.duplicates, 0);
    assert!(st.batches.iter().all(|&n| n <= 25), "{:?}", st.batches);
    assert!(
        st.batches.len() >= 8 && st.batches.len() < 200,
        "{:?}",
        st.batches
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_outage_loses_and_duplicates_nothing() {
    let host = TestHost::start().await;
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, opts()).start_uplink(spool.path().join("spool"));
    for seq in 1..=50 {
        uplink.send(log(seq, 100));
    }
    host.wait_for("first events", LONG, |s| s.events.len() == 50)
        .await;
    host.go_down().await;
    for seq in 51..=150 {
        uplink.send(log(seq, 100));
    }
    // Let the uplink fail a few times against the closed port.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(host.state().events.len(), 50);
    host.come_back().await;
    for seq in 151..=160 {
        uplink.send(log(seq, 100));
    }
    let report = uplink.flush(LONG).await;
    assert!(report.complete(), "{report:?}");
    assert!(report.dropped.is_empty());
    assert_eq!(seqs(&host.events()), (1..=160).collect::<Vec<_>>());
    assert_eq!(host.state().duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_retried_through_5xx() {
    let host = TestHost::start().await;
    host.state().fail_next = 5;
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, opts()).start_uplink(spool.path().join("spool"));
    for seq in 1..=30 {
        uplink.send(log(seq, 10));
    }
    let report = uplink.flush(LONG).await;
    assert!(report.complete(), "{report:?}");
    assert_eq!(seqs(&host.events()), (1..=30).collect::<Vec<_>>());
    assert!(host.state().requests["events"] > 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_spool_to_disk_while_the_host_is_down() {
    let host = TestHost::start().await;
    host.go_down().await;
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    let mut o = opts();
    o.memory_limit = 16 * 1024;
    let uplink = client(&host, o).start_uplink(spool_dir.clone());
    uplink.send(phase(1, Phase::Running));
    for seq in 2..=400 {
        uplink.send(log(seq, 400));
    }
    // ~170 KB of events against a 16 KiB memory bound: most are on disk.
    let deadline = std::time::Instant::now() + LONG;
    while spool_bytes(&spool_dir) < 100 * 1024 {
        assert!(std::time::Instant::now() < deadline, "nothing spooled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(spool_files(&spool_dir) >= 2);
    host.come_back().await;
    let report = uplink.flush(LONG).await;
    assert!(report.complete(), "{report:?}");
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    assert_eq!(seqs(&host.events()), (1..=400).collect::<Vec<_>>());
    assert_eq!(spool_files(&spool_dir), 0, "spool files left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_old_logs_and_reports_the_ranges() {
    let host = TestHost::start().await;
    host.go_down().await;
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    let mut o = opts();
    o.memory_limit = 8 * 1024;
    o.spool_limit = 32 * 1024;
    let uplink = client(&host, o).start_uplink(spool_dir.clone());
    let phases = [Phase::Preparing, Phase::Unpacking, Phase::Running];
    let n = 1500;
    let mut phase_seqs = Vec::new();
    for seq in 1..=n {
        if seq % 500 == 1 {
            uplink.send(phase(seq, phases[(seq / 500) as usize]));
            phase_seqs.push(seq);
        } else {
            uplink.send(log(seq, 300));
        }
        if seq % 100 == 0 {
            assert!(spool_bytes(&spool_dir) <= 32 * 1024, "spool over its bound");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(spool_bytes(&spool_dir) <= 32 * 1024);
    host.come_back().await;
    let report = uplink.flush(LONG).await;
    assert!(report.complete(), "{report:?}");
    let events = host.events();
    let held = assert_accounted(&events, n);
    assert!(!held.is_empty(), "something must have been dropped");
    // What the host was told equals what the uplink reports.
    let reported: Vec<(u64, u64)> = report
        .dropped
        .iter()
        .map(|r| (*r.start(), *r.end()))
        .collect();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in held {
        match merged.last_mut() {
            Some(prev) if prev.1 + 1 == a => prev.1 = b,
            _ => merged.push((a, b)),
        }
    }
    assert_eq!(merged, reported);
    // Phases are never dropped; the newest logs survive; the oldest went.
    for seq in phase_seqs {
        assert!(
            matches!(host.state().events[&seq].kind, EventKind::Phase { .. }),
            "phase {seq} lost"
        );
    }
    assert!(matches!(host.state().events[&n].kind, EventKind::Log(_)));
    assert!(reported[0].0 <= 2, "{reported:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_the_host_is_seen() {
    let host = TestHost::start().await;
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, opts()).start_uplink(spool.path().join("spool"));
    let mut cancelled = uplink.cancelled();
    uplink.send(phase(1, Phase::Running));
    host.wait_for("first event", LONG, |s| s.events.len() == 1)
        .await;
    assert!(!*cancelled.borrow());
    host.state().cancel = true;
    uplink.send(log(2, 10));
    tokio::time::timeout(LONG, cancelled.wait_for(|c| *c))
        .await
        .expect("cancel seen")
        .unwrap();
    uplink.send(phase(3, Phase::Done));
    let report = uplink.flush(LONG).await;
    assert!(report.cancelled && report.complete(), "{report:?}");
    assert_eq!(seqs(&host.events()), vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_job_stops_the_uplink_and_cancels() {
    let host = TestHost::start().await;
    host.state().events_status = Some(409);
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, opts()).start_uplink(spool.path().join("spool"));
    let mut cancelled = uplink.cancelled();
    uplink.send(phase(1, Phase::Running));
    tokio::time::timeout(LONG, cancelled.wait_for(|c| *c))
        .await
        .expect("cancel seen")
        .unwrap();
    uplink.send(log(2, 10));
    let report = uplink.flush(LONG).await;
    assert!(
        matches!(
            report.stopped,
            Some(CallbackError::JobFinal { status: 409, .. })
        ),
        "{report:?}"
    );
    assert_eq!(report.undelivered, 2);
    assert!(!report.complete());
    assert_eq!(
        host.state().requests["events"],
        1,
        "a final job is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_shrink_after_413_and_an_oversized_event_is_reported() {
    let host = TestHost::start().await;
    host.state().events_body_limit = 4096;
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, opts()).start_uplink(spool.path().join("spool"));
    for seq in 1..=40 {
        // Seq 20 alone is larger than the host accepts.
        uplink.send(log(seq, if seq == 20 { 8000 } else { 300 }));
    }
    let report = uplink.flush(LONG).await;
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.dropped, vec![20..=20]);
    let events = host.events();
    assert_accounted(&events, 40);
    match &host.state().events[&20].kind {
        EventKind::Dropped { reason, .. } => assert!(reason.contains("larger"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_gives_up_at_its_deadline_and_says_so() {
    let host = TestHost::start().await;
    host.go_down().await;
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    let uplink = client(&host, opts()).start_uplink(spool_dir.clone());
    for seq in 1..=10 {
        uplink.send(log(seq, 10));
    }
    let report = uplink.flush(Duration::from_millis(300)).await;
    assert!(report.timed_out && !report.complete(), "{report:?}");
    assert_eq!(report.undelivered, 10);
    assert_eq!(report.delivered_up_to, 0);
    assert_eq!(spool_files(&spool_dir), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_events_are_refused_and_counted() {
    let host = TestHost::start().await;
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, opts()).start_uplink(spool.path().join("spool"));
    uplink.send(log(1, 10));
    uplink.send(log(2, 10));
    uplink.send(log(2, 10));
    uplink.send(log(3, 10));
    let report = uplink.flush(LONG).await;
    assert_eq!(report.out_of_order, 1);
    assert_eq!(seqs(&host.events()), vec![1, 2, 3]);
}

// ---- artifacts and result ------------------------------------------------

fn tar_gz(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("artifacts.tar.gz");
    let file = std::fs::File::create(&path).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    let data = b"hello artifacts\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "out/a.txt", &data[..])
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_upload_and_retry_through_5xx() {
    let host = TestHost::start().await;
    host.state().fail_next = 2;
    let dir = tempfile::tempdir().unwrap();
    let path = tar_gz(dir.path());
    let ack = client(&host, opts()).upload_artifacts(&path).await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(ack.size, bytes.len() as u64);
    use sha2::Digest as _;
    assert_eq!(
        ack.sha256,
        support::host::hex(&sha2::Sha256::digest(&bytes))
    );
    assert_eq!(ack.entries.len(), 1);
    assert_eq!(ack.entries[0].path, "out/a.txt");
    assert_eq!(host.state().requests["artifacts"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_artifacts_give_the_host_message() {
    let host = TestHost::start().await;
    host.state().artifact_limit = 100;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tar.gz");
    std::fs::write(&path, vec![7u8; 4 * 1024 * 1024]).unwrap();
    let err = client(&host, opts())
        .upload_artifacts(&path)
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("limit of 100 bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_over_the_spec_limit_are_refused_without_a_request() {
    let host = TestHost::start().await;
    host.state().spec.as_mut().unwrap().max_artifact_bytes = 100;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tar.gz");
    std::fs::write(&path, vec![7u8; 1000]).unwrap();
    let c = client(&host, opts());
    c.fetch_spec().await.unwrap();
    let err = c.upload_artifacts(&path).await.unwrap_err();
    assert!(matches!(err, CallbackError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("at most 100"), "{err}");
    assert!(!host.state().requests.contains_key("artifacts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_artifacts_file_is_an_io_error() {
    let host = TestHost::start().await;
    let err = client(&host, opts())
        .upload_artifacts(Path::new("/nonexistent/a.tar.gz"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/a.tar.gz"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_is_retried_until_acknowledged() {
    let host = TestHost::start().await;
    host.state().fail_next = 3;
    let ack = client(&host, opts())
        .post_result(&result(ResultStatus::Success))
        .await
        .unwrap();
    assert_eq!(ack.state, delegate_proto::JobState::Success);
    assert_eq!(host.state().requests["result"], 4);
    assert_eq!(
        host.state().result.as_ref().map(|r| r.status),
        Some(ResultStatus::Success)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_for_a_final_job_is_a_distinct_error() {
    let host = TestHost::start().await;
    host.state().final_status = 409;
    let c = client(&host, opts());
    c.post_result(&result(ResultStatus::Success)).await.unwrap();
    let err = c
        .post_result(&result(ResultStatus::Failed))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallbackError::JobFinal {
                status: 409,
                after_lost_response: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(host.state().requests["result"], 2, "409 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_result_answer_then_a_refusal_means_our_result_landed() {
    let host = TestHost::start().await;
    // Stored, but the answer is a 503; the retry then meets the real host's
    // refusal of a final job's token.
    host.state().lose_result_answers = 1;
    let err = client(&host, opts())
        .post_result(&result(ResultStatus::Success))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallbackError::JobFinal {
                status: 401,
                after_lost_response: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(host.state().result.is_some());
}
