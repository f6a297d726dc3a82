//! A repository in, a patch out, with the local provider and the real
//! `delegate-guest` (build it first: `cargo build -p delegate-guest`) and
//! real git repositories made in the test: the repository arrives exactly
//! as it is on disk (uncommitted and untracked files, not ignored ones), a
//! script job's edits, additions, deletions, binary files and mode changes
//! come back as a patch that applies to the base and reproduces the tree,
//! a failing job still returns its patch, and paths outside
//! `DELEGATE_REPO_ROOTS` are refused.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use delegate_host::cli::apply::{self, ApplyArgs};
use delegate_host::config::Settings;
use delegate_host::jobs::{JobError, JobManager};
use delegate_host::store::Store;
use delegate_proto::{JobManifest, JobState};

use crate::support::git::git;
use crate::support::harness::Host;
use crate::support::local::local_host;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A repository with a commit, then uncommitted (staged and unstaged),
/// untracked and ignored changes on top.
fn make_repo(root: &Path) -> PathBuf {
    let repo = root.join("project");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo.join("README.md"), b"# project\n\nline two\n");
    write(&repo.join("src/lib.rs"), b"pub fn f() -> u32 {\n    1\n}\n");
    write(&repo.join("run.sh"), b"#!/bin/sh\necho run\n");
    write(&repo.join("old.txt"), b"to be deleted\n");
    write(&repo.join("data.bin"), &[0, 1, 2, 3, 255, 254, 0, 7]);
    write(&repo.join(".gitignore"), b"target/\n*.log\n");
    std::os::unix::fs::symlink("README.md", repo.join("link")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    // Uncommitted: one staged, one not; untracked; ignored.
    write(&repo.join("src/lib.rs"), b"pub fn f() -> u32 {\n    2\n}\n");
    git(&repo, &["add", "src/lib.rs"]);
    write(
        &repo.join("README.md"),
        b"# project\n\nline two\nline three\n",
    );
    write(&repo.join("notes/todo.txt"), b"untracked note\n");
    write(&repo.join("target/big.o"), b"ignored build output\n");
    write(&repo.join("debug.log"), b"ignored log\n");
    repo
}

async fn host_with_roots(dir: &Path, roots: Vec<PathBuf>) -> Host {
    local_host(dir, |s| s.repo_roots = roots).await
}

fn repo_job(repo: &Path, script: &str) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": script,
        "agentType": "script",
        "repo": {"path": repo.display().to_string()},
        "statusMode": "streaming",
        "timeout": 120,
    }))
    .unwrap()
}

async fn run(m: &JobManager, manifest: JobManifest) -> delegate_host::model::JobRecord {
    let rec = m.submit(manifest).await.unwrap();
    m.wait(&rec.id, Duration::from_secs(90), |_| {})
        .await
        .unwrap()
}

fn stdout(m: &JobManager, id: &str) -> String {
    use delegate_host::model::LogSelector;
    use delegate_proto::LogStream;
    let slice = m
        .read_log(id, LogSelector::Stream(LogStream::Stdout), 0, 1 << 20)
        .unwrap();
    String::from_utf8(slice.data).unwrap()
}

/// Describes a work tree: every path but `.git` and the runner's directory
/// with its type, mode, link target and content hash, then git's view.
const DESCRIBE: &str = r#"find . -mindepth 1 \( -path ./.git -o -path ./.delegate \) -prune -o -printf '%y %m %p %l\n' | LC_ALL=C sort
find . \( -path ./.git -o -path ./.delegate \) -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
echo "head $(git rev-parse HEAD)"
git status --porcelain=v1 -uall
git diff --cached --stat"#;

