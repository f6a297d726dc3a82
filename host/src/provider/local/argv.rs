//! The command lines the local provider runs, built as argv arrays (never
//! shell text) so they can be checked in unit tests.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The files and directories of one sandbox, all under
/// `<data dir>/sandboxes/<name>/` (0700).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    /// The sandbox directory.
    pub dir: PathBuf,
    /// The bootstrap (0600), handed to `delegate-guest boot --bootstrap`.
    pub bootstrap: PathBuf,
    /// The job's private workspace.
    pub workspace: PathBuf,
    /// The guest's full stdout/stderr logs.
    pub logs: PathBuf,
    /// `HOME` for the guest and agent.
    pub home: PathBuf,
    /// `TMPDIR` for the guest and agent.
    pub tmp: PathBuf,
    /// The guest's own stdout and stderr (diagnostics).
    pub guest_log: PathBuf,
    /// `<pid> <start time>` of the sandbox's outermost process.
    pub pid_file: PathBuf,
    /// The job id, for reconciliation.
    pub job_file: PathBuf,
}

impl SandboxPaths {
    /// The paths of sandbox `name` under `root` (`<data dir>/sandboxes`).
    pub fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        SandboxPaths {
            bootstrap: dir.join("bootstrap.json"),
            workspace: dir.join("workspace"),
            logs: dir.join("logs"),
            home: dir.join("home"),
            tmp: dir.join("tmp"),
            guest_log: dir.join("guest.log"),
            pid_file: dir.join("pid"),
            job_file: dir.join("job"),
            dir,
        }
    }
}

/// `delegate-guest boot ...` for a sandbox. Inside the user namespace the
/// guest is root but cannot switch to another uid, so it keeps its own.
pub fn guest_argv(guest: &Path, paths: &SandboxPaths) -> Vec<OsString> {
    vec![
        guest.into(),
        "boot".into(),
        "--bootstrap".into(),
        paths.bootstrap.clone().into(),
        "--workspace".into(),
        paths.workspace.clone().into(),
        "--log-dir".into(),
        paths.logs.clone().into(),
        "--no-drop-privileges".into(),
    ]
}

/// util-linux `unshare` flags for a fresh user (mapped to root), mount,
/// pid, ipc and uts namespace. `--fork` makes the guest pid 1 of its pid
/// namespace, so everything in it dies with it; `--kill-child` kills it
/// when `unshare` dies; `--mount-proc` gives it a /proc of its own.
pub const UNSHARE_FLAGS: &[&str] = &[
    "--user",
    "--map-root-user",
    "--mount",
    "--pid",
    "--fork",
    "--kill-child=SIGKILL",
    "--mount-proc",
    "--ipc",
    "--uts",
];

/// `unshare <flags> -- <inner...>`.
pub fn sandboxed(unshare: &Path, inner: Vec<OsString>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![unshare.into()];
    argv.extend(UNSHARE_FLAGS.iter().map(OsString::from));
    argv.push("--".into());
    argv.extend(inner);
    argv
}

/// Sandbox names: `sb-` and 16 hex digits. Anything else is refused before
/// it is joined to a path.
pub fn is_sandbox_name(name: &str) -> bool {
    name.len() == 19
        && name.starts_with("sb-")
        && name[3..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_sandboxed_guest_command() {
        let paths = SandboxPaths::new(Path::new("/d/sandboxes"), "sb-0123456789abcdef");
        let argv = sandboxed(
            Path::new("/usr/bin/unshare"),
            guest_argv(Path::new("/opt/delegate-guest"), &paths),
        );
        let text: Vec<_> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(text[0], "/usr/bin/unshare");
        for flag in [
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--fork",
            "--ipc",
            "--uts",
        ] {
            assert!(text.contains(&flag), "{flag}");
        }
        let sep = text.iter().position(|a| *a == "--").unwrap();
        assert_eq!(
            &text[sep + 1..],
            [
                "/opt/delegate-guest",
                "boot",
                "--bootstrap",
                "/d/sandboxes/sb-0123456789abcdef/bootstrap.json",
                "--workspace",
                "/d/sandboxes/sb-0123456789abcdef/workspace",
                "--log-dir",
                "/d/sandboxes/sb-0123456789abcdef/logs",
                "--no-drop-privileges",
            ]
        );
    }

    #[test]
    fn sandbox_names_cannot_form_paths() {
        assert!(is_sandbox_name("sb-0123456789abcdef"));
        for bad in [
            "",
            "sb-",
            "../etc",
            "sb-0123456789abcdeF",
            "sb-0123456789abcde/",
            "x-0123456789abcdef0",
        ] {
            assert!(!is_sandbox_name(bad), "{bad}");
        }
    }
}
