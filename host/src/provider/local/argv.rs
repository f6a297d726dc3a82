//! The command lines the local provider runs, built as argv arrays (never
//! shell text) so they can be checked in unit tests: where a sandbox's files
//! are on the host, what the job sees inside, and the `bwrap` command that
//! builds that view.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

/// What the job sees inside its sandbox. The same paths as in a VM where a
/// VM has them (`/workspace`, `/run/delegate/bootstrap.json`).
pub mod inside {
    /// The job's workspace.
    pub const WORKSPACE: &str = "/workspace";
    /// The job user's home (the guest's own `HOME`; the agent's is under
    /// the workspace, as in a VM).
    pub const HOME: &str = "/home/delegate";
    /// The sandbox's own `/tmp`.
    pub const TMP: &str = "/tmp";
    /// The guest's full logs and its event spool.
    pub const LOGS: &str = "/var/log/delegate";
    /// The bootstrap, 0600, as in a VM.
    pub const BOOTSTRAP: &str = "/run/delegate/bootstrap.json";
    /// The host's callback directory (holding only its socket), read-only.
    pub const HOST_DIR: &str = "/run/delegate/host";
    /// The callback API's socket, the sandbox's only way out.
    pub const SOCKET: &str = "/run/delegate/host/callback.sock";
    /// The egress gateway's socket, in the same directory: the guest
    /// relays a loopback port to it for the job's proxy variables.
    pub const EGRESS_SOCKET: &str = "/run/delegate/host/egress.sock";
    /// The guest binary.
    pub const GUEST: &str = "/run/delegate/bin/delegate-guest";
    /// The job user's name.
    pub const USER: &str = "delegate";
    /// The job user's uid and gid inside (mapped to an unprivileged host
    /// uid: the host's own, or the configured job uid when the host is root).
    pub const UID: u32 = 1000;
    /// See [`UID`].
    pub const GID: u32 = 1000;
    /// `PATH` of the guest (the agent gets the guest's clean base too).
    pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

/// The files and directories of one sandbox, all under
/// `<data dir>/sandboxes/<name>/` (0700, the host's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    /// The sandbox directory: the host's files; never shown to the job.
    pub dir: PathBuf,
    /// The bootstrap (0600), copied into the sandbox by `bwrap`.
    pub bootstrap: PathBuf,
    /// `/etc/passwd`, `/etc/group` and `/etc/hosts` of the sandbox.
    pub passwd: PathBuf,
    /// See `passwd`.
    pub group: PathBuf,
    /// See `passwd`.
    pub hosts: PathBuf,
    /// The job's own directory (owned by the job's host uid): the only
    /// part of the data directory the job sees, through its four subdirs.
    pub job_root: PathBuf,
    /// The job's private workspace (`/workspace`).
    pub workspace: PathBuf,
    /// The guest's full stdout/stderr logs (`/var/log/delegate`).
    pub logs: PathBuf,
    /// `HOME` of the guest (`/home/delegate`).
    pub home: PathBuf,
    /// The sandbox's `/tmp`.
    pub tmp: PathBuf,
    /// The guest's own stdout and stderr (diagnostics).
    pub guest_log: PathBuf,
    /// `<pid> <start time>` of the sandbox's outermost process.
    pub pid_file: PathBuf,
    /// The job id, for reconciliation.
    pub job_file: PathBuf,
    /// The sandbox cgroup's directory, when it has one.
    pub cgroup_file: PathBuf,
}

/// The names of the job root's subdirectories, bound into the sandbox.
pub const JOB_SUBDIRS: [(&str, &str); 4] = [
    ("workspace", inside::WORKSPACE),
    ("home", inside::HOME),
    ("tmp", inside::TMP),
    ("logs", inside::LOGS),
];

impl SandboxPaths {
    /// The paths of sandbox `name` under `root` (`<data dir>/sandboxes`).
    pub fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        let job_root = dir.join("root");
        SandboxPaths {
            bootstrap: dir.join("bootstrap.json"),
            passwd: dir.join("passwd"),
            group: dir.join("group"),
            hosts: dir.join("hosts"),
            workspace: job_root.join("workspace"),
            home: job_root.join("home"),
            tmp: job_root.join("tmp"),
            logs: job_root.join("logs"),
            job_root,
            guest_log: dir.join("guest.log"),
            pid_file: dir.join("pid"),
            job_file: dir.join("job"),
            cgroup_file: dir.join("cgroup"),
            dir,
        }
    }
}

