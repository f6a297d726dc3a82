//! Repositories delivered to jobs: the check of `repo.path` against
//! `DELEGATE_REPO_ROOTS` (`roots.rs`) and the archive the guest downloads
//! (`archive.rs`): the commit at `HEAD` plus the working tree exactly as on
//! disk (uncommitted and untracked files, not ignored ones), `.git`
//! included so the agent can use git. `repo.url` is fetched into a cache
//! of bare repositories and checked out at its ref first (`remote.rs`).
//!
//! Supported: plain repositories whose `.git` is a directory. Submodules
//! arrive as their (empty) directories; Git LFS files arrive as they are
//! in the working tree (the smudged content, when LFS checked it out).
//! Linked worktrees (`.git` is a file) are refused with a clear error.

mod archive;
mod remote;
mod roots;

pub use archive::{RepoArchive, build_archive};
pub use remote::{Checkout, checkout};
pub use roots::resolve_repo;

/// Why a repository cannot be delivered. Each names what to change.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The path is not allowed or not a repository.
    #[error("{0}")]
    Refused(String),
    /// The archive would be over the cap.
    #[error("the repository archive is larger than DELEGATE_MAX_REPO_BYTES ({limit} bytes)")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// git failed.
    #[error("git {args} in {dir}: {message}")]
    Git {
        /// The arguments.
        args: String,
        /// Where.
        dir: String,
        /// What it said.
        message: String,
    },
    /// Reading the repository or writing the archive failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Runs `git -C dir args` and returns its stdout.
pub(crate) fn git(dir: &std::path::Path, args: &[&str]) -> Result<Vec<u8>, RepoError> {
    git_with_env(dir, args, &[])
}

/// [`git`] with `env` added to its environment.
pub(crate) fn git_with_env(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Vec<u8>, RepoError> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| RepoError::Git {
            args: args.join(" "),
            dir: dir.display().to_string(),
            message: format!("cannot run git: {e}"),
        })?;
    if !out.status.success() {
        return Err(RepoError::Git {
            args: args.join(" "),
            dir: dir.display().to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}
