//! Which repositories may be delivered: the work tree's top level, under
//! one of `DELEGATE_REPO_ROOTS`, with `.git` a directory.

use std::path::{Path, PathBuf};

use super::{RepoError, git};

/// Resolves `path` (as the manifest gives it) to the top level of its work
/// tree and checks it against `roots` (absolute, canonical or not).
pub fn resolve_repo(path: &str, roots: &[PathBuf]) -> Result<PathBuf, RepoError> {
    if roots.is_empty() {
        return Err(RepoError::Refused(
            "this host delivers no repositories: set DELEGATE_REPO_ROOTS to the directories \
             repositories may come from (e.g. DELEGATE_REPO_ROOTS=$HOME/src)"
                .into(),
        ));
    }
    let canonical =
        std::fs::canonicalize(path).map_err(|e| RepoError::Refused(format!("{path:?}: {e}")))?;
    if !canonical.is_dir() {
        return Err(RepoError::Refused(format!("{path:?} is not a directory")));
    }
    let top = git(&canonical, &["rev-parse", "--show-toplevel"])
        .map_err(|_| RepoError::Refused(format!("{path:?} is not inside a git work tree")))?;
    let top = PathBuf::from(String::from_utf8_lossy(&top).trim());
    let top = std::fs::canonicalize(&top).unwrap_or(top);
    if !within(&top, roots) {
        let listed: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(RepoError::Refused(format!(
            "{} is outside DELEGATE_REPO_ROOTS ({})",
            top.display(),
            listed.join(":")
        )));
    }
    let dot_git = top.join(".git");
    match std::fs::symlink_metadata(&dot_git) {
        Ok(m) if m.is_dir() => Ok(top),
        Ok(_) => Err(RepoError::Refused(format!(
            "{}: .git is not a directory (a linked worktree or a submodule); \
             give the main work tree",
            top.display()
        ))),
        Err(e) => Err(RepoError::Refused(format!("{}: {e}", dot_git.display()))),
    }
}

fn within(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|root| {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
        path.starts_with(&root)
    })
}
