//! The same world in every provider (issue 8): one manifest, run in the
//! local sandbox and in a simulated Proxmox VM through the real
//! `delegate-host serve`, and standalone by `delegate-guest run`, sees its
//! workspace at `/workspace` with its input file, and the same environment
//! base (PATH, HOME, TMPDIR, LANG, WORKSPACE, USER).
//!
//! (The simulator's "VMs" run `delegate-guest boot` on this machine with
//! their workspace in the VM's directory, as a standalone run would: it is
//! shown at `/workspace` the same way.)

use std::time::Duration;

use delegate_tests::bins::bins;
use delegate_tests::mcp::{HostEnv, Revision, connect_stdio};
use delegate_tests::pve_host::{real_guest, serve_env};
use delegate_tests::pve_sim::{PveSim, SimConfig};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(90);

fn manifest() -> Value {
    json!({
        "task": "cd /workspace && cat in.txt && echo \"pwd=$(pwd)\" \
                 && echo \"WORKSPACE=$WORKSPACE\" && echo \"HOME=$HOME\" \
                 && echo \"TMPDIR=$TMPDIR\" && echo \"LANG=$LANG\" && echo \"PATH=$PATH\" \
                 && echo \"user=${USER:+set}\" && test -w \"$HOME\" && test -w \"$TMPDIR\" \
                 && echo writable",
        "agentType": "script",
        // "hello from the input\n"
        "files": [{"path": "/workspace/in.txt", "content": "aGVsbG8gZnJvbSB0aGUgaW5wdXQK"}],
        "timeout": 60,
    })
}

const EXPECTED: &str = "hello from the input\n\
    pwd=/workspace\n\
    WORKSPACE=/workspace\n\
    HOME=/workspace/.delegate/home\n\
    TMPDIR=/workspace/.delegate/tmp\n\
    LANG=C.UTF-8\n\
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
    user=set\n\
    writable\n";

/// Runs the manifest through a host with `env`; its stdout.
async fn through_a_host(env: &HostEnv) -> String {
    let client = connect_stdio(env, Revision::Current).await;
    let id = client.submit(manifest()).await;
    let done = client.wait_final(&id, LIMIT).await;
    let result = client.ok("get_job_result", json!({"job_id": id})).await;
    assert_eq!(done["status"], "success", "{done}\n{result}\n{}", env.log());
    client.close().await;
    result["output"]["stdout"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no stdout in {result}"))
        .to_string()
}

async fn in_the_local_sandbox() -> String {
    through_a_host(&HostEnv::new()).await
}

async fn in_a_simulated_proxmox_vm() -> String {
    let mut cfg = SimConfig::standard();
    cfg.guest = Some(real_guest());
    let sim = PveSim::start(cfg).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = serve_env(&sim, "same-world", port);
    let out = through_a_host(&env).await;
    drop(sim);
    out
}

async fn standalone() -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, manifest().to_string()).unwrap();
    let out = tokio::process::Command::new(&bins().guest)
        .arg("run")
        .arg(&path)
        .env("TMPDIR", dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "result")
        .unwrap_or_else(|| panic!("no result line\n{stdout}\n{stderr}"));
    assert_eq!(result["status"], "success", "{result}\n{stderr}");
    result["output"]["stdout"]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn one_manifest_sees_the_same_world_in_every_provider() {
    let local = in_the_local_sandbox().await;
    let vm = in_a_simulated_proxmox_vm().await;
    let alone = standalone().await;
    assert_eq!(local, EXPECTED, "local sandbox");
    assert_eq!(vm, EXPECTED, "simulated Proxmox VM");
    assert_eq!(alone, EXPECTED, "standalone delegate-guest run");
}
