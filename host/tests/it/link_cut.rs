//! Fault suite: the link between a real `delegate-guest boot` and the host
//! cut for 60 s while the job streams its output. A TCP link the test
//! controls sits between them: first a black hole (connections held, no
//! byte through), then refused connections, then up again. The guest must
//! spool and resend so that the host's log is the job's output byte for
//! byte: no event lost, none twice, no gap marker, nothing dropped.
//!
//! `DELEGATE_FAULT_CUT_SECONDS` (60) sets the outage; `scripts/fault-suite`
//! runs it with longer ones.

use std::process::Stdio;
use std::time::{Duration, Instant};

use delegate_host::model::LogSelector;
use delegate_proto::{JobManifest, JobState, LogStream};

use crate::support::fake::FakeProvider;
use crate::support::harness::{Host, eventually, settings, until_state};
use crate::support::link::{Cut, Link};
use crate::support::local::local_settings;

fn cut_seconds() -> u64 {
    std::env::var("DELEGATE_FAULT_CUT_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// The job's output: `lines` numbered lines.
fn expected(lines: u64) -> String {
    (1..=lines)
        .map(|i| format!("line {i} of the streamed output\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_loses_no_event_and_repeats_none() {
    let cut_for = Duration::from_secs(cut_seconds());
    // Output before, during and after the cut: 10 lines a second.
    let lines = (cut_for.as_secs() + 12) * 10;
    let dir = tempfile::tempdir().unwrap();
    let guest_bin = local_settings(dir.path()).guest_bin;
    let fake = FakeProvider::new();
    let host = Host::start(
        settings(dir.path(), |s| {
            // The lease outlasts the cut: this test is about the log.
            s.heartbeat_threshold = cut_for + Duration::from_secs(60);
        }),
        std::sync::Arc::new(fake.clone()),
    )
    .await;
    let link = Link::start(
        host.base_url()
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
    )
    .await;

    // The fake provider's VM stays silent (its template); the real guest
    // plays it, reaching the host through the link.
    let manifest = JobManifest::from_value(serde_json::json!({
        "task": format!(
            "for i in $(seq 1 {lines}); do echo \"line $i of the streamed output\"; sleep 0.1; done"
        ),
        "agentType": "script",
        "statusMode": "streaming",
        "timeout": 600,
        "vmTemplate": "silent",
    }))
    .unwrap();
    let m = host.manager().clone();
    let id = m.submit(manifest).await.unwrap().id;
    let mut b = eventually(20, "a bootstrap", || async { fake.bootstrap(&id) }).await;
    b.callback_url = link.url();
    let work = tempfile::tempdir().unwrap();
    let bootstrap = work.path().join("bootstrap.json");
    std::fs::write(&bootstrap, serde_json::to_vec(&b).unwrap()).unwrap();
    std::fs::set_permissions(
        &bootstrap,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut guest = tokio::process::Command::new(&guest_bin)
        .arg("boot")
        .arg("--bootstrap")
        .arg(&bootstrap)
        .arg("--workspace")
        .arg(work.path().join("workspace"))
        .arg("--log-dir")
        .arg(work.path().join("logs"))
        .args(["--grace-seconds", "2", "--no-drop-privileges"])
        .env("DELEGATE_GUEST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("guest.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start delegate-guest boot");
    let guest_log = || std::fs::read_to_string(work.path().join("guest.log")).unwrap_or_default();

    // Streaming for a few seconds, then the cut.
    until_state(&m, &id, JobState::Running, 30).await;
    let stdout_len = |m: &delegate_host::jobs::JobManager| {
        m.read_log(&id, LogSelector::Stream(LogStream::Stdout), 0, 1 << 20)
            .map(|s| s.data.len())
            .unwrap_or(0)
    };
    eventually(30, "output before the cut", || async {
        (stdout_len(&m) > 100).then_some(())
    })
    .await;
    let before = stdout_len(&m);
    let cut_at = Instant::now();
    link.set(Cut::BlackHole);
    tokio::time::sleep(cut_for / 2).await;
    link.set(Cut::Refuse);
    tokio::time::sleep(cut_for - cut_for / 2).await;
    let during = stdout_len(&m) - before;
    link.set(Cut::Up);
    eprintln!(
        "link_cut: {before} bytes before the {:.0} s cut, {during} while cut \
         (in flight as it began), {} connections so far",
        cut_at.elapsed().as_secs_f64(),
        link.accepted()
    );

    let rec = until_state(&m, &id, JobState::Success, 120 + lines / 10).await;
    let status = tokio::time::timeout(Duration::from_secs(60), guest.wait())
        .await
        .expect("the guest exits")
        .unwrap();
    assert!(status.success(), "guest: {status}\n{}", guest_log());
    eprintln!(
        "link_cut: job final {:.1} s after the link came back; {} connections in all",
        (Instant::now() - cut_at - cut_for).as_secs_f64(),
        link.accepted()
    );

    let want = expected(lines);
    let log = |which| String::from_utf8(m.read_log(&id, which, 0, 4 << 20).unwrap().data).unwrap();
    assert_eq!(
        log(LogSelector::Stream(LogStream::Stdout)),
        want,
        "stdout\n{}",
        guest_log()
    );
    // The combined log has no gap marker or dropped-event note either.
    assert_eq!(log(LogSelector::Combined), want, "combined");
    let events = m.store().stored_events(&id).unwrap();
    assert!(
        !events.iter().any(|(_, kind, _)| kind == "dropped"),
        "events were dropped: {events:?}"
    );
    assert_eq!(rec.error, None);
    host.stop().await;
}
