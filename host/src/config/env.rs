//! The parts of the machine that settings are resolved against, gathered in
//! one value so tests can feed their own instead of touching the process
//! environment.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The guest binary's file name.
pub const GUEST_BIN_NAME: &str = "delegate-guest";

/// What [`super::Settings::resolve_with`] may look at.
#[derive(Debug, Clone, Default)]
pub struct MachineEnv {
    /// `$XDG_DATA_HOME`.
    pub xdg_data_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$PATH`.
    pub path: Option<OsString>,
    /// The running executable.
    pub current_exe: Option<PathBuf>,
    /// The current directory, for relative paths.
    pub cwd: Option<PathBuf>,
}

impl MachineEnv {
    /// This process's environment.
    pub fn current() -> Self {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        MachineEnv {
            xdg_data_home: non_empty("XDG_DATA_HOME").map(PathBuf::from),
            home: non_empty("HOME").map(PathBuf::from),
            path: non_empty("PATH"),
            current_exe: std::env::current_exe().ok(),
            cwd: std::env::current_dir().ok(),
        }
    }

    /// `$XDG_DATA_HOME/delegate`, else `~/.local/share/delegate`. A relative
    /// `XDG_DATA_HOME` is ignored, as the XDG spec says.
    pub fn default_data_dir(&self) -> Option<PathBuf> {
        if let Some(x) = self.xdg_data_home.as_ref().filter(|p| p.is_absolute()) {
            return Some(x.join("delegate"));
        }
        self.home
            .as_ref()
            .map(|h| h.join(".local").join("share").join("delegate"))
    }

    /// `delegate-guest` beside the current executable, then on `PATH`.
    ///
    /// Under `cargo test` the executable sits in `target/<profile>/deps`, one
    /// level below the binaries, so that parent is tried too.
    pub fn find_guest(&self) -> Option<PathBuf> {
        let mut candidates = Vec::new();
        if let Some(dir) = self.current_exe.as_deref().and_then(Path::parent) {
            candidates.push(dir.join(GUEST_BIN_NAME));
            if dir.file_name().is_some_and(|n| n == "deps")
                && let Some(up) = dir.parent()
            {
                candidates.push(up.join(GUEST_BIN_NAME));
            }
        }
        if let Some(path) = &self.path {
            candidates.extend(
                std::env::split_paths(path)
                    .filter(|d| d.is_absolute())
                    .map(|d| d.join(GUEST_BIN_NAME)),
            );
        }
        candidates.into_iter().find(|p| is_executable(p))
    }
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
