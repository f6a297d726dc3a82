//! A full disk never makes the guest panic: its own diagnostics on a full
//! file system are lost, the job still ends with its result (the guest once
//! exited 101 writing its summary to a `guest.log` on a full file system).

use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::runner::{guest_bin, is_root, tempdir};

/// Runs `echo hi` standalone with stderr on `stderr` and the workspace in
/// `ws`; returns the exit code and stdout.
fn run_with_stderr(stderr: std::fs::File, ws: &std::path::Path) -> (Option<i32>, String) {
    run_logging(stderr, ws, "warn")
}

/// The same with the guest's own log at `level` (`DELEGATE_GUEST_LOG`).
fn run_logging(stderr: std::fs::File, ws: &std::path::Path, level: &str) -> (Option<i32>, String) {
    let dir = tempdir();
    let manifest = dir.path().join("manifest.json");
    std::fs::write(
        &manifest,
        json!({"task": "echo hi; echo oops >&2", "agentType": "script"}).to_string(),
    )
    .unwrap();
    let out = Command::new(guest_bin())
        .arg("run")
        .arg(&manifest)
        .arg("--workspace")
        .arg(ws)
        .env("DELEGATE_GUEST_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .output()
        .expect("cannot start delegate-guest");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
    )
}

#[test]
fn a_full_stderr_does_not_panic() {
    // /dev/full answers every write with ENOSPC, as a full file system does.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let dir = tempdir();
    let (code, stdout) = run_with_stderr(full, &dir.path().join("ws"));
    assert_eq!(code, Some(0), "stdout: {stdout}");
    assert!(stdout.contains(r#""status":"success""#), "{stdout}");
}

/// Log lines that cannot be written are lost, not reported with a panic:
/// tracing's subscriber reported its write errors with `eprintln!` on the
/// same full stderr, and the guest exited 101 (a local sandbox whose
/// `guest.log` filled the data directory, in the fault suite).
#[test]
fn a_full_stderr_with_the_log_on_does_not_panic() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let dir = tempdir();
    let (code, stdout) = run_logging(full, &dir.path().join("ws"), "debug");
    assert_eq!(code, Some(0), "stdout: {stdout}");
    assert!(stdout.contains(r#""status":"success""#), "{stdout}");
}

/// A small tmpfs this test mounts and fills, unmounted on drop.
struct FullTmpfs {
    dir: tempfile::TempDir,
}

impl FullTmpfs {
    fn mount() -> FullTmpfs {
        let dir = tempdir();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount")
            .success();
        assert!(ok, "cannot mount a tmpfs on {}", dir.path().display());
        // Fill it: writes stop with ENOSPC.
        let filler = std::fs::File::create(dir.path().join("filler")).unwrap();
        let mut w = std::io::BufWriter::new(filler);
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut w, &block).is_ok() {}
        FullTmpfs { dir }
    }
}

impl Drop for FullTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_log_file_system_does_not_panic() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let fs = FullTmpfs::mount();
    // The guest's own log is a file on the full file system, as the local
    // provider's guest.log is in the host's data directory.
    let log = std::fs::File::create(fs.dir.path().join("guest.log")).unwrap();
    let dir = tempdir();
    let (code, stdout) = run_with_stderr(log, &dir.path().join("ws"));
    assert_eq!(code, Some(0), "stdout: {stdout}");
    assert!(stdout.contains(r#""status":"success""#), "{stdout}");
}