/// The tree of everything not ignored in `dir`, as git would store it
/// (modes and symlinks included), without touching its index.
fn tree_of(dir: &Path) -> String {
    let index = dir.join(".git/compare.index");
    let _ = std::fs::remove_file(&index);
    let out = Command::new("sh")
        .arg("-c")
        .arg("git add -A && git write-tree")
        .current_dir(dir)
        .env("GIT_INDEX_FILE", &index)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&index);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn copy_tree(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

fn bash_in(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_repository_arrives_exactly_as_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let host = host_with_roots(dir.path(), vec![dir.path().to_path_buf()]).await;
    let m = host.manager().clone();
    let done = run(&m, repo_job(&repo, DESCRIBE)).await;
    let seen = stdout(&m, &done.id);
    assert_eq!(done.state, JobState::Success, "{done:?}\n{seen}");
    // The same description of the repository on disk, without its ignored
    // files (which must not travel).
    let home = dir.path().join("home-view");
    copy_tree(&repo, &home);
    git(&home, &["clean", "-q", "-f", "-d", "-X"]);
    let expected = bash_in(&home, DESCRIBE);
    assert!(expected.contains("./notes/todo.txt"), "{expected}");
    assert_eq!(
        seen, expected,
        "the workspace differs from the repository on disk"
    );
    assert!(seen.contains("./notes/todo.txt"), "untracked file: {seen}");
    assert!(
        seen.contains("M  src/lib.rs") && seen.contains(" M README.md"),
        "{seen}"
    );
    assert!(
        !seen.contains("big.o") && !seen.contains("debug.log"),
        "ignored files stay home: {seen}"
    );
    // Nothing changed, so the patch is empty but present.
    let patch = done
        .result
        .as_ref()
        .unwrap()
        .patch
        .as_ref()
        .expect("a patch");
    assert_eq!(patch.size, 0, "{patch:?}");
    assert!(patch.files.is_empty());
    assert_eq!(
        patch.base_commit.as_deref(),
        Some(git(&repo, &["rev-parse", "HEAD"]).trim())
    );
    host.stop().await;
}

const EDIT: &str = r#"set -e
echo "added by the job" >> README.md
rm old.txt
printf 'new\000binary\377' > new.bin
printf 'changed\000\001' > data.bin
chmod +x run.sh
mkdir -p deep/er && echo deep > deep/er/file.txt
ln -s src/lib.rs link2
mkdir -p target && echo "more output" > target/out.o
echo "a log" > build.log"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_jobs_patch_applies_to_the_base_and_reproduces_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let host = host_with_roots(dir.path(), vec![dir.path().to_path_buf()]).await;
    let m = host.manager().clone();
    // The base as it was at submit time, for comparing later.
    let base = dir.path().join("base");
    copy_tree(&repo, &base);
    let done = run(&m, repo_job(&repo, EDIT)).await;
    assert_eq!(
        done.state,
        JobState::Success,
        "{done:?}\n{}",
        stdout(&m, &done.id)
    );
    let summary = done
        .result
        .as_ref()
        .unwrap()
        .patch
        .clone()
        .expect("a patch");
    let files: Vec<(&str, &str, Option<u64>, Option<u64>)> = summary
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.change.as_str(), f.added, f.removed))
        .collect();
    assert_eq!(
        files,
        [
            ("README.md", "modified", Some(1), Some(0)),
            ("data.bin", "modified", None, None),
            ("deep/er/file.txt", "added", Some(1), Some(0)),
            ("link2", "added", Some(1), Some(0)),
            ("new.bin", "added", None, None),
            ("old.txt", "deleted", Some(0), Some(1)),
            ("run.sh", "mode", Some(0), Some(0)),
        ],
        "ignored files (target/, *.log) are not in the patch"
    );
    let patch_file = m.patch_file(&done.id).unwrap();
    let bytes = std::fs::read(&patch_file).unwrap();
    assert_eq!(bytes.len() as u64, summary.size);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("GIT binary patch"), "{text}");
    assert!(text.contains("old mode 100644\nnew mode 100755"), "{text}");

    // git apply --check accepts it on the base...
    let checked = Command::new("git")
        .arg("-C")
        .arg(&base)
        .args(["apply", "--check"])
        .arg(&patch_file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // ...and `delegate-host apply` reproduces the job's tree exactly: the
    // same script run on another copy of the base gives the same tree.
    let args = |check| ApplyArgs {
        id: done.id[..8].to_string(),
        check,
        path: Some(base.clone()),
        turn: false,
        json: false,
    };
    let before = tree_of(&base);
    assert_eq!(apply::run(&m, &args(true)).unwrap(), 0);
    assert_eq!(tree_of(&base), before, "--check changes nothing");
    assert_eq!(apply::run(&m, &args(false)).unwrap(), 0);
    let expected = dir.path().join("expected");
    copy_tree(&repo, &expected);
    bash_in(&expected, EDIT);
    assert_eq!(tree_of(&base), tree_of(&expected));
    // Applied twice, it no longer applies: the exit code says so.
    assert_eq!(apply::run(&m, &args(false)).unwrap(), 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_still_returns_its_patch() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let host = host_with_roots(dir.path(), vec![dir.path().to_path_buf()]).await;
    let m = host.manager().clone();
    let done = run(&m, repo_job(&repo, "echo half done >> README.md; exit 3")).await;
    assert_eq!(done.state, JobState::Failed);
    let result = done.result.as_ref().unwrap();
    assert_eq!(result.exit_code, Some(3));
    let patch = result.patch.as_ref().expect("a failed job keeps its patch");
    assert_eq!(patch.files.len(), 1);
    assert_eq!(patch.files[0].path, "README.md");
    let text = String::from_utf8(m.read_patch(&done.id, 1 << 20).unwrap()).unwrap();
    assert!(text.contains("+half done"), "{text}");
    host.stop().await;
}

#[tokio::test]
async fn repositories_outside_the_roots_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let elsewhere = dir.path().join("allowed");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let connect = |roots: Vec<PathBuf>| {
        let mut s = Settings::builder(&dir.path().join("data")).build().unwrap();
        s.repo_roots = roots;
        let store = Store::open(&s.data_dir).unwrap();
        JobManager::connect(Arc::new(s), store)
    };
    let refused = |m: JobManager, manifest: JobManifest| async move {
        match m.submit(manifest).await {
            Err(JobError::InvalidManifest(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let e = refused(connect(vec![elsewhere.clone()]), repo_job(&repo, "true")).await;
    assert_eq!(e.field, "repo.path");
    assert!(e.rule.contains("outside DELEGATE_REPO_ROOTS"), "{e}");
    let e = refused(connect(Vec::new()), repo_job(&repo, "true")).await;
    assert!(e.rule.contains("set DELEGATE_REPO_ROOTS"), "{e}");
    // A symlink inside the roots that leads out of them is still outside.
    std::os::unix::fs::symlink(&repo, elsewhere.join("sneaky")).unwrap();
    let e = refused(
        connect(vec![elsewhere.clone()]),
        repo_job(&elsewhere.join("sneaky"), "true"),
    )
    .await;
    assert!(e.rule.contains("outside DELEGATE_REPO_ROOTS"), "{e}");
    let e = refused(
        connect(vec![dir.path().to_path_buf()]),
        repo_job(&elsewhere, "true"),
    )
    .await;
    assert!(e.rule.contains("not inside a git work tree"), "{e}");
}

#[tokio::test]
async fn the_hosts_budget_ceiling_caps_claude_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::builder(dir.path()).build().unwrap();
    s.max_budget_usd = Some(2.5);
    let store = Store::open(&s.data_dir).unwrap();
    let m = JobManager::connect(Arc::new(s), store);
    let claude = |agent: serde_json::Value| {
        JobManifest::from_value(serde_json::json!({
            "task": "fix it", "agentType": "claude", "agent": agent,
        }))
        .unwrap()
    };
    match m
        .submit(claude(serde_json::json!({"maxBudgetUsd": 10})))
        .await
    {
        Err(JobError::InvalidManifest(e)) => {
            assert_eq!(e.field, "agent.maxBudgetUsd");
            assert!(e.rule.contains("DELEGATE_MAX_BUDGET_USD"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let rec = m.submit(claude(serde_json::json!({}))).await.unwrap();
    assert_eq!(
        rec.manifest.agent.max_budget_usd,
        Some(2.5),
        "the ceiling is the default"
    );
    let rec = m
        .submit(claude(serde_json::json!({"maxBudgetUsd": 1})))
        .await
        .unwrap();
    assert_eq!(
        rec.manifest.agent.max_budget_usd,
        Some(1.0),
        "a lower budget stands"
    );
}

/// `git daemon` serving `base` on a free loopback port; killed on drop.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            // Its own process group: the children it forks per connection
            // are stopped with it.
            .process_group(0)
            .spawn()
            .expect("git daemon");
        let daemon = GitDaemon { child, port };
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("git daemon did not listen on {port}");
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_repository_arrives_at_its_ref_from_a_loopback_git_server() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    git(&repo, &["stash", "-q", "--include-untracked"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    write(&repo.join("feature.txt"), b"only on the branch\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "feature"]);
    let feature = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    git(&repo, &["checkout", "-q", "main"]);
    let main = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    let daemon = GitDaemon::start(dir.path());
    // No DELEGATE_REPO_ROOTS: they govern paths on this machine, not URLs.
    let host = host_with_roots(dir.path(), Vec::new()).await;
    let m = host.manager().clone();
    let url = format!("git://127.0.0.1:{}/project", daemon.port);
    let job = |git_ref: Option<&str>| {
        let mut repo = serde_json::json!({"url": url});
        if let Some(r) = git_ref {
            repo["ref"] = r.into();
        }
        JobManifest::from_value(serde_json::json!({
            "task": "git rev-parse HEAD; ls; git remote get-url origin; git status --porcelain",
            "agentType": "script",
            "repo": repo,
            "statusMode": "streaming",
            "timeout": 120,
        }))
        .unwrap()
    };
    for (git_ref, commit, has_feature) in [
        (Some("feature"), &feature, true),
        (None, &main, false),
        (Some(&main[..12]), &main, false),
    ] {
        let done = run(&m, job(git_ref)).await;
        let out = stdout(&m, &done.id);
        assert_eq!(done.state, JobState::Success, "{done:?}\n{out}");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(commit.as_str()), "{git_ref:?}: {out}");
        assert_eq!(
            out.contains("feature.txt"),
            has_feature,
            "{git_ref:?}: {out}"
        );
        assert!(
            out.contains(&url),
            "origin is the URL, not the host's cache: {out}"
        );
        let patch = done.result.as_ref().unwrap().patch.as_ref().unwrap();
        assert_eq!(patch.base_commit.as_deref(), Some(commit.as_str()));
        assert!(patch.files.is_empty(), "a clean checkout: {patch:?}");
    }
    let refused = m.submit(job(Some("no-such-branch"))).await.unwrap_err();
    match refused {
        JobError::InvalidManifest(e) => {
            assert_eq!(e.field, "repo.url");
            assert!(e.rule.contains("no-such-branch"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    host.stop().await;
}
