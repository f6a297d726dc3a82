//! The event uplink against a real HTTP host on 127.0.0.1: batching,
//! outages, 5xx, the spool and its bound, dropped ranges, cancel, refusals.

use std::time::Duration;

use delegate_guest::callback::CallbackError;
use delegate_proto::{EventKind, Phase};

use crate::support::LONG;
use crate::support::fixtures::{
    assert_accounted, client, log, opts, phase, seqs, spool_bytes, spool_files,
};
use crate::support::host::{Store, TestHost};

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
    full_spool(Store::GapFree).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_ranges_reach_a_host_that_only_takes_the_next_seq() {
    full_spool(Store::GapFreeNaive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_ranges_reach_a_host_that_takes_any_seq() {
    full_spool(Store::AnySeq).await;
}

async fn full_spool(store: Store) {
    let host = TestHost::start().await;
    host.state().store = store;
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
    for seq in n - 20..=n {
        assert!(
            matches!(host.state().events[&seq].kind, EventKind::Log(_)),
            "new log {seq} dropped"
        );
    }
    // The oldest went first; only the few events already read back for
    // sending (at most one spool segment, here ~20) are spared.
    assert!(reported[0].0 <= 50, "{reported:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_the_runner_skipped_are_reported_to_a_gap_free_host() {
    let host = TestHost::start().await;
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, opts()).start_uplink(spool.path().join("spool"));
    for seq in [1, 2, 5, 6] {
        uplink.send(log(seq, 10));
    }
    let report = uplink.flush(LONG).await;
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.dropped, vec![3..=4]);
    let events = host.events();
    assert_accounted(&events, 6);
    match &events[2].kind {
        EventKind::Dropped { reason, .. } => assert!(reason.contains("never queued"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
