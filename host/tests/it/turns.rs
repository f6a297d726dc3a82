//! Follow-up turns of persistent jobs with the local provider, the real
//! `delegate-guest` (build it first: `cargo build -p delegate-guest`), a
//! real git repository and the fake `claude` (`tests/fixtures/fake-claude`,
//! delivered as an input file the repository ignores): a second turn runs
//! in the same workspace, resumes the first turn's Claude Code session and
//! returns a patch against the base and one of its own; release and the
//! idle time-to-live destroy the kept VM; continuing what cannot be
//! continued is refused, saying why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use delegate_host::config::Settings;
use delegate_host::jobs::session::Keep;
use delegate_host::jobs::{JobError, JobManager};
use delegate_host::model::JobRecord;
use delegate_proto::{JobManifest, JobState};

use crate::support::git::{git, new_repo};
use crate::support::harness::{Host, eventually};
use crate::support::local::local_host;

const FAKE_CLAUDE: &str = include_str!("../../../tests/fixtures/fake-claude");
/// The session id the fake `claude` reports on a fresh start.
const FAKE_SESSION: &str = "4b2e1c9a-7d3f-4e8b-9a61-0c5d2f8e7b13";

/// A committed repository that ignores `tools/`, where the fake `claude`
/// goes, so only the agent's own changes make the patches.
fn make_repo(root: &Path) -> PathBuf {
    let repo = root.join("project");
    new_repo(
        &repo,
        &[("README.md", "# project\n"), (".gitignore", "tools/\n")],
        "base",
    );
    repo
}

async fn host(dir: &Path, tweak: impl FnOnce(&mut Settings)) -> Host {
    local_host(dir, |s| {
        s.repo_roots = vec![dir.to_path_buf()];
        tweak(s);
    })
    .await
}

fn claude_job(repo: &Path) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": "look at the workspace",
        "agentType": "claude",
        "agent": {"command": "/workspace/tools/claude"},
        "files": [{"path": "tools/claude", "text": FAKE_CLAUDE, "mode": "0755"}],
        "env": {"ANTHROPIC_API_KEY": "test-key"},
        "repo": {"path": repo.display().to_string()},
        "lifecycle": "persistent",
        "statusMode": "streaming",
        "timeout": 120,
    }))
    .unwrap()
}

fn script_job(script: &str, persistent: bool) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": script,
        "agentType": "script",
        "lifecycle": if persistent { "persistent" } else { "ephemeral" },
        "timeout": 120,
    }))
    .unwrap()
}

async fn finish(m: &JobManager, id: &str) -> JobRecord {
    let rec = m.wait(id, Duration::from_secs(90), |_| {}).await.unwrap();
    assert!(rec.state.is_final(), "job {id} still {}", rec.state);
    rec
}

fn log(m: &JobManager, id: &str) -> String {
    use delegate_host::model::LogSelector;
    let slice = m.read_log(id, LogSelector::Combined, 0, 1 << 20).unwrap();
    String::from_utf8_lossy(&slice.data).into_owned()
}

