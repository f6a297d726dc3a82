//! Status on stdout: one JSON event per line with sequence numbers from 1,
//! filtered by `statusMode`; heartbeats every N seconds; the result last.

use serde_json::json;

use crate::support::runner::{Finished, Job};

fn types(f: &Finished) -> Vec<String> {
    f.events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn job(mode: &str) -> Job {
    // Runs long enough for heartbeats at 1 s; prints on both streams.
    let m = json!({
        "task": "echo out; echo err >&2; sleep 2.5; echo more",
        "agentType": "script", "statusMode": mode,
    });
    Job::new(&m).arg("--heartbeat-seconds").arg("1")
}

#[test]
fn simple_sends_phases_and_the_result() {
    let f = job("simple").run();
    f.expect_code(0);
    assert!(types(&f).iter().all(|t| t == "phase"), "{:?}", types(&f));
    assert_eq!(f.phases().len(), 6);
}

#[test]
fn detailed_adds_heartbeats_and_progress_but_no_logs() {
    let f = job("detailed").run();
    f.expect_code(0);
    let t = types(&f);
    assert!(t.iter().any(|t| t == "heartbeat"), "{t:?}");
    assert!(!t.iter().any(|t| t == "log"), "{t:?}");
    let last_hb = f.of_type("heartbeat").into_iter().last().unwrap().clone();
    assert!(last_hb["stdout_bytes"].as_u64().unwrap() >= 4);
    assert_eq!(last_hb["stderr_bytes"], 4);
}

#[test]
fn streaming_adds_log_chunks_and_detailed_is_the_default() {
    let f = job("streaming").run();
    f.expect_code(0);
    assert_eq!(f.log_bytes("stdout"), b"out\nmore\n");
    assert_eq!(f.log_bytes("stderr"), b"err\n");
    assert!(types(&f).iter().any(|t| t == "heartbeat"));

    let f = Job::new(&json!({"task": "echo x", "agentType": "script"})).run();
    assert!(!types(&f).iter().any(|t| t == "log"));
}

#[test]
fn sequence_numbers_start_at_1_and_grow_by_one() {
    for mode in ["simple", "detailed", "streaming"] {
        let f = job(mode).run();
        let seqs: Vec<u64> = f
            .events()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{mode}");
        assert!(
            f.events()
                .iter()
                .all(|e| e["time_ms"].as_u64().unwrap() > 1_600_000_000_000)
        );
        assert_eq!(f.lines.last().unwrap()["type"], "result");
    }
}
