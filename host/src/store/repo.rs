//! A job's repository archive (made at submit, downloaded by the guest)
//! and its patch (uploaded by the guest), kept beside its artifacts in
//! `artifacts/<id>/` so pruning removes them with the rest; and the cache
//! of bare repositories `repo.url` is fetched into (`repo-cache/`). Both are
//! staged under a temporary name and renamed into place whole.

use std::path::{Path, PathBuf};

use super::{Store, StoreError, create_part_file, make_private_dir};

/// The repository archive's file name.
pub const REPO_FILE: &str = "repo.tar.gz";
/// The file holding the archive's base commit (hex), when it has one.
pub const REPO_COMMIT_FILE: &str = "repo.commit";
/// The patch's file name.
pub const PATCH_FILE: &str = "patch.diff";

/// A follow-up turn's own patch (against the previous turn's end).
pub const TURN_PATCH_FILE: &str = "turn-patch.diff";

/// A file being written. Dropping it without committing removes it.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    target: PathBuf,
    done: bool,
}

impl StagedFile {
    /// The file to write into.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Store {
    /// Creates the file the repository archive of `job_id` is written into.
    pub fn stage_repo(&self, job_id: &str) -> Result<StagedFile, StoreError> {
        self.stage_file(job_id, REPO_FILE)
    }

    /// Keeps the written archive with its base commit.
    pub fn commit_repo(
        &self,
        staged: StagedFile,
        base_commit: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(commit) = base_commit {
            let path = staged.target.with_file_name(REPO_COMMIT_FILE);
            std::fs::write(&path, commit).map_err(|source| StoreError::Io { path, source })?;
        }
        self.commit_file(staged)
    }

    /// The repository archive of `job_id` and its base commit, if it has one.
    pub fn repo_archive(&self, job_id: &str) -> Option<(PathBuf, Option<String>)> {
        let dir = self.artifacts_dir(job_id);
        let path = dir.join(REPO_FILE);
        let commit = std::fs::read_to_string(dir.join(REPO_COMMIT_FILE))
            .ok()
            .map(|c| c.trim().to_string());
        path.is_file().then_some((path, commit))
    }

    /// The cache of bare repositories fetched for `repo.url` (git writes
    /// inside it; the store only makes it, private to this user).
    pub fn repo_cache_dir(&self) -> Result<PathBuf, StoreError> {
        let dir = self.data_dir().join("repo-cache");
        make_private_dir(&dir)?;
        Ok(dir)
    }

    /// Removes the repository archive of a job that was never stored.
    pub fn discard_repo(&self, job_id: &str) -> Result<(), StoreError> {
        let dir = self.artifacts_dir(job_id);
        for name in [REPO_FILE, REPO_COMMIT_FILE] {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { path, source }),
            }
        }
        Ok(())
    }

    /// Creates the file a patch upload streams into.
    pub fn stage_patch(&self, job_id: &str) -> Result<StagedFile, StoreError> {
        self.stage_file(job_id, PATCH_FILE)
    }

    /// Creates the file a turn's own patch streams into.
    pub fn stage_turn_patch(&self, job_id: &str) -> Result<StagedFile, StoreError> {
        self.stage_file(job_id, TURN_PATCH_FILE)
    }

    /// The stored turn patch of `job_id`, if there is one.
    pub fn turn_patch_file(&self, job_id: &str) -> Option<PathBuf> {
        let p = self.artifacts_dir(job_id).join(TURN_PATCH_FILE);
        p.is_file().then_some(p)
    }

    /// Keeps an uploaded patch (replacing an earlier one).
    pub fn commit_patch(&self, staged: StagedFile) -> Result<(), StoreError> {
        self.commit_file(staged)
    }

    /// The stored patch of `job_id`, if there is one.
    pub fn patch_file(&self, job_id: &str) -> Option<PathBuf> {
        let p = self.artifacts_dir(job_id).join(PATCH_FILE);
        p.is_file().then_some(p)
    }

    fn stage_file(&self, job_id: &str, name: &str) -> Result<StagedFile, StoreError> {
        let dir = self.artifacts_dir(job_id);
        let path = create_part_file(&dir, name)?;
        Ok(StagedFile {
            path,
            target: dir.join(name),
            done: false,
        })
    }

    fn commit_file(&self, mut staged: StagedFile) -> Result<(), StoreError> {
        std::fs::rename(&staged.path, &staged.target).map_err(|source| StoreError::Io {
            path: staged.target.clone(),
            source,
        })?;
        staged.done = true;
        Ok(())
    }
}
