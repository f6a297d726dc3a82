//! What a local-sandbox job can reach (issue 8): an attacker job, run beside
//! a victim job by the real `delegate-host serve`, tries to read the
//! victim's bootstrap, token, workspace and artifacts and the store, to
//! write host paths, to connect to a port this test opens on 127.0.0.1, to
//! see or signal host processes and to gain privileges. Every attempt must
//! fail, and the victim must still end `success` with its own output.
//!
//! Both with the host as root (jobs then run as uid 65534 on the host) and
//! as an unprivileged user (the host run as 65534 when the test is root, or
//! as the test's own user otherwise).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use delegate_tests::mcp::{HostEnv, Revision, connect_stdio, marker, pids_with};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(90);
/// The host uid an unprivileged host runs as when the test is root.
const NOBODY: u32 = 65534;

/// Counts connections to a loopback port: a job must never reach it.
struct Target {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Target {
    fn open() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if conn.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Target { port, accepted }
    }
}

/// The attacker's script: each probe prints `held: ...` when the attempt
/// fails and `LEAK: ...` when it works. `$1`.. are filled in by the test.
fn attacker_script(
    data_dir: &str,
    canary_dir: &str,
    port: u16,
    host_pid: u32,
    victim_mark: &str,
) -> String {
    // The victim's secret is searched for in two halves too.
    let (mark_a, mark_b) = victim_mark.split_at(8);
    format!(
        r#"
D='{data_dir}'; C='{canary_dir}'; P={port}; H={host_pid}
# The victim's mark in two halves, so that no command line here holds it.
M1='{mark_a}'; M2='{mark_b}'; export M1 M2
n=0
probe() {{
  what=$1; shift; n=$((n+1))
  if "$@" >/dev/null 2>&1; then echo "LEAK: $what"; else echo "held: $what"; fi
}}
probe "list the data directory" ls "$D"
probe "read the store" cat "$D/delegate.db"
probe "read any bootstrap (every job's token)" sh -c "cat $D/sandboxes/*/bootstrap.json"
probe "read the victim's workspace" sh -c "cat $D/sandboxes/*/root/workspace/secret.txt"
probe "read stored artifacts" sh -c "ls $D/jobs $D/artifacts"
probe "find the victim's secret in the view" sh -c 'A=victim-sec; B=ret-value; grep -rqs "$A$B" /workspace /home /tmp /run /var /etc'
probe "read the host's /root" ls /root
probe "see the host's home directories" sh -c 'ls /home | grep -vx delegate | grep -q .'
probe "read the host's accounts" sh -c 'grep -v -e "^root:" -e "^delegate:" -e "^nobody:" /etc/passwd | grep -q .'
probe "read shadow passwords" cat /etc/shadow
probe "write /etc/passwd" sh -c 'echo x:x:0:0::/:/bin/sh >> /etc/passwd'
probe "write under /usr" sh -c 'echo pwned > /usr/bin/delegate-pwned'
probe "replace the guest binary" sh -c 'echo pwned > /run/delegate/bin/delegate-guest'
probe "write beside the host's callback socket" sh -c 'echo pwned > /run/delegate/host/x'
probe "write the sandbox root" sh -c 'echo pwned > /pwned'
probe "write the host's world-writable directory" sh -c "echo pwned > $C/x"
probe "connect to 127.0.0.1:$P" bash -c "exec 3<>/dev/tcp/127.0.0.1/$P"
probe "see a network interface besides lo" sh -c "tail -n +3 /proc/net/dev | grep -v ' lo:' | grep -q ."
probe "signal the host's server" kill -0 $H
probe "see the host's processes" sh -c "ls /proc | grep -qx $H"
probe "see the victim's processes" sh -c 'for f in /proc/[0-9]*/cmdline; do c=$(tr "\0" " " < $f); case "$c" in *"$M1$M2"*) exit 0;; esac; done; exit 1'

probe "hold a capability" sh -c "sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status | grep -q '[1-9a-f]'"
probe "make a user namespace" unshare -U true
probe "be root" sh -c 'test "$(id -u)" = 0'
echo "uid=$(id -u) probes=$n"
echo probes-done
"#
    )
}

async fn attacker_beside_victim(mut env: HostEnv) {
    let target = Target::open();
    let canary = env.dir.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::set_permissions(&canary, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    env.set("DELEGATE_MAX_RUNNING", "4");
    let client = connect_stdio(&env, Revision::Current).await;
    let host_pid = client.server_pid.expect("the server's pid");

    let victim_mark = marker("victim");
    let victim = client
        .submit(json!({
            "task": format!(
                "echo victim-out; A=victim-sec; echo \"${{A}}ret-value\" > secret.txt; \
                 mkdir -p out; echo art > out/a.txt; (exec -a {victim_mark} sleep 12); \
                 echo victim-done"
            ),
            "agentType": "script",
            "artifacts": ["out/*"],
            "statusMode": "streaming",
            "timeout": 120,
        }))
        .await;
    client.wait_state(&victim, "running", LIMIT).await;
    // The victim's processes are unprivileged on the host.
    delegate_tests::mcp::eventually("the victim's sleep", LIMIT, || {
        !pids_with(&victim_mark).is_empty()
    })
    .await;
    let victim_pids = pids_with(&victim_mark);
    for pid in &victim_pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("");
        assert_ne!(uid, "0", "a job process runs as host root: {status}");
    }

    let data_dir = env.data_dir().display().to_string();
    let attacker = client
        .submit(json!({
            "task": attacker_script(
                &data_dir,
                &canary.display().to_string(),
                target.port,
                host_pid,
                &victim_mark,
            ),
            "agentType": "script",
            "statusMode": "streaming",
            "timeout": 120,
        }))
        .await;
    let done = client.wait_final(&attacker, LIMIT).await;
    let out = client.log_from(&attacker, "stdout", 0).await;
    assert_eq!(done["status"], "success", "{done}\n{out}\n{}", env.log());
    assert!(out.contains("probes-done"), "{out}");
    let leaks: Vec<&str> = out.lines().filter(|l| l.starts_with("LEAK")).collect();
    assert!(leaks.is_empty(), "the attacker reached: {leaks:#?}\n{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("held: ")).count(),
        24,
        "every probe ran: {out}"
    );
    assert!(out.contains("uid=1000 "), "{out}");
    assert_eq!(
        target.accepted.load(Ordering::SeqCst),
        0,
        "a job connected to the host's loopback port"
    );
    assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 0);

    let done = client.wait_final(&victim, LIMIT).await;
    let out = client.log_from(&victim, "stdout", 0).await;
    assert_eq!(done["status"], "success", "{done}\n{out}\n{}", env.log());
    assert_eq!(out, "victim-out\nvictim-done\n");
    let result = client.ok("get_job_result", json!({"job_id": victim})).await;
    assert!(result.to_string().contains("out/a.txt"), "{result}");
    client.close().await;
}

#[tokio::test]
async fn a_job_cannot_reach_its_neighbour_or_the_host_under_a_root_host() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the host can only run as root when the test does");
        return;
    }
    attacker_beside_victim(HostEnv::new()).await;
}

#[tokio::test]
async fn a_job_cannot_reach_its_neighbour_or_the_host_under_an_unprivileged_host() {
    let mut env = HostEnv::new();
    if nix::unistd::geteuid().is_root() {
        env.run_as(NOBODY, NOBODY);
    }
    attacker_beside_victim(env).await;
}
