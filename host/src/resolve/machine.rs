//! [`Machine`]: everything settings resolution may look at outside its
//! arguments (environment variables, files, the working directory, the
//! running executable, the host name), behind one trait. The server
//! resolves against [`ProcessMachine`]; tests and benchmarks pass a
//! [`FixedMachine`], so what they get never depends on the shell they run in.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A regular file; `executable` when any execute bit is set.
    File {
        /// Any of the execute bits.
        executable: bool,
    },
    /// Something else (a socket, a device, ...).
    Other,
}

/// The outside world as settings resolution sees it.
pub trait Machine {
    /// An environment variable; unset and empty are the same (`None`).
    fn var_os(&self, name: &str) -> Option<OsString>;
    /// A file's contents.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// What is at `path` (following symlinks); `None` when nothing is.
    fn file_kind(&self, path: &Path) -> Option<FileKind>;
    /// The working directory, for relative paths.
    fn cwd(&self) -> Option<PathBuf>;
    /// The running executable.
    fn current_exe(&self) -> Option<PathBuf>;
    /// The machine's host name.
    fn hostname(&self) -> Option<String>;
    /// The names of the set variables that start with `prefix` (for
    /// families such as `DELEGATE_SECRET_<NAME>`).
    fn var_names(&self, prefix: &str) -> Vec<String>;
    /// A file's permission bits (following symlinks); `None` when nothing is there.
    fn mode(&self, path: &Path) -> Option<u32>;
    /// Whether `/dev/kvm` can be opened for reading and writing: the cheap
    /// half of knowing KVM works (the other half boots a VM).
    fn kvm_device(&self) -> Result<(), String>;

    /// An environment variable that is valid UTF-8.
    fn var(&self, name: &str) -> Option<String> {
        self.var_os(name).and_then(|v| v.into_string().ok())
    }

    /// A regular file with an execute bit.
    fn is_executable(&self, path: &Path) -> bool {
        matches!(
            self.file_kind(path),
            Some(FileKind::File { executable: true })
        )
    }

    /// `$XDG_DATA_HOME/delegate`, else `~/.local/share/delegate`. A relative
    /// `XDG_DATA_HOME` is ignored, as the XDG spec says.
    fn default_data_dir(&self) -> Option<PathBuf> {
        if let Some(x) = self
            .var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
        {
            return Some(x.join("delegate"));
        }
        self.var_os("HOME").map(|h| {
            PathBuf::from(h)
                .join(".local")
                .join("share")
                .join("delegate")
        })
    }

    /// The first executable `name` in an absolute directory of `$PATH`.
    fn find_on_path(&self, name: &str) -> Option<PathBuf> {
        let path = self.var_os("PATH")?;
        std::env::split_paths(&path)
            .filter(|d| d.is_absolute())
            .map(|d| d.join(name))
            .find(|p| self.is_executable(p))
    }

    /// `name` beside the running executable, then on `PATH`.
    ///
    /// Under `cargo test` the executable sits in `target/<profile>/deps`,
    /// one level below the binaries, so that parent is tried too.
    fn find_beside_exe_or_on_path(&self, name: &str) -> Option<PathBuf> {
        let mut beside = Vec::new();
        if let Some(dir) = self.current_exe().as_deref().and_then(Path::parent) {
            beside.push(dir.join(name));
            if dir.file_name().is_some_and(|n| n == "deps")
                && let Some(up) = dir.parent()
            {
                beside.push(up.join(name));
            }
        }
        beside
            .into_iter()
            .find(|p| self.is_executable(p))
            .or_else(|| self.find_on_path(name))
    }
}

/// This process's environment and file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessMachine;

impl Machine for ProcessMachine {
    fn var_os(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name).filter(|v| !v.is_empty())
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        let meta = std::fs::metadata(path).ok()?;
        Some(if meta.is_dir() {
            FileKind::Directory
        } else if meta.is_file() {
            FileKind::File {
                executable: meta.permissions().mode() & 0o111 != 0,
            }
        } else {
            FileKind::Other
        })
    }
    fn cwd(&self) -> Option<PathBuf> {
        std::env::current_dir().ok()
    }
    fn current_exe(&self) -> Option<PathBuf> {
        std::env::current_exe().ok()
    }
    fn hostname(&self) -> Option<String> {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
    }
    fn var_names(&self, prefix: &str) -> Vec<String> {
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with(prefix))
            .collect()
    }
    fn mode(&self, path: &Path) -> Option<u32> {
        std::fs::metadata(path).ok().map(|m| m.permissions().mode())
    }
    fn kvm_device(&self) -> Result<(), String> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(drop)
            .map_err(|e| format!("/dev/kvm cannot be opened: {e}"))
    }
}

