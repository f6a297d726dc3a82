//! Input files, the agent's environment, secrets, and how `script` and
//! `custom` agents are run.

use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::runner::{Finished, Job, tempdir};

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn stdout(f: &Finished) -> String {
    f.result()["output"]["stdout"]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn files_are_written_with_parents_and_modes_before_the_agent_runs() {
    let m = json!({
        "task": "./bin/run.sh && cat data/deep/x.txt", "agentType": "script",
        "files": [
            {"path": "/workspace/bin/run.sh", "content": b64(b"#!/bin/sh\necho ran\n"), "mode": "0755"},
            {"path": "data/deep/x.txt", "content": b64(b"\x00\xffbinary ok"), "mode": 384},
        ],
    });
    let job = Job::new(&m);
    let f = job.run();
    f.expect_code(0);
    assert!(stdout(&f).starts_with("ran\n"));
    let mode = |p: &str| {
        std::fs::metadata(job.ws().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("bin/run.sh"), 0o755);
    assert_eq!(mode("data/deep/x.txt"), 0o600);
    assert_eq!(
        std::fs::read(job.ws().join("data/deep/x.txt")).unwrap(),
        b"\x00\xffbinary ok"
    );
}

#[test]
fn symlink_tricks_in_an_existing_workspace_are_refused_before_anything_runs() {
    let outside = tempdir();
    for path in ["escape/passwd", "link-file"] {
        let m = json!({
            "task": "touch agent-ran", "agentType": "script",
            "files": [{"path": "ok.txt", "content": b64(b"fine")}, {"path": path, "content": b64(b"pwned")}],
        });
        let job = Job::new(&m);
        std::fs::create_dir_all(job.ws()).unwrap();
        std::os::unix::fs::symlink(outside.path(), job.ws().join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("target"), job.ws().join("link-file"))
            .unwrap();
        let f = job.run();
        f.expect_code(1);
        let r = f.result();
        assert_eq!(r["error_kind"], "unpack");
        assert!(
            r["error"].as_str().unwrap().contains("symbolic link"),
            "{r}"
        );
        assert!(!job.ws().join("agent-ran").exists(), "the agent ran");
        assert!(
            !job.ws().join("ok.txt").exists(),
            "a file was written before the refusal"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}

#[test]
fn traversal_and_foreign_absolute_paths_are_refused() {
    for path in ["../x", "a/../../x", "/etc/cron.d/x", "/workspace/../etc/x"] {
        let m = json!({"task": "true", "agentType": "script", "files": [{"path": path, "content": ""}]});
        let f = Job::new(&m).run();
        f.expect_code(2);
        assert!(f.stderr.contains("files[0].path"), "{path}: {}", f.stderr);
    }
}

#[test]
fn the_environment_is_clean_plus_the_manifest() {
    let m = json!({
        "task": "env | sort", "agentType": "script",
        "env": {"FOO": "bar baz", "LANG": "en_US.UTF-8"},
    });
    let job = Job::new(&m).env("RUNNER_ONLY_SECRET", "must-not-leak");
    let f = job.run();
    f.expect_code(0);
    let out = stdout(&f);
    assert!(!out.contains("RUNNER_ONLY_SECRET"), "{out}");
    assert!(out.contains("FOO=bar baz\n"));
    assert!(out.contains("LANG=en_US.UTF-8\n"));
    assert!(out.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"));
    // The agent sees its workspace at /workspace where bwrap can show it
    // there (issue 8), else at its real path; WORKSPACE says which.
    let real = job.ws().canonicalize().unwrap();
    let ws = if out.contains("WORKSPACE=/workspace\n") {
        std::path::PathBuf::from("/workspace")
    } else {
        assert!(
            out.contains(&format!("WORKSPACE={}\n", real.display())),
            "{out}"
        );
        real
    };
    assert!(
        out.contains(&format!("HOME={}/.delegate/home\n", ws.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("TMPDIR={}/.delegate/tmp\n", ws.display())),
        "{out}"
    );
}

#[test]
fn home_and_tmpdir_are_writable_by_the_agent() {
    let f = Job::new(&json!({
        "task": "touch \"$HOME/h\" \"$TMPDIR/t\" && mktemp && echo ok",
        "agentType": "script"
    }))
    .run();
    f.expect_code(0);
    assert!(stdout(&f).ends_with("ok\n"));
}

const SECRET: &str = "hunter2-SECRET-value";

#[test]
fn secrets_are_redacted_everywhere_even_when_split_across_writes() {
    // The secret is printed in two writes 200 ms apart, so the runner reads
    // it in two pieces; and whole, on stderr.
    let task = "printf 'a=%s' \"${PW:0:7}\"; sleep 0.2; printf '%s\\n' \"${PW:7}\"; echo \"err $PW\" >&2; exit 4";
    let m = json!({
        "task": task, "agentType": "script", "statusMode": "streaming",
        "env": {"PW": SECRET, "OTHER": "not secret"}, "secrets": ["PW"],
    });
    let job = Job::new(&m);
    let f = job.run();
    f.expect_code(1);
    let all: String = f
        .lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!all.contains(SECRET), "secret on stdout: {all}");
    assert!(
        !all.contains("hunter2"),
        "first piece of the split secret leaked"
    );
    assert!(!f.stderr.contains(SECRET));
    assert_eq!(stdout(&f), "a=***\n");
    assert_eq!(f.result()["output"]["stderr"]["text"], "err ***\n");
    assert_eq!(f.log_bytes("stdout"), b"a=***\n");
    for log in ["stdout.log", "stderr.log"] {
        let text = std::fs::read_to_string(job.logs().join(log)).unwrap();
        assert!(
            !text.contains(SECRET) && text.contains("***"),
            "{log}: {text}"
        );
    }
}

#[test]
fn script_runs_exactly_as_written_by_bash() {
    let script = "set -e; x='$(echo not-expanded)'; echo \"$x\"; echo $((6*7)); echo \"${BASH_VERSION:+bash}\"";
    let f = Job::new(&json!({"task": script, "agentType": "script"})).run();
    f.expect_code(0);
    assert_eq!(stdout(&f), "$(echo not-expanded)\n42\nbash\n");
    // agent.command wins over task.
    let f = Job::new(&json!({"task": "exit 9", "agentType": "script", "agent": {"command": "echo from-command"}})).run();
    f.expect_code(0);
    assert_eq!(stdout(&f), "from-command\n");
}

#[test]
fn custom_runs_argv_directly_without_a_shell() {
    let args = ["a b", "$HOME", "; rm -rf /", "*", "'q'"];
    let m = json!({
        "task": "print args", "agentType": "custom",
        "agent": {"command": "printf", "args": std::iter::once("[%s]").chain(args).collect::<Vec<_>>()},
    });
    let f = Job::new(&m).run();
    f.expect_code(0);
    assert_eq!(stdout(&f), "[a b][$HOME][; rm -rf /][*]['q']");
    // A relative command is found in the workspace.
    let m = json!({
        "task": "t", "agentType": "custom", "agent": {"command": "./tool", "args": ["x"]},
        "files": [{"path": "tool", "content": b64(b"#!/bin/sh\necho tool:$1\n"), "mode": "755"}],
    });
    let f = Job::new(&m).run();
    f.expect_code(0);
    assert_eq!(stdout(&f), "tool:x\n");
}
