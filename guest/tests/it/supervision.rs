//! Supervision with real process trees: no descendant survives a timeout or
//! a cancel, including ones that ignore SIGTERM, left the session with
//! `setsid` and double-forked; with the job cgroup, without it
//! (`--no-cgroup`), and with the runner itself unprivileged.

use nix::sys::signal::Signal;
use serde_json::json;

use crate::support::LONG;
use crate::support::runner::{self, Finished, Job, guest_bin, is_root, processes_with, wait_until};

/// A tree that resists: the agent ignores SIGTERM and loops; one child
/// starts a new session and double-forks a grandchild that ignores SIGTERM;
/// another double-forks without setsid. Every process carries `marker` in
/// its environment.
const ESCAPE: &str = r#"
trap '' TERM
setsid bash -c 'trap "" TERM; (trap "" TERM; while :; do sleep 1; done) & while :; do sleep 1; done' &
( ( trap '' TERM; while :; do sleep 1; done ) & )
touch ready
while :; do sleep 1; done
"#;

fn escape_job(marker: &str, timeout: u64) -> Job {
    let m = json!({
        "task": ESCAPE, "agentType": "script", "timeout": timeout,
        "env": {"MARKER": marker},
    });
    Job::new(&m).arg("--grace-seconds").arg("1")
}

/// Waits until the tree is complete: the ready file exists and at least
/// five processes carry the marker, in at least two sessions.
fn wait_for_tree(job: &Job, marker: &str) {
    wait_until("the escape tree", LONG, || {
        let pids = processes_with(marker);
        let sessions: std::collections::BTreeSet<String> = pids
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .filter_map(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(3).map(str::to_string))
            })
            .collect();
        job.ws().join("ready").exists() && pids.len() >= 5 && sessions.len() >= 2
    });
}

fn assert_no_survivors(marker: &str) {
    // The runner has exited; anything left would be re-parented to init.
    let left = processes_with(marker);
    assert!(left.is_empty(), "survivors: {left:?}");
}

fn preparing_message(f: &Finished) -> String {
    f.of_type("phase")[0]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn timeout_kills_the_whole_tree_with_the_cgroup() {
    let marker = runner::marker("cg-timeout");
    let job = escape_job(&marker, 4);
    let mut run = job.start();
    wait_for_tree(&job, &marker);
    let f = {
        run.wait_for_phase("collecting");
        run.finish()
    };
    f.expect_code(124);
    assert_eq!(f.result()["signal"], "SIGKILL");
    assert!(
        f.result()["error"]
            .as_str()
            .unwrap()
            .contains("SIGKILL after the grace period")
    );
    assert_no_survivors(&marker);
}

#[test]
fn timeout_kills_the_whole_tree_without_a_cgroup() {
    let marker = runner::marker("nocg-timeout");
    let job = escape_job(&marker, 4).arg("--no-cgroup");
    let mut run = job.start();
    wait_for_tree(&job, &marker);
    run.wait_for_phase("collecting");
    let f = run.finish();
    f.expect_code(124);
    assert!(
        preparing_message(&f).contains("no cgroup (disabled); subreaper"),
        "{}",
        preparing_message(&f)
    );
    assert_no_survivors(&marker);
}

#[test]
fn the_no_cgroup_path_can_be_forced_by_environment() {
    let f = Job::new(&json!({"task": "grep ^0:: /proc/self/cgroup", "agentType": "script"}))
        .env("DELEGATE_GUEST_NO_CGROUP", "1")
        .run();
    f.expect_code(0);
    assert!(preparing_message(&f).contains("no cgroup (disabled)"));
    assert!(
        !f.result()["output"]["stdout"]["text"]
            .as_str()
            .unwrap()
            .contains("delegate-job-")
    );
}

#[test]
fn sigterm_to_the_runner_kills_the_whole_tree() {
    for extra in [None, Some("--no-cgroup")] {
        let marker = runner::marker("cancel");
        let mut job = escape_job(&marker, 600);
        if let Some(a) = extra {
            job = job.arg(a);
        }
        let run = job.start();
        wait_for_tree(&job, &marker);
        run.signal(Signal::SIGTERM);
        let f = run.finish();
        f.expect_code(130);
        assert_eq!(f.result()["status"], "cancelled");
        assert_no_survivors(&marker);
    }
}

#[test]
fn leftover_background_processes_are_stopped_when_the_agent_exits() {
    let marker = runner::marker("leftover");
    let m = json!({
        "task": "sleep 1000 & sleep 1000 & echo started",
        "agentType": "script", "env": {"MARKER": marker},
    });
    let f = Job::new(&m).run();
    f.expect_code(0);
    assert_eq!(f.result()["output"]["stdout"]["text"], "started\n");
    assert!(
        f.of_type("progress")
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("leftover"))
    );
    assert_no_survivors(&marker);
}

