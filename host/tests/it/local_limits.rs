//! The local sandbox's resources (issue 8): where the host has a writable
//! cgroup v2, each sandbox gets a cgroup of its own with the job's limits,
//! the sandbox's cgroup namespace starts there, and the guest makes its job
//! cgroup below it; the cgroup is removed with the sandbox. Elsewhere there
//! is no sandbox cgroup and the guest says so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use delegate_host::provider::local::{LocalArgs, LocalProvider, LocalSettings};
use delegate_host::resolve::ProcessMachine;
use delegate_proto::{JobManifest, JobState};

use crate::support::harness::{Host, eventually, settings};

/// This machine's local provider settings, sandboxes under `dir`.
fn local_settings(dir: &std::path::Path) -> LocalSettings {
    LocalArgs::default()
        .resolve(dir, &ProcessMachine)
        .expect("delegate-guest must be built first: cargo build -p delegate-guest")
}

/// The host's own cgroup v2 directory, when this process may write it.
fn writable_v2_cgroup() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2").then(|| left.split_whitespace().nth(4))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = PathBuf::from(mount).join(own.trim_start_matches('/'));
    nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK)
        .ok()
        .map(|()| dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_has_its_own_cgroup_with_the_jobs_limits_where_the_host_allows() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(LocalProvider::new(local_settings(dir.path())).unwrap());
    let s = settings(dir.path(), |s| s.local = Some(local_settings(dir.path())));
    let host = Host::start(s, provider).await;
    let m = host.manager().clone();
    let manifest = JobManifest::from_value(serde_json::json!({
        "task": "cat /proc/self/cgroup; sleep 1",
        "agentType": "script",
        "resources": {"memory": "256M", "cpu": 1},
        "timeout": 60,
    }))
    .unwrap();
    let id = m.submit(manifest).await.unwrap().id;
    let parent = writable_v2_cgroup();
    let sandbox_cgroup = eventually(30, "the sandbox to start", || async {
        let vm = m.get(&id).unwrap().vm?;
        Some(
            parent
                .as_ref()
                .map(|p| p.join(format!("delegate-{}", vm.id))),
        )
    })
    .await;
    if let Some(cg) = &sandbox_cgroup {
        let cg = cg.clone();
        eventually(30, "the sandbox cgroup", || async {
            cg.is_dir().then_some(())
        })
        .await;
        let pids: String = std::fs::read_to_string(cg.join("pids.max")).unwrap_or_default();
        if cg.join("pids.max").exists() {
            assert_eq!(pids.trim(), "4160");
        }
        if cg.join("memory.max").exists() {
            let mem = std::fs::read_to_string(cg.join("memory.max")).unwrap();
            assert_eq!(mem.trim(), (256u64 << 20).to_string());
        }
    }
    let done = m.wait(&id, Duration::from_secs(60), |_| {}).await.unwrap();
    assert_eq!(done.state, JobState::Success, "{done:?}");
    let out = done.result.as_ref().unwrap().output.stdout.text.clone();
    let v2_line = out.lines().find(|l| l.starts_with("0::")).unwrap_or("");
    match &sandbox_cgroup {
        // The cgroup namespace starts at the sandbox's cgroup; the agent is
        // in the guest's job cgroup below it.
        Some(cg) => {
            assert!(v2_line.starts_with("0::/delegate-job-"), "{out}");
            let cg = cg.clone();
            eventually(30, "the sandbox cgroup to be removed", || async {
                (!cg.exists()).then_some(())
            })
            .await;
        }
        None => eprintln!("no writable cgroup v2 here: only the guest's rlimits hold"),
    }
    host.stop().await;
}
