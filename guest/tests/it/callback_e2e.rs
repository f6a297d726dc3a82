//! The real `delegate-guest boot` against the test host: a whole job in
//! callback mode, a host outage in the middle of one, and a cancel.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::Duration;

use delegate_proto::{Event, EventKind, JobManifest, LogStream, Phase, ResultStatus};

use crate::support::LONG;
use crate::support::host::{JOB_ID, TestHost, token};

pub(crate) struct Job {
    _dir: tempfile::TempDir,
    child: tokio::process::Child,
}

/// Starts `delegate-guest boot` with a bootstrap pointing at `host`.
pub(crate) fn boot(host: &TestHost) -> Job {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("bootstrap.json");
    let doc = serde_json::json!({
        "v": 1, "job_id": JOB_ID, "callback_url": host.url(), "token": token(),
    });
    std::fs::write(&bootstrap, doc.to_string()).unwrap();
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o600)).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_delegate-guest"))
        .arg("boot")
        .arg("--bootstrap")
        .arg(&bootstrap)
        .arg("--workspace")
        .arg(dir.path().join("workspace"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args(["--grace-seconds", "2", "--no-drop-privileges"])
        .env("DELEGATE_GUEST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Job { _dir: dir, child }
}

pub(crate) async fn finish(job: Job) -> (i32, String) {
    let out = tokio::time::timeout(LONG, job.child.wait_with_output())
        .await
        .expect("delegate-guest did not finish")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

pub(crate) fn script(command: &str, artifacts: &[&str]) -> JobManifest {
    serde_json::from_value(serde_json::json!({
        "task": "callback end-to-end",
        "agentType": "script",
        "agent": { "command": command },
        "statusMode": "streaming",
        "artifacts": artifacts,
    }))
    .unwrap()
}

/// Seqs run 1..=n without a gap and nothing was dropped.
fn assert_complete(events: &[Event]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "events have gaps");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Dropped { .. })),
        "nothing should be dropped"
    );
}

fn phases(events: &[Event]) -> Vec<Phase> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Phase { phase, .. } => Some(phase),
            _ => None,
        })
        .collect()
}

pub(crate) fn log_text(events: &[Event], stream: LogStream) -> String {
    let mut chunks: Vec<(u64, Vec<u8>)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Log(c) if c.stream == stream => Some((c.offset, c.bytes().unwrap())),
            _ => None,
        })
        .collect();
    chunks.sort_by_key(|(offset, _)| *offset);
    let mut text = Vec::new();
    for (offset, bytes) in chunks {
        assert_eq!(offset, text.len() as u64, "log offsets leave a gap");
        text.extend_from_slice(&bytes);
    }
    String::from_utf8(text).unwrap()
}

fn has_phase(events: &std::collections::BTreeMap<u64, Event>, phase: Phase) -> bool {
    events
        .values()
        .any(|e| matches!(e.kind, EventKind::Phase { phase: p, .. } if p == phase))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reports_phases_logs_heartbeats_artifacts_and_result() {
    let host = TestHost::start_with(script(
        "echo hello; echo oops >&2; mkdir -p out; echo data > out/a.txt; sleep 2.5",
        &["out/*"],
    ))
    .await;
    let (code, stderr) = finish(boot(&host)).await;
    assert_eq!(code, 0, "{stderr}");

    let events = host.events();
    assert_complete(&events);
    let seen = phases(&events);
    for phase in [
        Phase::Preparing,
        Phase::Running,
        Phase::Collecting,
        Phase::Uploading,
        Phase::Done,
    ] {
        assert!(seen.contains(&phase), "{phase:?} missing from {seen:?}");
    }
    assert_eq!(seen.last(), Some(&Phase::Done));
    assert!(log_text(&events, LogStream::Stdout).contains("hello\n"));
    assert!(log_text(&events, LogStream::Stderr).contains("oops\n"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Heartbeat { .. })),
        "no heartbeat in a 2.5 s job with a 1 s interval"
    );

    let st = host.state();
    let ack = st.artifacts.as_ref().expect("artifacts uploaded");
    assert_eq!(ack.entries.len(), 1, "{ack:?}");
    assert_eq!(ack.entries[0].path, "out/a.txt");
    let result = st.result.as_ref().expect("result posted");
    assert_eq!(result.status, ResultStatus::Success);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.artifacts.len(), 1);
    assert_eq!(result.artifacts[0].sha256, ack.entries[0].sha256);
    assert_eq!(st.unauthorized, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_outage_in_the_middle_of_a_job_loses_nothing() {
    let host = TestHost::start_with(script(
        "for i in $(seq 1 40); do echo line $i; sleep 0.1; done",
        &[],
    ))
    .await;
    let job = boot(&host);
    host.wait_for("the running phase", LONG, |s| {
        has_phase(&s.events, Phase::Running)
    })
    .await;
    host.go_down().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    host.come_back().await;
    let (code, stderr) = finish(job).await;
    assert_eq!(code, 0, "{stderr}");
    // The runner did meet the outage, and got over it.
    assert!(stderr.contains("POST events"), "{stderr}");
    assert!(stderr.contains("host reachable again"), "{stderr}");

    let events = host.events();
    assert_complete(&events);
    let stdout = log_text(&events, LogStream::Stdout);
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    assert_eq!(stdout, expected);
    assert_eq!(phases(&events).last(), Some(&Phase::Done));
    assert_eq!(
        host.state().result.as_ref().map(|r| r.status),
        Some(ResultStatus::Success)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_the_host_ends_the_job_cancelled() {
    let host = TestHost::start_with(script("echo started; sleep 60", &[])).await;
    let job = boot(&host);
    host.wait_for("the agent's first line", LONG, |s| {
        s.events.values().any(|e| {
            matches!(&e.kind, EventKind::Log(c) if c.text.as_deref().is_some_and(|t| t.contains("started")))
        })
    })
    .await;
    host.state().cancel = true;
    let (code, stderr) = finish(job).await;
    assert_eq!(code, 130, "{stderr}");
    let st = host.state();
    let result = st.result.as_ref().expect("result posted");
    assert_eq!(result.status, ResultStatus::Cancelled);
    assert!(has_phase(&st.events, Phase::Done));
}
