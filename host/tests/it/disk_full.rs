//! A full data directory (a small tmpfs the test mounts; the tests run as
//! root in CI): the job whose output hit it fails at once with "the host's
//! data directory is full" and its VM is destroyed; the other job goes on;
//! once space returns, jobs are stored again and the space reserve comes
//! back. Before, the host logged "cannot record the job's end" ~650 times a
//! second and kept the job `running`.

use std::process::Command;
use std::time::{Duration, Instant};

use delegate_host::jobs::full::DATA_DIR_FULL;
use delegate_host::store::RESERVE_BYTES;
use delegate_proto::event::{Event, EventKind, LogChunk};
use delegate_proto::{JobState, LogStream};
use reqwest::StatusCode;

use delegate_host::model::LogSelector;

use crate::support::guest::host_with_silent_jobs;
use crate::support::harness::{eventually, until_state};
use crate::support::local::{local_host, quiet_script};

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount")
            .success();
        assert!(ok, "cannot mount a tmpfs on {}", dir.path().display());
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chunk(seq: u64, offset: u64, bytes: &[u8]) -> Event {
    Event {
        seq,
        time_ms: 0,
        kind: EventKind::Log(LogChunk::new(LogStream::Stdout, offset, bytes)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_directory_fails_the_job_that_hit_it_and_nothing_else() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let fs = Tmpfs::mount("8m");
    let data = fs.dir.path().join("data");
    // Space the test gives back later.
    let filler = fs.dir.path().join("filler");
    std::fs::write(&filler, vec![1u8; 2 << 20]).unwrap();
    let (host, fake, guests) =
        host_with_silent_jobs(&data, 2, |s| s.max_log_bytes = 64 << 20).await;
    let (g, other) = (&guests[0], &guests[1]);
    assert!(data.join("space.reserve").exists(), "the reserve is kept");
    // The other job is running and reporting.
    let (status, msg) = other.post_events(vec![chunk(1, 0, b"hello\n")]).await;
    assert_eq!(status, StatusCode::OK, "{msg}");

    // The guest writes output until the disk is full.
    let block = vec![b'x'; 256 << 10];
    let started = Instant::now();
    let (mut seq, mut offset) = (0, 0);
    let refused = loop {
        assert!(started.elapsed() < Duration::from_secs(30), "never refused");
        seq += 1;
        let (status, msg) = g.post_events(vec![chunk(seq, offset, &block)]).await;
        if status != StatusCode::OK {
            break (status, msg);
        }
        offset += block.len() as u64;
    };
    eprintln!(
        "refused after {offset} bytes in {:.1} s: {refused:?}",
        started.elapsed().as_secs_f64()
    );
    let rec = until_state(host.manager(), &g.job_id, JobState::Failed, 10).await;
    let error = rec.error.clone().unwrap_or_default();
    assert!(error.starts_with(DATA_DIR_FULL), "{error}");
    assert!(
        error.contains("free of"),
        "the reason shows the space: {error}"
    );
    eprintln!(
        "failed {:.1} s after the first refusal: {error}",
        started.elapsed().as_secs_f64()
    );
    // Its VM is destroyed; its guest's next call is refused as final.
    let vm = fake.vms_of(&g.job_id)[0].clone();
    eventually(20, "the VM destroyed", || async {
        (!fake.is_alive(&vm)).then_some(())
    })
    .await;
    // (within the cancel grace it may still report, and is told to stop).
    let (status, ack) = g.post_events(vec![chunk(seq + 1, offset, b"more")]).await;
    assert!(
        status == StatusCode::CONFLICT || ack.contains(r#""cancel":true"#),
        "{status} {ack}"
    );
    // The other job is untouched.
    let other_rec = host.manager().get(&other.job_id).unwrap();
    assert_eq!(other_rec.state, JobState::Running);
    assert_eq!(other_rec.error, None);

    // Space returns: the other job is stored again, and the reserve is back
    // for the next time.
    std::fs::remove_file(&filler).unwrap();
    let (status, msg) = other.post_events(vec![chunk(2, 6, b"again\n")]).await;
    assert_eq!(status, StatusCode::OK, "{msg}");
    eventually(20, "the reserve back", || async {
        std::fs::metadata(data.join("space.reserve"))
            .ok()
            .filter(|m| m.len() == RESERVE_BYTES)
    })
    .await;
    assert_eq!(
        host.manager().get(&other.job_id).unwrap().state,
        JobState::Running
    );
    host.stop().await;
}

/// Fault suite, end to end: a real job in the local provider's sandbox
/// writes 100 MB of output into a data directory on a 32 MB file system.
/// It fails with "the host's data directory is full" (not a timeout or a
/// lost guest), its sandbox is gone, and once space returns the next job
/// runs to success.
///
/// It failed three runs in four before the guest stopped reporting its own
/// failed log writes with a panic (exit 101 once `guest.log`, in the full
/// data directory, could take no more): the job then ended 30 s later as
/// "heartbeat lease expired" with none of its output stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_job_that_fills_the_data_directory_fails_and_the_next_one_succeeds() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let fs = Tmpfs::mount("32m");
    let data = fs.dir.path().join("data");
    let filler = fs.dir.path().join("filler");
    std::fs::write(&filler, vec![1u8; 12 << 20]).unwrap();
    let host = local_host(&data, |s| s.max_log_bytes = 256 << 20).await;
    let m = host.manager().clone();
    let started = Instant::now();
    let id = m
        .submit(quiet_script(
            "yes 'a line of output that fills the disk' | head -c 100000000; echo never-here",
        ))
        .await
        .unwrap()
        .id;
    let rec = until_state(&m, &id, JobState::Failed, 120).await;
    let error = rec.error.clone().unwrap_or_default();
    eprintln!(
        "the full job failed after {:.1} s: {error}",
        started.elapsed().as_secs_f64()
    );
    assert!(error.starts_with(DATA_DIR_FULL), "{error}");
    // Its sandbox is gone, processes and directory.
    eventually(30, "the sandbox removed", || async {
        std::fs::read_dir(data.join("sandboxes"))
            .map(|rd| rd.count() == 0)
            .unwrap_or(true)
            .then_some(())
    })
    .await;

    // Space returns; the next job runs and is stored whole.
    std::fs::remove_file(&filler).unwrap();
    let next = m
        .submit(quiet_script("echo the next job; echo done >&2"))
        .await
        .unwrap()
        .id;
    let done = m
        .wait(&next, Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Success, "{done:?}");
    let out = m
        .read_log(&next, LogSelector::Stream(LogStream::Stdout), 0, 1 << 20)
        .unwrap();
    assert_eq!(out.data, b"the next job\n");
    host.stop().await;
}

/// A host whose stderr is a full disk goes on without its log: tracing's
/// subscriber reported each failed write with `eprintln!`, which panicked
/// (`serve` exited 101 at its first log line).
#[test]
fn a_full_stderr_does_not_stop_the_server() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_delegate-host"))
        .arg("serve")
        .env("RUST_LOG", "debug")
        .env("DELEGATE_DATA_DIR", dir.path().join("data"))
        .env("DELEGATE_PROVIDER", "local")
        .env("CALLBACK_HOST", "127.0.0.1")
        .env("CALLBACK_PORT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(full)
        .spawn()
        .expect("start delegate-host serve");
    // A whole MCP session on stdio; at the end of stdin the server exits.
    let session = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    ];
    let mut stdin = child.stdin.take().unwrap();
    for line in session {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{stdout}", out.status);
    assert!(stdout.contains(r#""name":"submit_job""#), "{stdout}");
}
