//! The local provider's settings: [`LocalArgs`] (flags and environment,
//! parsed only) resolved against the machine into [`LocalSettings`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::argv::inside;
use crate::resolve::{FileKind, Machine, SettingsError, absolute, invalid, parse_flag};

/// The guest binary's file name.
pub const GUEST_BIN_NAME: &str = "delegate-guest";

/// Paths a sandbox has of its own where a read-only directory of the host
/// would be mixed into the job's files (its workspace, and so its patch;
/// its home) or its system: refused. (Under `/tmp` is fine: the directory
/// is bound inside the sandbox's own `/tmp`.)
const SANDBOX_OWN: &[&str] = &[
    inside::WORKSPACE,
    inside::HOME,
    inside::LOGS,
    "/run/delegate",
    "/proc",
    "/dev",
    "/sys",
    "/etc",
];

/// The guests' `PATH` when the host has none.
const DEFAULT_GUEST_PATH: &str = "/usr/bin:/bin";

/// Local provider settings as given on the command line or in the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// The `delegate-guest` binary (local provider).
    /// Default: beside `delegate-host`, then `PATH`.
    #[arg(long, env = "DELEGATE_GUEST_BIN")]
    pub guest_bin: Option<PathBuf>,
    /// Let the local provider run jobs without namespaces where they are not
    /// allowed (`--local-unsandboxed`, or `=1`/`=0` as in the variable).
    #[arg(
        long,
        env = "DELEGATE_LOCAL_UNSANDBOXED",
        value_parser = parse_flag,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "0",
        default_missing_value = "1"
    )]
    pub local_unsandboxed: bool,
    /// Host uid the local sandbox runs jobs as when the host runs as root.
    #[arg(long, env = "DELEGATE_LOCAL_JOB_UID", default_value_t = DEFAULT_JOB_ID)]
    pub local_job_uid: u32,
    /// Host gid the local sandbox runs jobs as when the host runs as root.
    #[arg(long, env = "DELEGATE_LOCAL_JOB_GID", default_value_t = DEFAULT_JOB_ID)]
    pub local_job_gid: u32,
    /// Directories every sandbox sees read-only at the same path, beside
    /// the system's (comma-separated): programs installed outside `/usr`,
    /// such as Claude Code under an npm prefix in a home directory.
    #[arg(long, env = "DELEGATE_LOCAL_READONLY_DIRS", value_delimiter = ',')]
    pub local_readonly_dirs: Vec<PathBuf>,
}

/// The host uid and gid of jobs under a root host: `nobody`/`nogroup`.
pub const DEFAULT_JOB_ID: u32 = 65534;

impl Default for LocalArgs {
    /// What clap gives when nothing is set (a derived default would make
    /// the job uid 0, which the provider refuses).
    fn default() -> Self {
        LocalArgs {
            guest_bin: None,
            local_unsandboxed: false,
            local_job_uid: DEFAULT_JOB_ID,
            local_job_gid: DEFAULT_JOB_ID,
            local_readonly_dirs: Vec::new(),
        }
    }
}

/// What the local provider runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// `delegate-guest`, absolute and executable.
    pub guest_bin: PathBuf,
    /// Where the sandboxes' directories are made.
    pub sandbox_root: PathBuf,
    /// bubblewrap (`bwrap`), when the machine has it.
    pub bwrap: Option<PathBuf>,
    /// `DELEGATE_LOCAL_UNSANDBOXED`: the user's opt-in for machines without
    /// user namespaces.
    pub allow_unsandboxed: bool,
    /// `DELEGATE_LOCAL_JOB_UID`: the host uid of jobs when the host is root.
    pub job_uid: u32,
    /// `DELEGATE_LOCAL_JOB_GID`: the host gid of jobs when the host is root.
    pub job_gid: u32,
    /// The `PATH` guests run with: the host's, so an agent finds the same
    /// programs as the person who started the host.
    pub guest_path: OsString,
    /// `DELEGATE_LOCAL_READONLY_DIRS`: absolute directories bound read-only.
    pub readonly_dirs: Vec<PathBuf>,
}

impl LocalArgs {
    /// Finds the guest and `bwrap`; sandboxes go under `data_dir`.
    pub fn resolve(
        &self,
        data_dir: &Path,
        machine: &dyn Machine,
    ) -> Result<LocalSettings, SettingsError> {
        let guest_bin = match &self.guest_bin {
            Some(path) => {
                let path = absolute("DELEGATE_GUEST_BIN", path, machine)?;
                if !machine.is_executable(&path) {
                    return Err(invalid(
                        "DELEGATE_GUEST_BIN",
                        format!("{} is not an executable file", path.display()),
                    ));
                }
                path
            }
            None => machine
                .find_beside_exe_or_on_path(GUEST_BIN_NAME)
                .ok_or_else(|| {
                    invalid(
                        "DELEGATE_GUEST_BIN",
                        "delegate-guest was found neither beside delegate-host nor on PATH; \
                         build it (cargo build -p delegate-guest) or set DELEGATE_GUEST_BIN",
                    )
                })?,
        };
        let readonly_dirs = self
            .local_readonly_dirs
            .iter()
            .map(|dir| readonly_dir(dir, machine))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LocalSettings {
            guest_bin,
            sandbox_root: data_dir.join("sandboxes"),
            bwrap: find_bwrap(machine),
            allow_unsandboxed: self.local_unsandboxed,
            job_uid: self.local_job_uid,
            job_gid: self.local_job_gid,
            guest_path: machine
                .var_os("PATH")
                .unwrap_or_else(|| DEFAULT_GUEST_PATH.into()),
            readonly_dirs,
        })
    }
}

