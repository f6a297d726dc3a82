//! The runner in callback mode against a real HTTP host on 127.0.0.1 (the
//! test host of the callback tests): `run --callback` and `boot`. The
//! transport itself is tested in callback*.rs; this checks the wiring:
//! events with heartbeats whatever the status mode, artifacts uploaded, the
//! result posted last, the host's cancel, the host's limits.

use std::time::Duration;

use delegate_proto::{EventKind, JobManifest, Phase, ResultStatus};
use serde_json::json;

use crate::support::host::{JOB_ID, TestHost, token};
use crate::support::runner::{Finished, Job, guest_bin, tempdir};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn callback_job(host: &TestHost, manifest: serde_json::Value) -> Job {
    let job = Job::new(&manifest);
    let token_file = job.path("token");
    std::fs::write(&token_file, format!("{}\n", token())).unwrap();
    job.arg("--callback")
        .arg(host.url())
        .arg("--job-id")
        .arg(JOB_ID)
        .arg("--token-file")
        .arg(token_file.display().to_string())
        .arg("--heartbeat-seconds")
        .arg("1")
}

fn host_phases(host: &TestHost) -> Vec<Phase> {
    host.events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Phase { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_callback_reports_events_artifacts_and_result() {
    let host = TestHost::start().await;
    let m = json!({
        "task": "echo hello > out.txt; sleep 2.5; echo done", "agentType": "script",
        "statusMode": "simple", "artifacts": ["*.txt"],
    });
    let job = callback_job(&host, m);
    let (f, job) = blocking(move || (job.run(), job)).await;
    f.expect_code(0);
    // stdout follows statusMode (simple: no heartbeats) ...
    assert!(f.events().iter().all(|e| e["type"] == "phase"));
    // ... the host gets heartbeats anyway, and every event without gaps.
    let events = host.events();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Heartbeat { .. })),
        "{events:?}"
    );
    assert_eq!(
        host_phases(&host),
        [
            Phase::Preparing,
            Phase::Unpacking,
            Phase::Running,
            Phase::Collecting,
            Phase::Uploading,
            Phase::Done
        ]
    );
    let state = host.state();
    let result = state.result.clone().expect("no result at the host");
    assert_eq!(result.status, ResultStatus::Success);
    assert_eq!(result.output.stdout.text, "done\n");
    let ack = state.artifacts.clone().expect("no artifacts at the host");
    assert_eq!(ack.entries, result.artifacts);
    assert_eq!(ack.entries[0].path, "out.txt");
    drop(state);
    assert!(job.logs().join("artifacts.tar.gz").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_cancel_stops_the_job() {
    let host = TestHost::start().await;
    let m = json!({"task": "echo started > r.txt; sleep 600", "agentType": "script", "artifacts": ["r.txt"]});
    let job = callback_job(&host, m);
    let run = blocking(move || {
        let mut run = job.start();
        run.wait_for_phase("running");
        (run, job)
    })
    .await;
    let (run, job) = run;
    host.wait_for("the agent running", Duration::from_secs(60), |s| {
        s.events.values().any(|e| {
            matches!(
                e.kind,
                EventKind::Phase {
                    phase: Phase::Running,
                    ..
                }
            )
        })
    })
    .await;
    host.state().cancel = true;
    let f: Finished = blocking(move || run.finish()).await;
    f.expect_code(130);
    let state = host.state();
    let result = state.result.clone().unwrap();
    assert_eq!(result.status, ResultStatus::Cancelled);
    assert!(result.error.unwrap().contains("host cancelled"));
    assert_eq!(state.artifacts.as_ref().unwrap().entries[0].path, "r.txt");
    drop(job);
}

fn bootstrap_file(host: &TestHost, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("bootstrap.json");
    let b = json!({"v": 1, "job_id": JOB_ID, "callback_url": host.url(), "token": token()});
    std::fs::write(&path, b.to_string()).unwrap();
    // The bootstrap carries the token: it must be private to the runner.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn boot(bootstrap: &std::path::Path, ws: &std::path::Path) -> std::process::Output {
    std::process::Command::new(guest_bin())
        .args(["boot", "--bootstrap"])
        .arg(bootstrap)
        .arg("--workspace")
        .arg(ws)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_fetches_the_job_runs_it_and_reports() {
    let manifest: JobManifest = serde_json::from_value(json!({
        "task": "sleep 2.5; echo booted", "agentType": "script", "statusMode": "simple",
    }))
    .unwrap();
    let host = TestHost::start_with(manifest).await;
    let dir = tempdir();
    let bootstrap = bootstrap_file(&host, dir.path());
    let ws = dir.path().join("ws");
    let out = blocking(move || boot(&bootstrap, &ws)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let state = host.state();
    let result = state.result.clone().unwrap();
    assert_eq!(result.output.stdout.text, "booted\n");
    assert!(
        state
            .events
            .values()
            .any(|e| matches!(e.kind, EventKind::Heartbeat { .. })),
        "heartbeats at the host's 1 s interval"
    );
    assert_eq!(state.requests.get("manifest"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_refuses_an_invalid_manifest_and_tells_the_host() {
    // Deserialized without validation, as a broken host might send it.
    let manifest: JobManifest =
        serde_json::from_value(json!({"task": "x", "agentType": "script", "timeout": 0})).unwrap();
    let host = TestHost::start_with(manifest).await;
    let dir = tempdir();
    let bootstrap = bootstrap_file(&host, dir.path());
    let ws = dir.path().join("ws");
    let out = blocking(move || boot(&bootstrap, &ws)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"));
    let result = host.state().result.clone().unwrap();
    assert_eq!(result.status, ResultStatus::Failed);
    assert!(result.error.unwrap().contains("timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_without_a_bootstrap_is_a_usage_error() {
    let dir = tempdir();
    let missing = dir.path().join("none.json");
    let out = blocking(move || {
        std::process::Command::new(guest_bin())
            .args(["boot", "--bootstrap"])
            .arg(&missing)
            .output()
            .unwrap()
    })
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