#[test]
fn the_agent_has_its_own_session_and_process_group() {
    let f = Job::new(&json!({
        "task": "read -r _ _ _ _ pgrp sid _ < /proc/self/stat; echo \"$$ $pgrp $sid\"",
        "agentType": "script"
    }))
    .run();
    f.expect_code(0);
    let text = f.result()["output"]["stdout"]["text"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();
    let ids: Vec<&str> = text.split(' ').collect();
    assert_eq!(ids.len(), 3, "{text}");
    assert!(
        ids[0] == ids[1] && ids[1] == ids[2],
        "pid, pgrp and sid differ: {text}"
    );
}

#[test]
fn the_agent_is_in_the_job_cgroup_when_one_works() {
    let f = Job::new(&json!({"task": "grep ^0:: /proc/self/cgroup", "agentType": "script"})).run();
    f.expect_code(0);
    let prep = preparing_message(&f);
    let out = f.result()["output"]["stdout"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    if prep.contains("no cgroup") {
        eprintln!("NOTE: no writable cgroup v2 here ({prep}); only the subreaper path ran");
        return;
    }
    assert!(prep.contains("cgroup.kill"), "{prep}");
    assert!(out.contains("/delegate-job-"), "{out}");
    let dir = prep
        .split("; ")
        .find_map(|p| p.strip_prefix("cgroup "))
        .and_then(|p| p.split(' ').next())
        .unwrap();
    assert!(
        !std::path::Path::new(&dir).exists(),
        "job cgroup {dir} was not removed"
    );
}

#[test]
fn memory_limit_applies_when_the_controller_is_available() {
    let m = json!({
        "task": "head -c 400M /dev/zero | tail > /dev/null",
        "agentType": "script", "resources": {"memory": "64M"},
    });
    let f = Job::new(&m).run();
    let prep = preparing_message(&f);
    if !prep.contains("memory.max") {
        eprintln!("NOTE: no cgroup memory controller here ({prep}); memory.max not tested");
        return;
    }
    f.expect_code(1);
    assert!(
        f.result()["error"]
            .as_str()
            .unwrap()
            .contains("memory limit")
    );
}

fn ids_of(f: &Finished) -> String {
    f.result()["output"]["stdout"]["text"]
        .as_str()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn root_runner_drops_privileges_unless_told_not_to() {
    if !is_root() {
        eprintln!("NOTE: not root; privilege dropping not tested");
        return;
    }
    let m = json!({"task": "echo $(id -u) $(id -un) $USER; touch mine", "agentType": "script"});
    let job = Job::new(&m);
    let f = job.run();
    f.expect_code(0);
    let out = ids_of(&f);
    assert!(!out.starts_with("0 "), "agent ran as root: {out}");
    let user = out.split(' ').nth(1).unwrap().to_string();
    assert!(user == "delegate" || user == "nobody", "{out}");
    assert!(out.ends_with(&user));
    // The workspace belongs to the agent's user.
    let meta = std::fs::metadata(job.ws().join("mine")).unwrap();
    assert_ne!(std::os::unix::fs::MetadataExt::uid(&meta), 0);

    let f = Job::new(&m).arg("--no-drop-privileges").run();
    f.expect_code(0);
    assert!(ids_of(&f).starts_with("0 root"), "{}", ids_of(&f));

    let f = Job::new(&m).arg("--run-as").arg("nobody").run();
    f.expect_code(0);
    assert!(ids_of(&f).starts_with("65534 nobody"), "{}", ids_of(&f));

    let f = Job::new(&m).arg("--run-as").arg("no-such-user-xyz").run();
    f.expect_code(1);
    assert!(
        f.result()["error"]
            .as_str()
            .unwrap()
            .contains("no-such-user-xyz")
    );
}

#[test]
fn rlimits_are_set() {
    let m = json!({
        "task": "echo $(ulimit -c) $(ulimit -n) $(ulimit -u) $(ulimit -f)",
        "agentType": "script", "resources": {"disk": "1G"},
    });
    let f = Job::new(&m).run();
    f.expect_code(0);
    let out = ids_of(&f);
    let v: Vec<&str> = out.split(' ').collect();
    assert_eq!(v[0], "0", "core dumps off: {out}");
    assert!(v[1].parse::<u64>().unwrap() <= 65536, "{out}");
    if is_root() {
        assert_eq!(v[2], "4096", "nproc when dropping privileges: {out}");
    }
    assert_eq!(v[3], "1048576", "fsize in 1 KiB blocks = 1G: {out}");
}

/// Runs the runner as `nobody` (via setpriv) when the tests are root;
/// otherwise the tests already run unprivileged.
fn unprivileged(job: Job) -> Job {
    if !is_root() {
        return job;
    }
    let uid = nix::unistd::Uid::from_raw(65534);
    let gid = nix::unistd::Gid::from_raw(65534);
    nix::unistd::chown(job.dir.path(), Some(uid), Some(gid)).unwrap();
    nix::unistd::chown(&job.path("manifest.json"), Some(uid), Some(gid)).unwrap();
    let mut job = job;
    job.prefix = vec![
        "setpriv".into(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
    ];
    job
}

#[test]
fn an_unprivileged_runner_works_and_kills_the_tree() {
    let f = unprivileged(Job::new(&json!({
        "task": "id -u; echo x > out.txt", "agentType": "script", "artifacts": ["out.txt"]
    })))
    .arg("--artifacts-out")
    .arg("/dev/null")
    .run();
    f.expect_code(0);
    let prep = preparing_message(&f);
    assert!(prep.contains("agent runs as the runner's user"), "{prep}");
    if is_root() {
        assert_eq!(ids_of(&f), "65534");
    }
    assert_eq!(f.result()["artifacts"][0]["path"], "out.txt");

    let marker = runner::marker("unpriv");
    let job = unprivileged(escape_job(&marker, 4));
    let mut run = job.start();
    wait_for_tree(&job, &marker);
    run.wait_for_phase("collecting");
    let f = run.finish();
    f.expect_code(124);
    assert_no_survivors(&marker);
}

#[test]
fn a_stopped_process_is_still_ended() {
    let marker = runner::marker("stopped");
    let m = json!({
        "task": "sleep 1000 & kill -STOP $!; touch ready; sleep 1000",
        "agentType": "script", "timeout": 2, "env": {"MARKER": marker},
    });
    let f = Job::new(&m).arg("--grace-seconds").arg("30").run();
    f.expect_code(124);
    // SIGCONT after SIGTERM lets the stopped sleep die at once, well
    // before the 30 s grace period would force SIGKILL.
    assert!(
        f.result()["error"]
            .as_str()
            .map(|e| !e.contains("SIGKILL"))
            .unwrap_or(false),
        "{}",
        f.result()
    );
    assert_no_survivors(&marker);
}

#[test]
fn the_fork_fallback_joins_the_cgroup_and_kills_the_tree() {
    // As on kernels, or in containers, without clone3.
    let f = Job::new(&json!({"task": "grep ^0:: /proc/self/cgroup", "agentType": "script"}))
        .env("DELEGATE_GUEST_NO_CLONE3", "1")
        .run();
    f.expect_code(0);
    if !preparing_message(&f).contains("no cgroup") {
        assert!(ids_of(&f).contains("/delegate-job-"), "{}", ids_of(&f));
    }
    let marker = runner::marker("fork");
    let job = escape_job(&marker, 4).env("DELEGATE_GUEST_NO_CLONE3", "1");
    let mut run = job.start();
    wait_for_tree(&job, &marker);
    run.wait_for_phase("collecting");
    run.finish().expect_code(124);
    assert_no_survivors(&marker);
}

#[test]
fn an_exec_failure_in_the_child_is_reported() {
    let m = json!({
        "task": "t", "agentType": "custom", "agent": {"command": "./not-a-program"},
        "files": [{"path": "not-a-program", "content": "AAECAwQ=", "mode": "0755"}],
    });
    for env in ["0", "1"] {
        let f = Job::new(&m).env("DELEGATE_GUEST_NO_CLONE3", env).run();
        f.expect_code(1);
        let r = f.result();
        assert_eq!(r["error_kind"], "spawn");
        let e = r["error"].as_str().unwrap();
        assert!(e.contains("exec") && e.contains("format"), "{e}");
    }
}

#[test]
fn the_agent_starts_with_default_signal_dispositions() {
    // The runner ignores SIGPIPE (Rust does); the agent must not inherit it,
    // or `yes | head` would spin on EPIPE instead of dying quietly.
    let f = Job::new(&json!({
        "task": "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -1 > /dev/null; echo \"yes: ${PIPESTATUS[0]}\"",
        "agentType": "script"
    }))
    .run();
    f.expect_code(0);
    assert_eq!(
        ids_of(&f),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nyes: 141"
    );
}

#[test]
fn the_timeout_is_enforced_while_nobody_reads_stdout() {
    use std::io::Read;
    // Streaming mode fills the stdout pipe at once; the reporter blocks on
    // it. The timeout must still end the agent's tree.
    let marker = runner::marker("stalled");
    let m = json!({
        "task": "yes stalled-output | head -c 10000000; sleep 600",
        "agentType": "script", "timeout": 2, "statusMode": "streaming",
        "env": {"MARKER": marker},
    });
    let job = Job::new(&m).arg("--grace-seconds").arg("1");
    let mut child = std::process::Command::new(guest_bin())
        .arg("run")
        .arg(job.path("manifest.json"))
        .args(&job.args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the agent to start", LONG, || {
        !processes_with(&marker).is_empty()
    });
    // Not reading stdout: the tree must die anyway.
    wait_until("the stalled job's tree to be killed", LONG, || {
        processes_with(&marker).is_empty()
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(124));
    let last = String::from_utf8(out)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(last.contains("\"status\":\"timeout\""), "{last}");
}