/// A machine made of given values and nothing else: no variable, file or
/// directory exists unless it is listed here. For tests and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct FixedMachine {
    /// Environment variables.
    pub vars: BTreeMap<String, String>,
    /// Files and their contents.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Files that are executable (they need not be in `files`).
    pub executables: BTreeSet<PathBuf>,
    /// Directories.
    pub dirs: BTreeSet<PathBuf>,
    /// The working directory.
    pub cwd: Option<PathBuf>,
    /// The running executable.
    pub current_exe: Option<PathBuf>,
    /// The host name.
    pub hostname: Option<String>,
    /// Permission bits of files in `files` (0o600 when not listed).
    pub modes: BTreeMap<PathBuf, u32>,
    /// Whether `/dev/kvm` opens (by default it does not, as in CI).
    pub kvm: bool,
}

impl FixedMachine {
    /// Sets a variable.
    pub fn with_var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_string(), value.into());
        self
    }

    /// Adds a file.
    pub fn with_file(mut self, path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.into(), contents.into());
        self
    }

    /// Adds an executable file.
    pub fn with_executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.executables.insert(path.into());
        self
    }
}

impl Machine for FixedMachine {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.vars
            .get(name)
            .filter(|v| !v.is_empty())
            .map(OsString::from)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        if self.dirs.contains(path) {
            Some(FileKind::Directory)
        } else if self.executables.contains(path) {
            Some(FileKind::File { executable: true })
        } else if self.files.contains_key(path) {
            Some(FileKind::File { executable: false })
        } else {
            None
        }
    }
    fn cwd(&self) -> Option<PathBuf> {
        self.cwd.clone()
    }
    fn current_exe(&self) -> Option<PathBuf> {
        self.current_exe.clone()
    }
    fn hostname(&self) -> Option<String> {
        self.hostname.clone()
    }
    fn var_names(&self, prefix: &str) -> Vec<String> {
        self.vars
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
    fn mode(&self, path: &Path) -> Option<u32> {
        self.files
            .contains_key(path)
            .then(|| self.modes.get(path).copied().unwrap_or(0o600))
    }
    fn kvm_device(&self) -> Result<(), String> {
        if self.kvm {
            Ok(())
        } else {
            Err("/dev/kvm cannot be opened: no such device on this fixed machine".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_prefers_an_absolute_xdg_data_home() {
        let m = FixedMachine::default()
            .with_var("XDG_DATA_HOME", "/x")
            .with_var("HOME", "/h");
        assert_eq!(m.default_data_dir(), Some(PathBuf::from("/x/delegate")));
        let m = FixedMachine::default()
            .with_var("XDG_DATA_HOME", "rel")
            .with_var("HOME", "/h");
        assert_eq!(
            m.default_data_dir(),
            Some(PathBuf::from("/h/.local/share/delegate"))
        );
        assert_eq!(FixedMachine::default().default_data_dir(), None);
    }

    #[test]
    fn programs_are_found_beside_the_executable_then_on_path() {
        let m = FixedMachine {
            current_exe: Some("/t/debug/deps/test-1".into()),
            ..FixedMachine::default()
        }
        .with_var("PATH", "rel:/usr/bin:/bin")
        .with_executable("/bin/tool")
        .with_file("/usr/bin/tool", "not executable");
        assert_eq!(m.find_on_path("tool"), Some(PathBuf::from("/bin/tool")));
        let m = m.with_executable("/t/debug/tool");
        assert_eq!(
            m.find_beside_exe_or_on_path("tool"),
            Some(PathBuf::from("/t/debug/tool"))
        );
        assert_eq!(m.find_on_path("missing"), None);
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let m = FixedMachine::default().with_var("A", "");
        assert_eq!(m.var("A"), None);
    }
}
