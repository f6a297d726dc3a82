//! A private git directory whose work tree is the job's repository:
//! snapshots of the tree (every file not ignored, as `git add -A` sees it)
//! without touching the repository's own `.git`, its index or its config.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why git failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git could not be started.
    #[error("cannot run git (is it installed in the VM?): {0}")]
    Spawn(std::io::Error),
    /// git said no.
    #[error("git {args} failed ({status}): {stderr}")]
    Failed {
        /// The arguments.
        args: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A file beside git could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The private git directory and the work tree it snapshots.
#[derive(Debug, Clone)]
pub struct Snapshots {
    git_dir: PathBuf,
    work_tree: PathBuf,
}

impl Snapshots {
    /// Makes the private git directory for `work_tree`. The repository's
    /// own `info/exclude` is carried over (it is part of what the person
    /// sees as ignored), as is the runner's directory in the workspace.
    pub fn init(git_dir: &Path, work_tree: &Path) -> Result<Snapshots, GitError> {
        let snaps = Snapshots::open(git_dir, work_tree);
        let args = ["init", "--quiet", "--bare"];
        let mut cmd = snaps.command(&args, None);
        cmd.env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .arg(git_dir);
        reaped(cmd, &args, Stdio::piped())?;
        let mut exclude = String::from("/.delegate/\n");
        if let Ok(own) = std::fs::read_to_string(work_tree.join(".git/info/exclude")) {
            exclude.push_str(&own);
        }
        let path = git_dir.join("info/exclude");
        std::fs::create_dir_all(git_dir.join("info"))
            .and_then(|()| std::fs::write(&path, exclude))
            .map_err(|source| GitError::Io { path, source })?;
        Ok(snaps)
    }

    /// A handle on an existing private git directory.
    pub fn open(git_dir: &Path, work_tree: &Path) -> Snapshots {
        Snapshots {
            git_dir: git_dir.to_path_buf(),
            work_tree: work_tree.to_path_buf(),
        }
    }

    /// Records the work tree as it is now and returns its tree id. Each
    /// snapshot starts from an empty index of its own (`name`), so it holds
    /// exactly the files on disk that are not ignored.
    pub fn snapshot(&self, name: &str) -> Result<String, GitError> {
        let index = self.git_dir.join(format!("{name}.index"));
        match std::fs::remove_file(&index) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(GitError::Io {
                    path: index,
                    source,
                });
            }
        }
        // --ignore-errors: a socket or FIFO the agent left is skipped
        // rather than failing the whole snapshot.
        self.run(
            &["add", "--all", "--ignore-errors", "--", "."],
            Some(&index),
        )
        .or_else(|e| match e {
            // add exits 1 after skipping unreadable files; the index
            // still holds everything else.
            GitError::Failed { ref status, .. } if status.contains("exit status: 1") => {
                Ok(Vec::new())
            }
            e => Err(e),
        })?;
        let out = self.run(&["write-tree"], Some(&index))?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// Runs git in the private directory and returns its stdout.
    pub fn run(&self, args: &[&str], index: Option<&Path>) -> Result<Vec<u8>, GitError> {
        reaped(self.command(args, index), args, Stdio::piped())
    }

    /// Runs git with its stdout going to `out`.
    pub fn run_into(&self, args: &[&str], out: &Path) -> Result<(), GitError> {
        let file = std::fs::File::create(out).map_err(|source| GitError::Io {
            path: out.to_path_buf(),
            source,
        })?;
        reaped(self.command(args, None), args, Stdio::from(file)).map(drop)
    }

    /// git with a clean environment: no system or global config, the
    /// private directory as `GIT_DIR`, settings that make a snapshot mean
    /// "the bytes and modes on disk".
    fn command(&self, args: &[&str], index: Option<&Path>) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("LC_ALL", "C")
            .env("HOME", &self.git_dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_DIR", &self.git_dir)
            .env("GIT_WORK_TREE", &self.work_tree)
            .current_dir(&self.work_tree);
        if let Some(index) = index {
            cmd.env("GIT_INDEX_FILE", index);
        }
        for setting in [
            // The work tree belongs to the agent's user, git runs as ours.
            "safe.directory=*",
            "core.bare=false",
            "core.fileMode=true",
            "core.symlinks=true",
            "core.autocrlf=false",
            "core.quotePath=false",
            "core.hooksPath=/dev/null",
            "core.fsmonitor=false",
        ] {
            cmd.args(["-c", setting]);
        }
        cmd.args(args);
        cmd
    }
}

/// Runs `cmd` through the runner's one reaper (the reaper thread calls
/// `waitpid(-1)`, so `std`'s own wait would race it and see `ECHILD`):
/// spawned under the spawn lock, its output read here, its status from the
/// reaper. Returns stdout (empty when it goes to a file).
fn reaped(mut cmd: Command, args: &[&str], stdout: Stdio) -> Result<Vec<u8>, GitError> {
    use std::io::Read;
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let (_, mut child, status) = crate::supervise::reaper::Reaper::global()
        .spawn_guarded(|| cmd.spawn().map(|c| (c.id() as i32, c)))
        .map_err(GitError::Spawn)?;
    let mut stderr_pipe = child.stderr.take();
    // stderr on its own thread, so a full pipe on one stream never stalls
    // the other.
    let errs = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = stderr_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    });
    let mut out = Vec::new();
    if let Some(p) = child.stdout.as_mut() {
        let _ = p.read_to_end(&mut out);
    }
    let stderr = errs.join().unwrap_or_default();
    let status = status
        .blocking_recv()
        .map_err(|_| GitError::Spawn(std::io::Error::other("the reaper stopped")))?;
    if status.code() != Some(0) {
        return Err(failed(args, &status, &stderr));
    }
    Ok(out)
}

fn failed(args: &[&str], status: &dyn std::fmt::Debug, stderr: &[u8]) -> GitError {
    let text = String::from_utf8_lossy(stderr);
    let tail: String = text
        .chars()
        .rev()
        .take(2000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    GitError::Failed {
        args: args.join(" "),
        status: format!("{status:?}"),
        stderr: tail.trim().to_string(),
    }
}
