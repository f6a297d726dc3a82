//! A large artifact upload streams from disk: the process's peak memory
//! does not grow with the file.
//!
//! A test binary of its own, not a module of `it/`: peak memory (VmHWM) is
//! one number for the whole process, and the tests of one binary run in
//! parallel threads, so any other test's allocations would move the peak
//! this test measures (it allows 48 MiB of growth; the callback tests
//! beside it queue and spool megabytes of events).

/// The `it` binary's callback host; only its artifact route is used here.
#[path = "it/support/host.rs"]
#[expect(
    dead_code,
    reason = "the rest of the shared test host serves the `it` binary"
)]
mod host;

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use delegate_guest::callback::{CallbackClient, CallbackOptions, RetryPolicy};
use host::{JOB_ID, TestHost, token};

const SIZE: u64 = 96 * 1024 * 1024;

/// Peak resident memory (VmHWM) of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Resets VmHWM to the current RSS (Linux >= 4.0).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", b"5").unwrap();
}

/// The file's hash by coreutils (hashing in a debug build is slow).
fn sha256sum(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_is_streamed_not_buffered() {
    let host = TestHost::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tar.gz");
    // Sparse, so the test costs no disk; marked at both ends so a truncated
    // or reordered upload changes the hash.
    {
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"head-marker").unwrap();
        f.seek(SeekFrom::Start(SIZE - 11)).unwrap();
        f.write_all(b"tail-marker").unwrap();
    }
    let opts = CallbackOptions {
        upload_retry: RetryPolicy::with_budget(Duration::from_secs(60)),
        ..CallbackOptions::default()
    };
    let client = CallbackClient::new(&host.url(), JOB_ID, token(), opts).unwrap();
    // Warm up the client, the host and the allocator with a small upload.
    let small = dir.path().join("small.tar.gz");
    std::fs::write(&small, b"x").unwrap();
    client.upload_artifacts(&small).await.unwrap();

    reset_peak_rss();
    let before = peak_rss();
    let ack = client.upload_artifacts(&path).await.unwrap();
    let growth = peak_rss().saturating_sub(before);

    assert_eq!(ack.size, SIZE);
    assert_eq!(ack.sha256, sha256sum(&path));
    assert!(
        growth < SIZE / 2,
        "peak memory grew by {} MiB for a {} MiB upload",
        growth >> 20,
        SIZE >> 20
    );
    eprintln!(
        "upload of {} MiB: peak memory grew by {} KiB",
        SIZE >> 20,
        growth >> 10
    );
}
