//! The job's repository: delivered from the host before the agent runs,
//! and turned into a patch afterwards, whatever the outcome.
//!
//! The runner never runs git on the workspace's own `.git`: the agent can
//! change that directory's config (hooks, filters, fsmonitor), and git runs
//! as the runner's user. [`git::Snapshots`] keeps a private git directory in
//! the log directory instead, with the workspace as its work tree, and
//! records the delivered tree as the base.

mod archive;
mod git;
mod patch;

use std::path::{Path, PathBuf};

use delegate_proto::{JobManifest, PatchSummary};

pub use archive::{ArchiveError, unpack_archive};
pub use git::{GitError, Snapshots};

use crate::callback::CallbackClient;
use crate::workspace::{Layout, Owner};

/// Largest repository archive the guest downloads.
pub const MAX_REPO_ARCHIVE_BYTES: u64 = 4 << 30;

/// What was delivered: where the repository is and the tree it started as.
#[derive(Debug, Clone)]
pub struct RepoBase {
    /// The repository's root (the workspace, or `repo.dir` inside it).
    pub root: PathBuf,
    /// The private git directory holding the snapshots.
    pub git_dir: PathBuf,
    /// The delivered tree.
    pub tree: String,
    /// The commit the host said the repository was at.
    pub commit: Option<String>,
}

/// Why the repository could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The repository needs a host to come from.
    #[error("repo needs a host to fetch it from (run with --callback)")]
    NoHost,
    /// Downloading failed.
    #[error("downloading the repository: {0}")]
    Download(#[from] crate::callback::CallbackError),
    /// Unpacking failed.
    #[error("unpacking the repository: {0}")]
    Unpack(#[from] ArchiveError),
    /// Recording the base failed.
    #[error("recording the repository's base: {0}")]
    Git(#[from] GitError),
    /// A blocking task did not finish.
    #[error("the runner's worker failed: {0}")]
    Worker(String),
}

/// Downloads the job's repository, unpacks it into the workspace and
/// records its tree as the base for the patch.
pub async fn deliver(
    manifest: &JobManifest,
    layout: &Layout,
    owner: Owner,
    host: Option<&CallbackClient>,
) -> Result<Option<RepoBase>, RepoError> {
    let Some(spec) = &manifest.repo else {
        return Ok(None);
    };
    let client = host.ok_or(RepoError::NoHost)?;
    let archive = layout.log_dir.join("repo.tar.gz");
    let commit = client
        .download_repo(&archive, MAX_REPO_ARCHIVE_BYTES)
        .await?;
    let dir = spec.relative_dir();
    let workspace = layout.workspace.clone();
    let git_dir = layout.log_dir.join("repo-snapshots.git");
    blocking(move || {
        let unpacked = unpack_archive(&archive, &workspace, dir.as_deref(), owner);
        let _ = std::fs::remove_file(&archive);
        unpacked?;
        let root = match &dir {
            Some(d) => workspace.join(d),
            None => workspace.clone(),
        };
        let snaps = Snapshots::init(&git_dir, &root)?;
        let tree = snaps.snapshot("base")?;
        Ok(Some(RepoBase {
            root,
            git_dir,
            tree,
            commit,
        }))
    })
    .await
}

/// The patches of one run, made from one snapshot of the tree.
#[derive(Debug, Clone)]
pub struct Patches {
    /// Every change since the base.
    pub base: PatchSummary,
    /// For a follow-up turn: the changes since the previous turn's end.
    pub turn: Option<PatchSummary>,
    /// The tree now (the next turn's "previous").
    pub tree: String,
}

/// Makes the patch of every change since `base` into `out`, and with
/// `previous` (a follow-up turn: the tree the previous turn left) the
/// patch of this turn's own changes into `turn_out`.
pub async fn make_patches(
    base: &RepoBase,
    previous: Option<(&str, &Path)>,
    out: &Path,
) -> Result<Patches, RepoError> {
    let base = base.clone();
    let previous = previous.map(|(tree, path)| (tree.to_string(), path.to_path_buf()));
    let out = out.to_path_buf();
    blocking(move || {
        let snaps = Snapshots::open(&base.git_dir, &base.root);
        let now = snaps.snapshot("final")?;
        let whole = patch::write(&snaps, &base.tree, &now, base.commit.clone(), &out)?;
        let turn = match &previous {
            Some((tree, path)) => Some(patch::write(&snaps, tree, &now, None, path)?),
            None => None,
        };
        Ok(Patches {
            base: whole,
            turn,
            tree: now,
        })
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RepoError> + Send + 'static,
) -> Result<T, RepoError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RepoError::Worker(e.to_string()))?
}