fn refused(e: JobError, words: &str) {
    match e {
        JobError::Session(why) => assert!(why.contains(words), "{why:?} lacks {words:?}"),
        other => panic!("expected a session refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_turn_resumes_the_session_in_the_same_workspace_with_its_own_patches() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let host = host(dir.path(), |s| s.max_budget_usd = Some(1.0)).await;
    let m = host.manager().clone();

    let first = m.submit(claude_job(&repo)).await.unwrap();
    assert_eq!(first.manifest.agent.max_budget_usd, Some(1.0));
    let first = finish(&m, &first.id).await;
    assert_eq!(first.state, JobState::Success, "{:?}", first.error);
    let result = first.result.as_ref().unwrap();
    let agent = result.agent_result.as_ref().unwrap();
    assert_eq!(agent.session_id.as_deref(), Some(FAKE_SESSION));
    let patch = result.patch.as_ref().expect("turn 1's patch");
    let files: Vec<_> = patch.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, ["claude-was-here.txt"]);
    assert!(
        result.turn_patch.is_none(),
        "a first turn has no turn patch"
    );
    let (_, keep) = m.session(&first.id).await.unwrap();
    assert!(matches!(keep, Keep::Until(_)), "{keep:?}");

    // Turn 2: same VM and workspace, the session resumed, with another
    // budget within the host's ceiling.
    match m.continue_job(&first.id, "now append", Some(5.0)).await {
        Err(JobError::InvalidManifest(e)) => assert_eq!(e.field, "agent.maxBudgetUsd"),
        other => panic!("a budget over the ceiling was not refused: {other:?}"),
    }
    let turn = m
        .continue_job(&first.id, "now append to the file", Some(0.75))
        .await
        .unwrap();
    assert_eq!(turn.manifest.agent.max_budget_usd, Some(0.75));
    assert!(
        turn.manifest.files.is_empty(),
        "input files are not written again"
    );
    assert_eq!(
        (turn.turn, turn.session_id.as_deref()),
        (2, Some(first.id.as_str()))
    );
    let turn = finish(&m, &turn.id).await;
    assert_eq!(turn.state, JobState::Success, "{:?}", turn.error);
    let result = turn.result.as_ref().unwrap();
    let agent = result.agent_result.as_ref().unwrap();
    // The fake claude says which session it was asked to resume...
    assert_eq!(
        agent.result.as_deref(),
        Some(format!("Done: resumed {FAKE_SESSION}.").as_str())
    );
    // ...and its tool printed the file the first turn wrote.
    assert!(
        log(&m, &turn.id).contains("fake claude was here"),
        "{}",
        log(&m, &turn.id)
    );

    // Against the base: the file with both turns' lines.
    let whole = result.patch.as_ref().expect("patch against the base");
    assert_eq!(whole.files.len(), 1);
    assert_eq!(
        (whole.files[0].change.as_str(), whole.files[0].added),
        ("added", Some(2))
    );
    let text = String::from_utf8(m.read_patch(&turn.id, 1 << 20).unwrap()).unwrap();
    assert!(
        text.contains("+fake claude was here")
            && text.contains(&format!("+resumed {FAKE_SESSION}")),
        "{text}"
    );
    // Against the previous turn: only this turn's line.
    let own = result.turn_patch.as_ref().expect("the turn's own patch");
    assert_eq!(
        (
            own.files[0].change.as_str(),
            own.files[0].added,
            own.files[0].removed
        ),
        ("modified", Some(1), Some(0))
    );
    assert_eq!(own.base_tree, patch_tree_after(&m, &first));
    let text = String::from_utf8(m.read_turn_patch(&turn.id, 1 << 20).unwrap()).unwrap();
    assert!(!text.contains("+fake claude was here"), "{text}");
    assert!(text.contains(&format!("+resumed {FAKE_SESSION}")), "{text}");
    // The patch against the base applies to the repository as it was.
    let out = Command::new("git")
        .args(["apply", "--check", "-"])
        .current_dir(&repo)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let whole = m.read_patch(&turn.id, 1 << 20).unwrap();
            c.stdin.take().unwrap().write_all(&whole)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Release: the VM goes, and the session cannot be continued.
    let released = m.release_job(&turn.id).await.unwrap();
    assert_eq!(released.session_id, first.id);
    assert_eq!(released.cancelled_turn, None);
    eventually(60, "the released VM to be destroyed", || async {
        m.get(&first.id).ok().filter(|r| r.vm_destroyed)
    })
    .await;
    refused(
        m.continue_job(&first.id, "again", None).await.unwrap_err(),
        "cannot be continued",
    );
    refused(m.release_job(&first.id).await.unwrap_err(), "no kept VM");
    host.stop().await;
}

/// The tree turn 1 left, as its own patch names it: the base of turn 2's
/// own patch.
fn patch_tree_after(m: &JobManager, first: &JobRecord) -> String {
    // Turn 1's patch goes from the base tree to the tree it left; that tree
    // is the base tree plus its change, which git computes from the patch.
    let text = m.read_patch(&first.id, 1 << 20).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    git(work, &["init", "-q"]);
    std::fs::write(work.join("README.md"), "# project\n").unwrap();
    std::fs::write(work.join(".gitignore"), "tools/\n").unwrap();
    let mut child = Command::new("git")
        .args(["apply", "-"])
        .current_dir(work)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&text).unwrap();
    }
    assert!(child.wait().unwrap().success());
    git(work, &["add", "-A"]);
    let out = Command::new("git")
        .args(["write-tree"])
        .current_dir(work)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_ttl_destroys_a_kept_vm_and_what_cannot_continue_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), |s| s.persistent_ttl = Duration::from_secs(1)).await;
    let m = host.manager().clone();

    // Not persistent: its VM ended with it.
    let plain = m.submit(script_job("echo plain", false)).await.unwrap();
    finish(&m, &plain.id).await;
    refused(
        m.continue_job(&plain.id, "more", None).await.unwrap_err(),
        "is not persistent",
    );

    // A turn still running: wait for it first.
    let busy = m.submit(script_job("sleep 60", true)).await.unwrap();
    refused(
        m.continue_job(&busy.id, "more", None).await.unwrap_err(),
        "has not finished",
    );
    // Releasing it while it runs cancels the running turn.
    let released = m.release_job(&busy.id).await.unwrap();
    assert_eq!(released.cancelled_turn.as_deref(), Some(busy.id.as_str()));
    assert_eq!(m.get(&busy.id).unwrap().state, JobState::Cancelled);

    // Kept, then idle past the time-to-live: housekeeping destroys the VM.
    let kept = m.submit(script_job("echo kept", true)).await.unwrap();
    let kept = finish(&m, &kept.id).await;
    assert_eq!(kept.state, JobState::Success);
    eventually(60, "the idle VM to be destroyed", || async {
        m.get(&kept.id).ok().filter(|r| r.vm_destroyed)
    })
    .await;
    refused(
        m.continue_job(&kept.id, "more", None).await.unwrap_err(),
        "cannot be continued",
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_vm_survives_a_host_restart_and_takes_the_next_turn() {
    let dir = tempfile::tempdir().unwrap();
    let first_host = host(dir.path(), |_| {}).await;
    let m = first_host.manager().clone();
    let first = m
        .submit(script_job("echo before > note.txt", true))
        .await
        .unwrap();
    let first = finish(&m, &first.id).await;
    assert_eq!(first.state, JobState::Success, "{:?}", first.error);
    first_host.stop().await;

    // A new engine on the same data directory: reconciliation keeps the VM
    // (its time-to-live runs), and the guest waiting in it asks again.
    let second_host = host(dir.path(), |_| {}).await;
    let m = second_host.manager().clone();
    let (_, keep) = m.session(&first.id).await.unwrap();
    assert!(matches!(keep, Keep::Until(_)), "{keep:?}");
    let turn = m
        .continue_job(&first.id, "cat note.txt", None)
        .await
        .unwrap();
    let turn = finish(&m, &turn.id).await;
    assert_eq!(turn.state, JobState::Success, "{:?}", turn.error);
    assert!(
        log(&m, &turn.id).contains("before"),
        "{}",
        log(&m, &turn.id)
    );
    assert!(!m.get(&first.id).unwrap().vm_destroyed);
    m.release_job(&first.id).await.unwrap();
    eventually(60, "the released VM to be destroyed", || async {
        m.get(&first.id).ok().filter(|r| r.vm_destroyed)
    })
    .await;
    second_host.stop().await;
}