/// `/etc/passwd` of a sandbox: root (nobody can become it: no capabilities)
/// and the job user.
pub fn passwd_text() -> String {
    format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n{user}:x:{uid}:{gid}:delegate job user:{home}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        user = inside::USER,
        uid = inside::UID,
        gid = inside::GID,
        home = inside::HOME,
    )
}

/// `/etc/group` of a sandbox.
pub fn group_text() -> String {
    format!(
        "root:x:0:\n{user}:x:{gid}:\nnogroup:x:65534:\n",
        user = inside::USER,
        gid = inside::GID,
    )
}

/// `/etc/hosts` of a sandbox: loopback only (it has no other network).
pub const HOSTS_TEXT: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost\n";

/// `delegate-guest boot ...` as run inside the sandbox.
pub fn guest_argv() -> Vec<OsString> {
    [
        inside::GUEST,
        "boot",
        "--bootstrap",
        inside::BOOTSTRAP,
        "--workspace",
        inside::WORKSPACE,
        "--log-dir",
        inside::LOGS,
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// `delegate-guest boot ...` run as a plain process (the unsandboxed
/// opt-in): the host's own paths.
pub fn unsandboxed_guest_argv(guest: &Path, paths: &SandboxPaths) -> Vec<OsString> {
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

/// A top-level system path and how the sandbox shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemEntry {
    /// A directory or file, bound read-only at the same path.
    ReadOnly(PathBuf),
    /// A directory the host's settings add (`DELEGATE_LOCAL_READONLY_DIRS`),
    /// bound read-only at the same path after the sandbox's own
    /// directories, so it shows even under the sandbox's `/tmp`.
    Extra(PathBuf),
    /// A symlink (e.g. `/bin -> usr/bin` on merged-/usr systems), recreated.
    Symlink {
        /// Where it is.
        path: PathBuf,
        /// What it points to.
        target: PathBuf,
    },
}

/// The system directories a job may read: programs and libraries.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// What of the host's `/etc` a job sees: the loader's cache, CA
/// certificates, time zone, Debian's alternatives. Not shadow files, not
/// the host's accounts, not its network configuration.
pub const ETC_ENTRIES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/os-release",
    "/etc/nsswitch.conf",
];

/// Where `bwrap` finds the host side of what it binds: the real paths when
/// it runs as the host's own user, or the staged ones when the host is
/// root and `bwrap` runs as the job uid (see `launch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The job root (its four subdirectories are bound).
    pub job_root: PathBuf,
    /// The directory holding the callback socket.
    pub callback_dir: PathBuf,
    /// The guest binary.
    pub guest: PathBuf,
}

/// Open files `bwrap` copies into the sandbox (inherited descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFds {
    /// The bootstrap.
    pub bootstrap: RawFd,
    /// `/etc/passwd`.
    pub passwd: RawFd,
    /// `/etc/group`.
    pub group: RawFd,
    /// `/etc/hosts`.
    pub hosts: RawFd,
}

/// Namespaces and the job user: everything `bwrap` is told before the view.
pub fn isolation_flags(hostname: &str) -> Vec<OsString> {
    let mut a: Vec<OsString> = [
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup",
        // No user namespaces inside: the job gains nothing from them and
        // they are the usual door to kernel bugs.
        "--disable-userns",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    for (flag, value) in [
        ("--uid", inside::UID.to_string()),
        ("--gid", inside::GID.to_string()),
        ("--hostname", hostname.to_string()),
    ] {
        a.push(flag.into());
        a.push(value.into());
    }
    a
}

/// The read-only system view.
pub fn system_view(system: &[SystemEntry]) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    for entry in system {
        match entry {
            SystemEntry::ReadOnly(p) => {
                a.extend(["--ro-bind".into(), p.into(), p.into()]);
            }
            SystemEntry::Symlink { path, target } => {
                a.extend(["--symlink".into(), target.into(), path.into()]);
            }
            SystemEntry::Extra(_) => {}
        }
    }
    a
}

/// The settings' extra directories, bound read-only; after the sandbox's
/// own binds, or a host directory under `/tmp` would be hidden by the
/// sandbox's `/tmp`.
pub fn extra_view(system: &[SystemEntry]) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    for entry in system {
        if let SystemEntry::Extra(p) = entry {
            a.extend(["--ro-bind".into(), p.into(), p.into()]);
        }
    }
    a
}

