//! Output: log chunks with byte offsets, full logs on disk, bounded tails,
//! invalid UTF-8, and a gigabyte through the runner without memory growth
//! (measured as the runner's peak RSS from /proc, not timed).

use serde_json::json;

use crate::support::runner::{Job, is_root};

#[test]
fn streamed_chunks_are_contiguous_and_match_the_log_files() {
    let m = json!({
        "task": "for i in $(seq 1 2000); do echo \"line $i é€\"; echo \"err $i\" >&2; done",
        "agentType": "script", "statusMode": "streaming",
    });
    let job = Job::new(&m);
    let f = job.run();
    f.expect_code(0);
    let out = f.log_bytes("stdout");
    let err = f.log_bytes("stderr");
    assert_eq!(out, std::fs::read(job.logs().join("stdout.log")).unwrap());
    assert_eq!(err, std::fs::read(job.logs().join("stderr.log")).unwrap());
    let expected: String = (1..=2000).map(|i| format!("line {i} é€\n")).collect();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    // Multi-byte characters are never split across chunks: all are text.
    assert!(f.of_type("log").iter().all(|e| e.get("text").is_some()));
}

#[test]
fn invalid_utf8_travels_as_base64_and_tails_are_lossy() {
    let m = json!({
        "task": "printf 'ok\\377\\376\\000end'", "agentType": "script", "statusMode": "streaming",
    });
    let job = Job::new(&m);
    let f = job.run();
    f.expect_code(0);
    assert_eq!(f.log_bytes("stdout"), b"ok\xff\xfe\x00end");
    assert!(f.of_type("log").iter().any(|e| e.get("base64").is_some()));
    let tail = &f.result()["output"]["stdout"];
    assert_eq!(tail["text"], "ok\u{fffd}\u{fffd}\u{0}end");
    assert_eq!(tail["total_bytes"], 8);
    assert_eq!(
        std::fs::read(job.logs().join("stdout.log")).unwrap(),
        b"ok\xff\xfe\x00end"
    );
}

#[test]
fn tails_are_bounded_and_marked_truncated() {
    let m = json!({"task": "seq 1 100000; echo short >&2", "agentType": "script"});
    let job = Job::new(&m).arg("--tail-bytes").arg("1000");
    let f = job.run();
    f.expect_code(0);
    let out = &f.result()["output"]["stdout"];
    assert_eq!(out["truncated"], true);
    let text = out["text"].as_str().unwrap();
    assert_eq!(text.len(), 1000);
    assert!(text.ends_with("99999\n100000\n"));
    let full = std::fs::read(job.logs().join("stdout.log")).unwrap();
    assert_eq!(out["total_bytes"].as_u64().unwrap(), full.len() as u64);
    assert_eq!(f.result()["output"]["stderr"]["truncated"], false);
    // Default tail is 64 KiB.
    let f = Job::new(&m).run();
    assert_eq!(
        f.result()["output"]["stdout"]["text"]
            .as_str()
            .unwrap()
            .len(),
        65536
    );
}

#[test]
fn log_dir_can_be_chosen() {
    let job = Job::new(&json!({"task": "echo to-file", "agentType": "script"}));
    let logs = job.path("my-logs");
    let job = job.arg("--log-dir").arg(logs.display().to_string());
    let f = job.run();
    f.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(logs.join("stdout.log")).unwrap(),
        "to-file\n"
    );
}

/// Peak RSS (KiB) allowed for the runner: it streams, so a gigabyte of
/// output must not show up here. Debug builds carry some fat; 64 MiB is
/// still 16x below what buffering the output would need.
const MAX_RSS_KIB: u64 = 64 * 1024;

#[test]
fn a_gigabyte_of_output_keeps_memory_flat() {
    let m = json!({
        "task": "head -c 1073741824 /dev/zero; head -c 1048576 /dev/zero >&2",
        "agentType": "script", "statusMode": "detailed",
    });
    let job = Job::new(&m);
    let mut run = job.start();
    run.wait_for_phase("collecting");
    // The output has been processed; the runner is still alive to measure.
    let rss = run.sample_rss();
    let f = run.finish();
    f.expect_code(0);
    assert_eq!(f.result()["output"]["stdout"]["total_bytes"], 1u64 << 30);
    assert_eq!(f.result()["output"]["stdout"]["truncated"], true);
    let log = job.logs().join("stdout.log");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 1 << 30);
    std::fs::remove_file(log).unwrap();
    assert!(rss > 0, "could not read the runner's VmHWM");
    assert!(
        rss < MAX_RSS_KIB,
        "runner peak RSS {rss} KiB for 1 GiB of output"
    );
    eprintln!("runner peak RSS for 1 GiB of output: {rss} KiB");
}

#[test]
fn streaming_a_large_output_keeps_memory_flat_too() {
    // 64 MiB as log chunks on stdout, which this test reads as it comes.
    let m = json!({
        "task": "yes 'some log text of a typical length, repeated many times' | head -c 67108864",
        "agentType": "script", "statusMode": "streaming",
    });
    let job = Job::new(&m);
    let mut run = job.start();
    run.wait_for_phase("collecting");
    let rss = run.sample_rss();
    let f = run.finish();
    f.expect_code(0);
    assert_eq!(f.result()["output"]["stdout"]["total_bytes"], 64u64 << 20);
    let streamed: u64 = f
        .of_type("log")
        .iter()
        .map(|e| e["text"].as_str().map_or(0, |t| t.len() as u64))
        .sum();
    assert_eq!(streamed, 64 << 20);
    assert!(
        rss < MAX_RSS_KIB,
        "runner peak RSS {rss} KiB while streaming 64 MiB"
    );
}

#[test]
fn a_full_log_disk_does_not_stop_the_job() {
    if !is_root() {
        eprintln!("NOTE: not root; cannot mount a small tmpfs for the full-disk case");
        return;
    }
    // 4 MiB of output into a log directory that holds 1 MiB.
    let m = json!({"task": "head -c 4194304 /dev/zero; echo end", "agentType": "script"});
    let job = Job::new(&m);
    let logs = job.path("small-logs");
    std::fs::create_dir(&logs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&logs)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(logs.clone());
    let job = job.arg("--log-dir").arg(logs.display().to_string());
    let f = job.run();
    f.expect_code(0);
    let out = &f.result()["output"]["stdout"];
    assert_eq!(out["total_bytes"], 4194304 + 4);
    assert!(out["text"].as_str().unwrap().ends_with("\0\0end\n"));
    assert!(f.stderr.contains("log is incomplete"), "{}", f.stderr);
}
