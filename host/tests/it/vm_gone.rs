//! A lost sandbox is noticed at once: with a heartbeat lease far longer
//! than the test, a job whose sandbox is killed from outside fails within
//! seconds, with the provider's reason (the sandbox exited) rather than an
//! expired lease; a job that ends normally is not taken for lost. Needs
//! bubblewrap and `cargo build -p delegate-guest`, as `local_sandbox` does.

use std::time::Duration;

use delegate_proto::JobState;
use delegate_proto::outcome::ErrorKind;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::support::harness::{eventually, until_state};
use crate::support::local::{local_host, marker, pids_with, quiet_script};

/// Longer than any wait below: only the provider can end these jobs early.
const LEASE: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_killed_from_outside_fails_its_job_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let host = local_host(dir.path(), |s| s.heartbeat_threshold = LEASE).await;
    let m = host.manager().clone();
    let mark = marker("gone");
    let rec = m
        .submit(quiet_script(&format!("exec -a {mark} sleep 300")))
        .await
        .unwrap();
    until_state(&m, &rec.id, JobState::Running, 60).await;
    eventually(60, "the job's process", || async {
        (!pids_with(&mark).is_empty()).then_some(())
    })
    .await;
    let vm = m.get(&rec.id).unwrap().vm.expect("the job has its sandbox");
    let pid_file = dir.path().join("sandboxes").join(&vm.id).join("pid");
    let text = std::fs::read_to_string(&pid_file).unwrap();
    let pid: i32 = text.split_whitespace().next().unwrap().parse().unwrap();
    // The whole sandbox, as the OOM killer or an operator's `kill -9` would.
    killpg(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let done = until_state(&m, &rec.id, JobState::Failed, 30).await;
    let why = done.error.clone().unwrap_or_default();
    assert!(why.contains("sandbox") && why.contains("exited"), "{why}");
    assert!(!why.contains("heartbeat lease"), "{why}");
    assert_eq!(done.error_kind, Some(ErrorKind::Lost));
    eventually(30, "the sandbox destroyed", || async {
        m.get(&rec.id).ok().filter(|r| r.vm_destroyed)
    })
    .await;
    assert!(pids_with(&mark).is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_sandbox_exits_after_its_result_keeps_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let host = local_host(dir.path(), |s| s.heartbeat_threshold = LEASE).await;
    let m = host.manager().clone();
    let ok = m.submit(quiet_script("echo fine")).await.unwrap();
    let bad = m.submit(quiet_script("exit 3")).await.unwrap();
    let ok = m
        .wait(&ok.id, Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    let bad = m
        .wait(&bad.id, Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    assert_eq!(ok.state, JobState::Success, "{ok:?}");
    assert_eq!(ok.error, None);
    assert_eq!(bad.state, JobState::Failed, "{bad:?}");
    assert_eq!(bad.error_kind, Some(ErrorKind::Exit), "{bad:?}");
    // Their sandboxes are gone now; the jobs stay as their guests said.
    for id in [&ok.id, &bad.id] {
        let r = eventually(30, "the sandbox destroyed", || async {
            m.get(id).ok().filter(|r| r.vm_destroyed)
        })
        .await;
        assert_ne!(r.error_kind, Some(ErrorKind::Lost), "{r:?}");
        assert!(r.result.is_some(), "{r:?}");
    }
    host.stop().await;
}
