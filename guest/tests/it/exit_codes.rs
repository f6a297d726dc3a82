//! `delegate-guest run` exit statuses: 0 success, 1 failed, 124 timeout,
//! 130 cancelled, 2 invalid manifest or usage, and the result line each
//! time.

use nix::sys::signal::Signal;
use serde_json::json;

use crate::support::LONG;
use crate::support::runner::{Job, guest_bin, tempdir, wait_until};

fn script(task: &str) -> serde_json::Value {
    json!({"task": task, "agentType": "script"})
}

#[test]
fn success_is_0_with_phases_in_order() {
    let f = Job::new(&script("echo hi")).run();
    f.expect_code(0);
    let r = f.result();
    assert_eq!(r["status"], "success");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["signal"], serde_json::Value::Null);
    assert_eq!(r["output"]["stdout"]["text"], "hi\n");
    assert_eq!(
        f.phases(),
        [
            "preparing",
            "unpacking",
            "running",
            "collecting",
            "uploading",
            "done"
        ]
    );
    assert!(f.stderr.contains("result: success"), "{}", f.stderr);
}

#[test]
fn non_zero_exit_is_1_and_names_the_code() {
    let f = Job::new(&script("echo oops >&2; exit 3")).run();
    f.expect_code(1);
    let r = f.result();
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["error_kind"], "exit");
    assert!(r["error"].as_str().unwrap().contains("code 3"));
    assert_eq!(r["output"]["stderr"]["text"], "oops\n");
}

#[test]
fn a_signalled_agent_reports_the_signal_name() {
    let f = Job::new(&script("kill -SEGV $$")).run();
    f.expect_code(1);
    let r = f.result();
    assert_eq!(r["exit_code"], serde_json::Value::Null);
    assert_eq!(r["signal"], "SIGSEGV");
    assert!(r["error"].as_str().unwrap().contains("SIGSEGV"));
}

#[test]
fn timeout_is_124() {
    let m = json!({"task": "sleep 600", "agentType": "script", "timeout": 1});
    let f = Job::new(&m).arg("--grace-seconds").arg("5").run();
    f.expect_code(124);
    let r = f.result();
    assert_eq!(r["status"], "timeout");
    assert_eq!(r["error_kind"], "timeout");
    // sleep dies of the SIGTERM within the grace period.
    assert_eq!(r["signal"], "SIGTERM");
    assert!(r["error"].as_str().unwrap().contains("timed out after 1s"));
}

#[test]
fn sigterm_and_sigint_to_the_runner_cancel_with_130() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let job = Job::new(&script("touch started; sleep 600"));
        let mut run = job.start();
        run.wait_for_phase("running");
        wait_until("agent start", LONG, || job.ws().join("started").exists());
        run.signal(sig);
        let f = run.finish();
        f.expect_code(130);
        let r = f.result();
        assert_eq!(r["status"], "cancelled");
        assert_eq!(r["error_kind"], "cancelled");
        assert!(r["error"].as_str().unwrap().contains(sig.as_str()), "{r}");
        assert_eq!(f.phases().last().unwrap(), "done");
    }
}

#[test]
fn an_invalid_manifest_is_2_and_names_the_field() {
    for (manifest, field) in [
        (json!({"agentType": "script"}), "task"),
        (
            json!({"task": "x", "agentType": "script", "timeout": 0}),
            "timeout",
        ),
        (json!({"task": "x", "agentType": "custom"}), "agent.command"),
        (
            json!({"task": "x", "agentType": "script", "files": [{"path": "../evil", "content": ""}]}),
            "files[0].path",
        ),
        (
            json!({"task": "x", "agentType": "script", "resources": {"memory": "lots"}}),
            "resources.memory",
        ),
    ] {
        let f = Job::new(&manifest).run();
        f.expect_code(2);
        assert!(f.stderr.contains(field), "{field}: {}", f.stderr);
        let r = f.result();
        assert_eq!(r["error_kind"], "invalid_manifest");
        assert!(r["error"].as_str().unwrap().contains(field));
        assert_eq!(f.lines.len(), 1, "nothing runs for an invalid manifest");
    }
}

#[test]
fn usage_errors_are_2() {
    let dir = tempdir();
    let missing = dir.path().join("nope.json");
    for args in [
        vec!["run".to_string()],
        vec!["run".into(), "m.json".into(), "--no-such-flag".into()],
        vec!["run".into(), missing.display().to_string()],
        vec![
            "run".into(),
            "m.json".into(),
            "--callback".into(),
            "http://127.0.0.1:9".into(),
        ],
    ] {
        let out = std::process::Command::new(guest_bin())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_missing_program_fails_before_anything_runs() {
    let m =
        json!({"task": "t", "agentType": "custom", "agent": {"command": "no-such-program-xyz"}});
    let f = Job::new(&m).run();
    f.expect_code(1);
    let r = f.result();
    assert_eq!(r["error_kind"], "spawn");
    assert!(r["error"].as_str().unwrap().contains("no-such-program-xyz"));
    assert!(!f.phases().contains(&"running".to_string()));
}
