//! The local provider with the real `delegate-guest` (build it first:
//! `cargo build -p delegate-guest`): jobs run end to end through the real
//! callback API and manager inside a bubblewrap sandbox, a
//! cancel leaves no process of the sandbox alive, and a machine without
//! user namespaces is refused unless the user opts in.
//!
//! These tests need bubblewrap and unprivileged user namespaces; CI
//! provides them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use delegate_host::jobs::JobManager;
use delegate_host::model::{CancelOutcome, LogSelector};
use delegate_host::provider::local::{LocalArgs, LocalProvider, LocalSettings};
use delegate_host::provider::{Isolation, Provider};
use delegate_host::resolve::ProcessMachine;
use delegate_proto::{JobManifest, JobState, LogStream};

use crate::support::harness::{Host, eventually, settings, until_state};

/// This machine's local provider settings (the built `delegate-guest`, the
/// real `bwrap`), with the sandboxes under `dir`.
fn local_settings(dir: &std::path::Path) -> LocalSettings {
    LocalArgs::default()
        .resolve(dir, &ProcessMachine)
        .expect("delegate-guest must be built first: cargo build -p delegate-guest")
}

fn script(task: &str, artifacts: &[&str]) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": task,
        "agentType": "script",
        "artifacts": artifacts,
        "statusMode": "streaming",
        "timeout": 120,
    }))
    .unwrap()
}

async fn local_host(dir: &std::path::Path) -> (Host, Arc<LocalProvider>) {
    let provider =
        Arc::new(LocalProvider::new(local_settings(dir)).expect("user namespaces are available"));
    assert_eq!(provider.isolation(), Isolation::ProcessSandbox);
    let s = settings(dir, |s| s.local = Some(local_settings(dir)));
    (Host::start(s, provider.clone()).await, provider)
}

/// A job's log (up to 1 MiB) as text.
fn log_text(m: &JobManager, id: &str, which: LogSelector) -> String {
    String::from_utf8(m.read_log(id, which, 0, 1 << 20).unwrap().data).unwrap()
}

fn pids_in(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("sandboxes"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_job_runs_end_to_end_in_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _provider) = local_host(dir.path()).await;
    let m = host.manager().clone();
    let host_pid_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let task = "echo hello from the sandbox; echo oops >&2; \
                echo uid=$(id -u); readlink /proc/self/ns/pid; \
                hostname sandboxed-host 2>/dev/null || echo host=$(hostname); \
                mkdir -p out && echo data > out/a.txt";
    let rec = m.submit(script(task, &["out/*"])).await.unwrap();
    assert_eq!(rec.isolation, Isolation::ProcessSandbox);
    let done = m
        .wait(&rec.id, Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    let log = log_text(&m, &rec.id, LogSelector::Combined);
    assert_eq!(done.state, JobState::Success, "{done:?}\nlog:\n{log}");
    assert_eq!(done.isolation, Isolation::ProcessSandbox);
    let stdout = log_text(&m, &rec.id, LogSelector::Stream(LogStream::Stdout));
    assert!(stdout.contains("hello from the sandbox"), "{stdout}");
    // The job user, not root even inside its namespace (issue 8: the job
    // has no capabilities, so it cannot rename its host either).
    assert!(stdout.contains("uid=1000"), "{stdout}");
    let sandbox_name = done.vm.as_ref().unwrap().id.clone();
    assert!(stdout.contains(&format!("host={sandbox_name}")), "{stdout}");
    assert!(
        !stdout.contains(host_pid_ns.to_str().unwrap()),
        "the job has its own pid namespace: {stdout}"
    );
    let stderr = m
        .read_log(&rec.id, LogSelector::Stream(LogStream::Stderr), 0, 1 << 20)
        .unwrap();
    assert_eq!(stderr.data, b"oops\n");
    assert_eq!(done.result.as_ref().unwrap().exit_code, Some(0));
    assert_eq!(done.artifacts.len(), 1, "{done:?}");
    assert_eq!(
        m.read_artifact(&rec.id, "out/a.txt", 100).unwrap(),
        b"data\n"
    );
    // The host's hostname is untouched.
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_str().unwrap(),
        "sandboxed-host"
    );
    eventually(20, "the sandbox to be destroyed", || async {
        m.get(&rec.id).unwrap().vm_destroyed.then_some(())
    })
    .await;
    assert!(pids_in(dir.path()).is_empty(), "sandbox directory removed");
    host.stop().await;
}

