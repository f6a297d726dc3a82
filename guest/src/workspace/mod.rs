//! The job's directories: the workspace the agent works in, the log
//! directory beside it, and the agent's own HOME and TMPDIR inside the
//! workspace (under [`PRIVATE_DIR`], which artifact collection skips).
//!
//! Without `--workspace`, a fresh directory `$TMPDIR/delegate-XXXXXX` holds
//! `workspace/` and `workspace-logs/`; it is kept after the run (its path is
//! printed on stderr) so output and files can be inspected.

pub mod unpack;
pub mod view;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use unpack::{EntryError, Owner, TreeWriter, UnpackError, ensure_dir, unpack};

/// The runner's directory inside the workspace: the agent's HOME and TMPDIR.
pub const PRIVATE_DIR: &str = ".delegate";

/// Where everything of one job lives.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The agent's working directory.
    pub workspace: PathBuf,
    /// Full stdout and stderr logs (and the callback spool).
    pub log_dir: PathBuf,
    /// The agent's HOME.
    pub home: PathBuf,
    /// The agent's TMPDIR.
    pub tmp: PathBuf,
    /// The fresh directory made for this run, when no workspace was given.
    pub temp_root: Option<PathBuf>,
}

/// Why the directories could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A directory could not be made or opened.
    #[error("{what} {path}: {source}")]
    Dir {
        /// Which directory.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// HOME or TMPDIR inside the workspace could not be made safely.
    #[error(transparent)]
    Private(#[from] UnpackError),
}

impl Layout {
    /// Makes the directories. `owner` (when the agent runs as another user)
    /// gets the workspace root and the private directories.
    pub fn prepare(
        workspace: Option<&Path>,
        log_dir: Option<&Path>,
        owner: Owner,
    ) -> Result<Layout, LayoutError> {
        let dir_err = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| LayoutError::Dir { what, path, source }
        };
        let (workspace, temp_root) = match workspace {
            Some(ws) => {
                std::fs::create_dir_all(ws).map_err(dir_err("workspace", ws))?;
                let ws = std::fs::canonicalize(ws).map_err(dir_err("workspace", ws))?;
                (ws, None)
            }
            None => {
                let root = make_temp_root()
                    .map_err(dir_err("temporary directory", &std::env::temp_dir()))?;
                let ws = root.join("workspace");
                std::fs::create_dir(&ws).map_err(dir_err("workspace", &ws))?;
                (ws, Some(root))
            }
        };
        let log_dir = match log_dir {
            Some(d) => d.to_path_buf(),
            None => default_log_dir(&workspace),
        };
        std::fs::create_dir_all(&log_dir).map_err(dir_err("log directory", &log_dir))?;
        // Logs may hold what the agent printed; only the runner reads them.
        std::fs::set_permissions(&log_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(dir_err("log directory", &log_dir))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&workspace, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(dir_err("workspace", &workspace))?;
        }
        ensure_dir(&workspace, &format!("{PRIVATE_DIR}/home"), 0o700, owner)?;
        ensure_dir(&workspace, &format!("{PRIVATE_DIR}/tmp"), 0o700, owner)?;
        // Where a standalone run builds the agent's root (`view`): empty.
        ensure_dir(&workspace, &format!("{PRIVATE_DIR}/root"), 0o700, owner)?;
        Ok(Layout {
            home: workspace.join(PRIVATE_DIR).join("home"),
            tmp: workspace.join(PRIVATE_DIR).join("tmp"),
            workspace,
            log_dir,
            temp_root,
        })
    }

    /// The full stdout log.
    pub fn stdout_log(&self) -> PathBuf {
        self.log_dir.join("stdout.log")
    }

    /// The full stderr log.
    pub fn stderr_log(&self) -> PathBuf {
        self.log_dir.join("stderr.log")
    }
}

/// `<parent of workspace>/<workspace name>-logs`.
pub fn default_log_dir(workspace: &Path) -> PathBuf {
    let name = workspace
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workspace".into());
    workspace
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{name}-logs"))
}

fn make_temp_root() -> std::io::Result<PathBuf> {
    let template = std::env::temp_dir().join("delegate-XXXXXX");
    let root = nix::unistd::mkdtemp(&template)?;
    // The agent may run as another user and must reach its workspace.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_log_dir_sits_beside_the_workspace() {
        assert_eq!(
            default_log_dir(Path::new("/workspace")),
            PathBuf::from("/workspace-logs")
        );
        assert_eq!(
            default_log_dir(Path::new("/tmp/j/ws")),
            PathBuf::from("/tmp/j/ws-logs")
        );
    }

    #[test]
    fn prepares_given_and_fresh_workspaces() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let l = Layout::prepare(Some(&ws), None, None).unwrap();
        assert!(l.home.is_dir() && l.tmp.is_dir());
        assert_eq!(
            l.log_dir,
            dir.path().canonicalize().unwrap().join("ws-logs")
        );
        assert!(l.temp_root.is_none());

        let l = Layout::prepare(None, None, None).unwrap();
        let root = l.temp_root.clone().unwrap();
        assert!(l.workspace.starts_with(&root) && l.log_dir.starts_with(&root));
        std::fs::remove_dir_all(root).unwrap();
    }
}
