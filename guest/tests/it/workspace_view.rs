//! A standalone run shows the agent its workspace at `/workspace` (issue
//! 8), and where user namespaces are not allowed it says so and gives the
//! agent the real path in `WORKSPACE`.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::runner::{guest_bin, tempdir};

/// "from the input\n"
const INPUT: &str = "ZnJvbSB0aGUgaW5wdXQK";

fn manifest(dir: &Path, task: &str) -> std::path::PathBuf {
    let m = json!({
        "task": task,
        "agentType": "script",
        "files": [{"path": "/workspace/in.txt", "content": INPUT}],
    });
    let path = dir.join("m.json");
    std::fs::write(&path, m.to_string()).unwrap();
    path
}

/// Runs `argv` (which ends in the guest's arguments); the result line and
/// stderr.
fn run(argv: &mut Command) -> (Value, String) {
    let out = argv.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let result = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "result")
        .unwrap_or_else(|| panic!("no result\n{stdout}\n{stderr}"));
    (result, stderr)
}

fn stdout_of(result: &Value) -> &str {
    result["output"]["stdout"]["text"].as_str().unwrap()
}

#[test]
fn the_agent_finds_its_workspace_at_workspace() {
    let dir = tempdir();
    let ws = dir.path().join("ws");
    let m = manifest(
        dir.path(),
        "cd /workspace && cat in.txt && echo \"WORKSPACE=$WORKSPACE\" && pwd",
    );
    let (result, stderr) = run(Command::new(guest_bin())
        .arg("run")
        .arg(&m)
        .arg("--workspace")
        .arg(&ws));
    assert_eq!(result["status"], "success", "{result}\n{stderr}");
    assert_eq!(
        stdout_of(&result),
        "from the input\nWORKSPACE=/workspace\n/workspace\n"
    );
    assert!(stderr.contains("at /workspace"), "{stderr}");
    // The file is really in the workspace on the host.
    assert_eq!(
        std::fs::read_to_string(ws.join("in.txt")).unwrap(),
        "from the input\n"
    );
}

#[test]
fn without_user_namespaces_the_agent_gets_the_real_path_and_the_summary_says_why() {
    let Some(bwrap) = ["/usr/bin/bwrap", "/bin/bwrap"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: no bwrap to take user namespaces away with");
        return;
    };
    let dir = tempdir();
    let ws = dir.path().join("ws");
    let m = manifest(
        dir.path(),
        "cat \"$WORKSPACE/in.txt\" && echo \"WORKSPACE=$WORKSPACE\" && pwd",
    );
    // The runner in a user namespace that allows no further ones.
    let (result, stderr) = run(Command::new(bwrap)
        .args([
            "--unshare-user",
            "--disable-userns",
            "--dev-bind",
            "/",
            "/",
            "--",
        ])
        .arg(guest_bin())
        .arg("run")
        .arg(&m)
        .arg("--workspace")
        .arg(&ws)
        // Only the runner's own uid exists in that namespace.
        .arg("--no-drop-privileges")
        .arg("--no-cgroup"));
    assert_eq!(result["status"], "success", "{result}\n{stderr}");
    let real = ws.canonicalize().unwrap();
    assert_eq!(
        stdout_of(&result),
        format!(
            "from the input\nWORKSPACE={}\n{}\n",
            real.display(),
            real.display()
        )
    );
    assert!(stderr.contains("not /workspace"), "{stderr}");
}