/// Every process whose parent chain leads to `root`.
fn descendants(root: u32) -> BTreeSet<u32> {
    let mut parent = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let ppid: u32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
        parent.insert(pid, ppid);
    }
    let mut out = BTreeSet::new();
    for &pid in parent.keys() {
        let mut p = pid;
        while let Some(&pp) = parent.get(&p) {
            if pp == root {
                out.insert(pid);
                break;
            }
            p = pp;
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let rest = &s[s.rfind(')').unwrap() + 1..];
        !matches!(rest.split_whitespace().next(), Some("Z" | "X"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_running_leaves_no_process_alive() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _provider) = local_host(dir.path()).await;
    let m = host.manager().clone();
    // Children in the background and one that leaves the session.
    let task = "sleep 300 & setsid sleep 301 & echo started; wait";
    let id = m.submit(script(task, &[])).await.unwrap().id;
    until_state(&m, &id, JobState::Running, 60).await;
    let sandbox = dir
        .path()
        .join("sandboxes")
        .join(m.get(&id).unwrap().vm.unwrap().id);
    let pid: u32 = std::fs::read_to_string(sandbox.join("pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tree = eventually(30, "both sleeps to run", || async {
        let t = descendants(pid);
        let sleeps = t
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .count();
        (sleeps >= 2).then_some(t)
    })
    .await;
    let mut all = tree.clone();
    all.insert(pid);

    match m.cancel(&id).await.unwrap() {
        CancelOutcome::Cancelled(r) => assert_eq!(r.state, JobState::Cancelled),
        other => panic!("{other:?}"),
    }
    eventually(60, "the sandbox to be destroyed", || async {
        m.get(&id).unwrap().vm_destroyed.then_some(())
    })
    .await;
    let survivors: Vec<u32> = all.iter().copied().filter(|p| alive(*p)).collect();
    assert!(survivors.is_empty(), "still alive: {survivors:?}");
    assert!(!sandbox.exists());
    let r = m.get(&id).unwrap();
    assert_eq!(r.state, JobState::Cancelled);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_are_listed_for_reconciliation() {
    let dir = tempfile::tempdir().unwrap();
    let (host, provider) = local_host(dir.path()).await;
    let m = host.manager().clone();
    let id = m.submit(script("sleep 300", &[])).await.unwrap().id;
    until_state(&m, &id, JobState::Running, 60).await;
    // A provider made after a restart finds the sandbox by its files.
    let again = LocalProvider::new(local_settings(dir.path())).unwrap();
    let owned = again.list_owned().await.unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].job_id.as_deref(), Some(id.as_str()));
    assert_eq!(Some(owned[0].vm.clone()), m.get(&id).unwrap().vm);
    // Destroying kills the whole sandbox at once (no grace: the guest is
    // not asked), and is idempotent.
    let sandbox = dir.path().join("sandboxes").join(&owned[0].vm.id);
    let pid: u32 = std::fs::read_to_string(sandbox.join("pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut all = eventually(30, "the sleep to run", || async {
        let t = descendants(pid);
        t.iter()
            .any(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .then_some(t)
    })
    .await;
    all.insert(pid);
    provider.destroy(&owned[0].vm).await.unwrap();
    let survivors: Vec<u32> = all.iter().copied().filter(|p| alive(*p)).collect();
    assert!(survivors.is_empty(), "still alive: {survivors:?}");
    provider.destroy(&owned[0].vm).await.unwrap();
    assert!(again.list_owned().await.unwrap().is_empty());
    assert!(!sandbox.exists());
    m.cancel(&id).await.unwrap();
    host.stop().await;
}

fn failing_bwrap(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("bwrap");
    std::fs::write(
        &p,
        "#!/bin/sh\necho 'bwrap: setting up uid map: Operation not permitted' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_namespaces_it_refuses_unless_the_user_opts_in() {
    let dir = tempfile::tempdir().unwrap();
    let bwrap = failing_bwrap(dir.path());
    let err = LocalProvider::new(LocalSettings {
        bwrap: Some(bwrap.clone()),
        allow_unsandboxed: false,
        ..local_settings(dir.path())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("user namespaces are not allowed"), "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("DELEGATE_LOCAL_UNSANDBOXED=1"), "{err}");

    let provider = Arc::new(
        LocalProvider::new(LocalSettings {
            bwrap: Some(bwrap),
            allow_unsandboxed: true,
            ..local_settings(dir.path())
        })
        .unwrap(),
    );
    assert_eq!(provider.isolation(), Isolation::None);
    let s = settings(dir.path(), |s| s.local = Some(local_settings(dir.path())));
    let host = Host::start(s, provider).await;
    let m = host.manager().clone();
    assert_eq!(m.isolation(), Isolation::None);
    let rec = m.submit(script("echo plain process", &[])).await.unwrap();
    let done = m
        .wait(&rec.id, Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Success, "{done:?}");
    assert_eq!(done.isolation, Isolation::None);
    assert!(Isolation::None.describe().contains("NONE"));

    // Cancel ends the unsandboxed job's whole tree too.
    let id = m
        .submit(script("sleep 300 & echo started; wait", &[]))
        .await
        .unwrap()
        .id;
    until_state(&m, &id, JobState::Running, 60).await;
    m.cancel(&id).await.unwrap();
    eventually(60, "the process to be destroyed", || async {
        m.get(&id).unwrap().vm_destroyed.then_some(())
    })
    .await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_guest_carries_on_across_a_host_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _provider) = local_host(dir.path()).await;
    let port = first.port();
    let m = first.manager().clone();
    let id = m
        .submit(script("echo before; sleep 3; echo after", &[]))
        .await
        .unwrap()
        .id;
    until_state(&m, &id, JobState::Running, 60).await;
    first.stop().await;
    drop(m);

    let provider = Arc::new(LocalProvider::new(local_settings(dir.path())).unwrap());
    let s = settings(dir.path(), |s| {
        s.local = Some(local_settings(dir.path()));
        s.callback_bind.set_port(port);
    });
    let second = Host::start(s, provider).await;
    let m = second.manager().clone();
    let done = m.wait(&id, Duration::from_secs(90), |_| {}).await.unwrap();
    assert_eq!(done.state, JobState::Success, "{done:?}");
    let out = m
        .read_log(&id, LogSelector::Stream(LogStream::Stdout), 0, 1 << 20)
        .unwrap();
    assert_eq!(out.data, b"before\nafter\n");
    eventually(20, "the sandbox to be destroyed", || async {
        m.get(&id).unwrap().vm_destroyed.then_some(())
    })
    .await;
    second.stop().await;
}

/// Guests in sibling sandboxes have the same pid and share the parent
/// cgroup; each must still get a job cgroup of its own (a shared one was
/// removed or killed under the other job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sandboxes_each_have_their_own_job_cgroup() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _provider) = local_host(dir.path()).await;
    let m = host.manager().clone();
    let mut ids = Vec::new();
    for i in 0..6 {
        let task =
            format!("sleep 0.5; grep -o 'delegate-job-[^/]*' /proc/self/cgroup; echo job-{i}");
        ids.push(m.submit(script(&task, &[])).await.unwrap().id);
    }
    let mut cgroups = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let done = m.wait(id, Duration::from_secs(60), |_| {}).await.unwrap();
        let out = log_text(&m, id, LogSelector::Stream(LogStream::Stdout));
        assert_eq!(done.state, JobState::Success, "job {i}: {done:?}\n{out}");
        assert!(out.contains(&format!("job-{i}")), "{out}");
        // Where cgroup v2 is writable, the names must all differ.
        if let Some(name) = out.lines().find(|l| l.starts_with("delegate-job-")) {
            assert!(cgroups.insert(name.to_string()), "{name} shared");
        }
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_dirs_are_visible_in_the_sandbox_and_not_writable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Outside the system directories, like an npm prefix in a home, and
    // under /tmp, which each sandbox has of its own (a CI checkout in a
    // temporary directory); open to the job uid, which runs bwrap when the
    // host is root.
    let tools = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tool = tools.path().join("hello-tool");
    std::fs::write(&tool, "#!/bin/sh\necho tool ran\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let local = LocalSettings {
        readonly_dirs: vec![tools.path().to_path_buf()],
        ..local_settings(dir.path())
    };
    let provider = Arc::new(LocalProvider::new(local.clone()).expect("user namespaces"));
    let s = settings(dir.path(), |s| s.local = Some(local));
    let host = Host::start(s, provider).await;
    let m = host.manager().clone();
    let task = format!(
        "{tool}; touch {dir}/new 2>/dev/null && echo writable || echo read-only",
        tool = tool.display(),
        dir = tools.path().display()
    );
    let rec = m.submit(script(&task, &[])).await.unwrap();
    let done = m
        .wait(&rec.id, Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    let log = log_text(&m, &rec.id, LogSelector::Combined);
    assert_eq!(done.state, JobState::Success, "{done:?}\nlog:\n{log}");
    assert!(log.contains("tool ran"), "{log}");
    assert!(log.contains("read-only"), "{log}");
    assert!(!tools.path().join("new").exists());
    host.stop().await;
}