/// One of `DELEGATE_LOCAL_READONLY_DIRS`: absolute, a directory, and not
/// where the sandbox has its own.
fn readonly_dir(dir: &Path, machine: &dyn Machine) -> Result<PathBuf, SettingsError> {
    const SETTING: &str = "DELEGATE_LOCAL_READONLY_DIRS";
    let dir = absolute(SETTING, dir, machine)?;
    if let Some(own) = SANDBOX_OWN.iter().find(|own| dir.starts_with(own)) {
        let why = format!(
            "{} is under {own}, which every sandbox has of its own",
            dir.display()
        );
        return Err(invalid(SETTING, why));
    }
    match machine.file_kind(&dir) {
        Some(FileKind::Directory) => Ok(dir),
        _ => Err(invalid(
            SETTING,
            format!("{} is not a directory", dir.display()),
        )),
    }
}

/// `bwrap` on `PATH`, else in /usr/bin or /bin (where Debian puts it,
/// should `PATH` be minimal).
fn find_bwrap(machine: &dyn Machine) -> Option<PathBuf> {
    machine.find_on_path("bwrap").or_else(|| {
        ["/usr/bin/bwrap", "/bin/bwrap"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| machine.is_executable(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::FixedMachine;

    #[test]
    fn guest_and_bwrap_are_found_on_the_machine() {
        let m = FixedMachine::default()
            .with_var("PATH", "/opt/bin")
            .with_executable("/opt/bin/delegate-guest")
            .with_executable("/usr/bin/bwrap");
        let s = LocalArgs::default().resolve(Path::new("/d"), &m).unwrap();
        assert_eq!(s.guest_bin, PathBuf::from("/opt/bin/delegate-guest"));
        assert_eq!(s.bwrap, Some(PathBuf::from("/usr/bin/bwrap")));
        assert_eq!((s.job_uid, s.job_gid), (DEFAULT_JOB_ID, DEFAULT_JOB_ID));
        assert_eq!(s.sandbox_root, PathBuf::from("/d/sandboxes"));
        assert!(!s.allow_unsandboxed);
        assert_eq!(s.guest_path, "/opt/bin");
    }

    #[test]
    fn a_given_guest_must_be_executable() {
        let args = LocalArgs {
            guest_bin: Some("g".into()),
            local_unsandboxed: true,
            ..LocalArgs::default()
        };
        let m = FixedMachine {
            cwd: Some("/w".into()),
            ..FixedMachine::default()
        };
        let err = args.resolve(Path::new("/d"), &m).unwrap_err().to_string();
        assert!(err.starts_with("DELEGATE_GUEST_BIN: /w/g"), "{err}");
        let s = args
            .resolve(Path::new("/d"), &m.with_executable("/w/g"))
            .unwrap();
        assert_eq!(s.guest_bin, PathBuf::from("/w/g"));
        assert_eq!(s.bwrap, None);
        assert!(s.allow_unsandboxed);
        assert_eq!(s.guest_path, "/usr/bin:/bin");
    }

    #[test]
    fn readonly_dirs_must_be_directories_and_are_made_absolute() {
        let args = LocalArgs {
            local_readonly_dirs: vec!["tools".into(), "/opt/claude".into()],
            ..LocalArgs::default()
        };
        let mut m = FixedMachine {
            cwd: Some("/w".into()),
            ..FixedMachine::default()
        }
        .with_executable("/usr/bin/delegate-guest")
        .with_var("PATH", "/usr/bin");
        m.dirs.insert("/w/tools".into());
        let err = args.resolve(Path::new("/d"), &m).unwrap_err().to_string();
        assert!(
            err.starts_with("DELEGATE_LOCAL_READONLY_DIRS: /opt/claude is not a directory"),
            "{err}"
        );
        m.dirs.insert("/opt/claude".into());
        let s = args.resolve(Path::new("/d"), &m).unwrap();
        let own = LocalArgs {
            local_readonly_dirs: vec!["/workspace/tools".into()],
            ..LocalArgs::default()
        };
        m.dirs.insert("/workspace/tools".into());
        let err = own.resolve(Path::new("/d"), &m).unwrap_err().to_string();
        assert!(
            err.contains("/workspace/tools is under /workspace"),
            "{err}"
        );
        assert_eq!(
            s.readonly_dirs,
            [PathBuf::from("/w/tools"), PathBuf::from("/opt/claude")]
        );
    }
}