/// The whole `bwrap` command for one sandbox.
pub fn bwrap_argv(
    bwrap: &Path,
    hostname: &str,
    system: &[SystemEntry],
    src: &Sources,
    fds: DataFds,
    cgroup: Option<&Path>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![bwrap.into()];
    a.extend(isolation_flags(hostname));
    a.push("--clearenv".into());
    for (k, v) in [
        ("PATH", inside::PATH),
        ("HOME", inside::HOME),
        ("TMPDIR", inside::TMP),
        ("LANG", "C.UTF-8"),
        ("USER", inside::USER),
        ("LOGNAME", inside::USER),
    ] {
        a.extend(["--setenv".into(), k.into(), v.into()]);
    }
    a.extend(system_view(system));
    let data = |a: &mut Vec<OsString>, mode: &str, fd: RawFd, dest: &str| {
        a.extend([
            "--perms".into(),
            mode.into(),
            "--ro-bind-data".into(),
            fd.to_string().into(),
            dest.into(),
        ]);
    };
    data(&mut a, "0644", fds.passwd, "/etc/passwd");
    data(&mut a, "0644", fds.group, "/etc/group");
    data(&mut a, "0644", fds.hosts, "/etc/hosts");
    a.extend([
        "--proc".into(),
        "/proc".into(),
        "--dev".into(),
        "/dev".into(),
    ]);
    if let Some(dir) = cgroup {
        // The sandbox's own cgroup, for the guest's job cgroup below it.
        a.extend(["--bind".into(), dir.into(), "/sys/fs/cgroup".into()]);
    }
    for (name, dest) in JOB_SUBDIRS {
        a.extend(["--bind".into(), src.job_root.join(name).into(), dest.into()]);
    }
    a.extend(extra_view(system));
    data(&mut a, "0600", fds.bootstrap, inside::BOOTSTRAP);
    a.extend([
        "--ro-bind".into(),
        src.callback_dir.clone().into(),
        inside::HOST_DIR.into(),
        "--ro-bind".into(),
        src.guest.clone().into(),
        inside::GUEST.into(),
        "--chdir".into(),
        inside::WORKSPACE.into(),
        // The sandbox's root is bwrap's tmpfs: nothing outside the binds
        // is writable.
        "--remount-ro".into(),
        "/".into(),
        "--".into(),
    ]);
    a.extend(guest_argv());
    a
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

    fn text(argv: &[OsString]) -> Vec<&str> {
        argv.iter().map(|a| a.to_str().unwrap()).collect()
    }

    /// The arguments that follow `flag` wherever it occurs.
    fn after<'a>(t: &[&'a str], flag: &str, n: usize) -> Vec<Vec<&'a str>> {
        t.iter()
            .enumerate()
            .filter(|(_, a)| **a == flag)
            .map(|(i, _)| t[i + 1..=i + n].to_vec())
            .collect()
    }

    /// A sandbox's paths, sources and data fds as the tests below use them.
    fn fixture() -> (SandboxPaths, Sources, DataFds) {
        let paths = SandboxPaths::new(Path::new("/d/sandboxes"), "sb-0123456789abcdef");
        let src = Sources {
            job_root: paths.job_root.clone(),
            callback_dir: "/d/sandboxes/callback".into(),
            guest: "/opt/delegate-guest".into(),
        };
        let fds = DataFds {
            bootstrap: 10,
            passwd: 11,
            group: 12,
            hosts: 13,
        };
        (paths, src, fds)
    }

    #[test]
    fn extra_directories_are_bound_after_the_sandboxs_own() {
        let (paths, src, fds) = fixture();
        let system = [
            SystemEntry::Extra("/tmp/ci/claude".into()),
            SystemEntry::ReadOnly("/usr".into()),
        ];
        let argv = bwrap_argv(Path::new("bwrap"), "h", &system, &src, fds, None);
        let t = text(&argv);
        let at = |pair: [&str; 2]| t.windows(2).position(|w| w == pair).unwrap();
        let tmp = paths.job_root.join("tmp");
        let own_tmp = at([tmp.to_str().unwrap(), "/tmp"]);
        let extra = at(["/tmp/ci/claude", "/tmp/ci/claude"]);
        assert!(t[extra - 1] == "--ro-bind" && extra > own_tmp, "{t:?}");
        assert!(at(["/usr", "/usr"]) < own_tmp);
        assert!(
            system_view(&system).len() == 3,
            "the extra is not in the system view"
        );
    }

    #[test]
    fn builds_the_sandboxed_guest_command() {
        let (_, src, fds) = fixture();
        let system = [
            SystemEntry::ReadOnly("/usr".into()),
            SystemEntry::Symlink {
                path: "/bin".into(),
                target: "usr/bin".into(),
            },
        ];
        let argv = bwrap_argv(
            Path::new("/usr/bin/bwrap"),
            "sb-0123456789abcdef",
            &system,
            &src,
            fds,
            None,
        );
        let t = text(&argv);
        assert_eq!(t[0], "/usr/bin/bwrap");
        for flag in [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup",
            "--disable-userns",
            "--clearenv",
            "--proc",
            "--dev",
        ] {
            assert!(t.contains(&flag), "{flag}");
        }
        // Never tied to the host's life: a restarted host resumes the job.
        assert!(!t.contains(&"--die-with-parent"));
        assert!(!t.contains(&"--share-net"));
        assert_eq!(after(&t, "--uid", 1), [["1000"]]);
        assert_eq!(
            after(&t, "--ro-bind", 2),
            [
                vec!["/usr", "/usr"],
                vec!["/d/sandboxes/callback", "/run/delegate/host"],
                vec!["/opt/delegate-guest", "/run/delegate/bin/delegate-guest"],
            ]
        );
        assert_eq!(after(&t, "--symlink", 2), [["usr/bin", "/bin"]]);
        // Only the job root's subdirectories are writable, nothing above.
        let r = "/d/sandboxes/sb-0123456789abcdef/root";
        assert_eq!(
            after(&t, "--bind", 2),
            [
                vec![format!("{r}/workspace").as_str(), "/workspace"],
                vec![format!("{r}/home").as_str(), "/home/delegate"],
                vec![format!("{r}/tmp").as_str(), "/tmp"],
                vec![format!("{r}/logs").as_str(), "/var/log/delegate"],
            ]
        );
        assert!(!t.iter().any(|a| *a == "/d" || *a == "/d/sandboxes"));
        assert_eq!(
            after(&t, "--ro-bind-data", 2),
            [
                ["11", "/etc/passwd"],
                ["12", "/etc/group"],
                ["13", "/etc/hosts"],
                ["10", "/run/delegate/bootstrap.json"],
            ]
        );
        let bootstrap_at = t.iter().position(|a| *a == "10").unwrap();
        assert_eq!(t[bootstrap_at - 3..bootstrap_at - 1], ["--perms", "0600"]);
        let sep = t.iter().position(|a| *a == "--").unwrap();
        assert_eq!(
            &t[sep + 1..],
            [
                "/run/delegate/bin/delegate-guest",
                "boot",
                "--bootstrap",
                "/run/delegate/bootstrap.json",
                "--workspace",
                "/workspace",
                "--log-dir",
                "/var/log/delegate",
            ]
        );
    }

    #[test]
    fn the_sandbox_cgroup_is_bound_where_the_guest_looks() {
        let paths = SandboxPaths::new(Path::new("/d/sandboxes"), "sb-0123456789abcdef");
        let src = Sources {
            job_root: paths.job_root.clone(),
            callback_dir: "/d/callback".into(),
            guest: "/g".into(),
        };
        let fds = DataFds {
            bootstrap: 3,
            passwd: 4,
            group: 5,
            hosts: 6,
        };
        let cg = Path::new("/sys/fs/cgroup/delegate-sb-0123456789abcdef");
        let argv = bwrap_argv(Path::new("bwrap"), "h", &[], &src, fds, Some(cg));
        let t = text(&argv);
        assert!(
            after(&t, "--bind", 2).contains(&vec![
                "/sys/fs/cgroup/delegate-sb-0123456789abcdef",
                "/sys/fs/cgroup"
            ]),
            "{t:?}"
        );
    }

    #[test]
    fn the_sandbox_accounts_hold_the_job_user() {
        assert!(passwd_text().contains("delegate:x:1000:1000:"));
        assert!(group_text().contains("delegate:x:1000:"));
        assert_eq!(
            inside::SOCKET,
            format!("{}/callback.sock", inside::HOST_DIR)
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
            "callback",
        ] {
            assert!(!is_sandbox_name(bad), "{bad}");
        }
    }
}
