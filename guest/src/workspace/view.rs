//! Where the agent sees its workspace: at `/workspace`, as in every VM and
//! in the local sandbox, so that one manifest (`cd /workspace && ...`,
//! `files: [{path: "/workspace/in.txt"}]`) works everywhere.
//!
//! A standalone run's workspace is elsewhere (a fresh directory under
//! `$TMPDIR`, or `--workspace`). There the agent runs in a user and mount
//! namespace of its own whose root shows the host's top-level directories
//! as they are plus the workspace at `/workspace` (`supervise::mountview`):
//! nothing else changes (same uid, same files, same network). Where that is
//! impossible (no unprivileged user namespaces) the agent sees the real
//! path, `WORKSPACE` says it, and the run's summary says why.

use std::path::{Path, PathBuf};

use super::PRIVATE_DIR;

/// Where every provider shows the workspace.
pub const WORKSPACE: &str = "/workspace";

/// How the agent sees its workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceView {
    /// The workspace is `/workspace` already (VMs, the local sandbox).
    Direct,
    /// A mount namespace shows it at `/workspace`.
    Mapped {
        /// The real workspace.
        real: PathBuf,
    },
    /// The agent sees the real path.
    Unmapped {
        /// Why it could not be mapped.
        reason: String,
    },
}

impl WorkspaceView {
    /// The view to try for `workspace`. `Mapped` is tried by the agent's
    /// own spawn; where that fails, [`WorkspaceView::failed`] replaces it.
    pub fn plan(workspace: &Path) -> WorkspaceView {
        if workspace == Path::new(WORKSPACE) {
            WorkspaceView::Direct
        } else {
            WorkspaceView::Mapped {
                real: workspace.to_path_buf(),
            }
        }
    }

    /// What is left when trying the mapped view failed.
    pub fn failed(reason: &str) -> WorkspaceView {
        WorkspaceView::Unmapped {
            reason: format!("no user and mount namespace here ({reason})"),
        }
    }

    /// The empty directory the mapped view builds its root in.
    pub fn root_dir(workspace: &Path) -> PathBuf {
        workspace.join(PRIVATE_DIR).join("root")
    }

    /// For the spawn: the workspace and the root directory, when mapped.
    pub fn spawn_view(&self) -> Option<(&Path, PathBuf)> {
        match self {
            WorkspaceView::Mapped { real } => Some((real.as_path(), Self::root_dir(real))),
            _ => None,
        }
    }

    /// `path` (inside the real workspace) as the agent sees it.
    pub fn agent_path(&self, path: &Path) -> PathBuf {
        match self {
            WorkspaceView::Mapped { real } => match path.strip_prefix(real) {
                Ok(rest) if rest.as_os_str().is_empty() => PathBuf::from(WORKSPACE),
                Ok(rest) => Path::new(WORKSPACE).join(rest),
                Err(_) => path.to_path_buf(),
            },
            _ => path.to_path_buf(),
        }
    }

    /// The sentence for the run's summary, when the workspace is not
    /// `/workspace` on this machine.
    pub fn note(&self) -> Option<String> {
        match self {
            WorkspaceView::Unmapped { reason } => Some(format!(
                "the agent sees its workspace at its real path, not {WORKSPACE}: {reason}; \
                 WORKSPACE holds the path"
            )),
            WorkspaceView::Mapped { real } => Some(format!(
                "the agent sees its workspace ({}) at {WORKSPACE}",
                real.display()
            )),
            WorkspaceView::Direct => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_at_workspace_needs_nothing() {
        let v = WorkspaceView::plan(Path::new("/workspace"));
        assert_eq!(v, WorkspaceView::Direct);
        assert_eq!(v.spawn_view(), None);
        assert_eq!(v.note(), None);
    }

    #[test]
    fn elsewhere_it_is_mapped_or_says_why_not() {
        let ws = Path::new("/tmp/delegate-x/workspace");
        let v = WorkspaceView::plan(ws);
        assert_eq!(
            v.agent_path(&ws.join(".delegate/home")),
            Path::new("/workspace/.delegate/home")
        );
        assert_eq!(v.agent_path(ws).as_os_str(), "/workspace");
        assert_eq!(v.agent_path(Path::new("/etc")), Path::new("/etc"));
        let (real, root) = v.spawn_view().unwrap();
        assert_eq!(
            (real, root.as_path()),
            (ws, ws.join(".delegate/root").as_path())
        );
        assert!(v.note().unwrap().contains("at /workspace"));

        let v = WorkspaceView::failed("unshare: Operation not permitted");
        assert!(
            v.note().unwrap().contains("Operation not permitted"),
            "{v:?}"
        );
        assert_eq!(v.agent_path(&ws.join("a")), ws.join("a"));
        assert_eq!(v.spawn_view(), None);
    }
}
