//! A cancel reaches a quiet job's processes through the guest's control
//! long poll on the local provider, with the real `delegate-guest` over the
//! real callback API: heartbeats are a minute apart here, so a tree gone
//! well before that can only have heard it there. How fast it is (well under
//! a second) is the cancel benchmark's business (`benches/cancel.rs`), not a
//! timed assertion here.

use std::time::{Duration, Instant};

use delegate_host::model::CancelOutcome;
use delegate_proto::JobState;

use crate::support::harness::{eventually, until_state};
use crate::support::local::{local_host, marker, pids_with, quiet_script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_job_cancelled_stops_within_about_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let host = local_host(dir.path(), |s| {
        s.heartbeat_interval = Duration::from_secs(60);
        s.heartbeat_threshold = Duration::from_secs(180);
        // Longer than the test allows: the sandbox is not destroyed under
        // the job before the guest reports.
        s.cancel_grace = Duration::from_secs(30);
    })
    .await;
    let m = host.manager().clone();
    let mark = marker("quiet");
    let id = m
        .submit(quiet_script(&format!("exec -a {mark} sleep 300")))
        .await
        .unwrap()
        .id;
    until_state(&m, &id, JobState::Running, 60).await;
    eventually(60, "the job's sleep to run", || async {
        (!pids_with(&mark).is_empty()).then_some(())
    })
    .await;
    // Let the guest settle into its long poll and its quiet wait.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t = Instant::now();
    assert!(matches!(
        m.cancel(&id).await.unwrap(),
        CancelOutcome::Cancelled(_)
    ));
    while !pids_with(&mark).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the job's sleep outlived the cancel by {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("cancel to tree gone: {:?}", t.elapsed());

    // The guest lived on to report: the result says cancelled, and came
    // well before the grace ran out.
    let rec = eventually(20, "the guest's result", || async {
        m.get(&id).ok().filter(|r| r.result.is_some())
    })
    .await;
    assert_eq!(rec.state, JobState::Cancelled);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let result = rec.result.unwrap();
    assert_eq!(result.signal.as_deref(), Some("SIGTERM"), "{result:?}");
    host.stop().await;
}
