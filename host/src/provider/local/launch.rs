//! Starting `bwrap` for a sandbox: the job's identity on the host, the
//! descriptors it inherits, and what happens between fork and exec.
//!
//! When the host runs as root, `bwrap` must not: its user namespace would
//! map the job to the host's root. It runs as the job uid instead (65534 by
//! default), which cannot traverse the host's 0700 data directory to the
//! paths it binds, and `bwrap` resolves every source path itself. So the
//! child, still root, first makes a private mount namespace in which a small
//! tmpfs on [`STAGE`] holds bind mounts of the job root, the callback
//! directory and the guest binary; then it drops to the job uid and execs
//! `bwrap`, which finds its sources under [`STAGE`]. Nothing of this is
//! visible on the host or to other jobs, and the data directory stays 0700.
//!
//! Every path in the sandbox is bound from there or copied in from an
//! inherited descriptor; the child is a session leader without a
//! controlling terminal (so a job cannot inject input into the host's
//! terminal), with `no_new_privs`.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, mkdir, setresgid, setresuid, setsid};

use super::argv::{ETC_ENTRIES, SYSTEM_DIRS, Sources, SystemEntry};

/// Where the root-run child stages `bwrap`'s sources (FHS: always present;
/// covered by a tmpfs only in the child's own mount namespace).
pub const STAGE: &str = "/mnt";

/// Whose host uid the job's processes have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobIdentity {
    /// The host's own (unprivileged) user: `bwrap` runs as it.
    HostUser,
    /// The host is root: `bwrap` runs as this unprivileged uid and gid.
    Switch {
        /// Host uid of the job's processes.
        uid: u32,
        /// Host gid of the job's processes.
        gid: u32,
    },
}

impl JobIdentity {
    /// The identity for a host with effective uid `euid`, given the
    /// configured job ids; refuses to switch to root.
    pub fn for_host(euid: u32, job_uid: u32, job_gid: u32) -> Result<JobIdentity, String> {
        if euid != 0 {
            return Ok(JobIdentity::HostUser);
        }
        if job_uid == 0 || job_gid == 0 {
            return Err("the local sandbox's job uid and gid must not be 0 (root)".into());
        }
        Ok(JobIdentity::Switch {
            uid: job_uid,
            gid: job_gid,
        })
    }

    /// The owner to give the job's files, when it is not the host's user.
    pub fn owner(self) -> Option<(u32, u32)> {
        match self {
            JobIdentity::HostUser => None,
            JobIdentity::Switch { uid, gid } => Some((uid, gid)),
        }
    }

    /// Where `bwrap` finds the sources (see the module notes), and what
    /// the child must stage for that.
    pub fn sources(
        self,
        job_root: &Path,
        callback_dir: &Path,
        guest: &Path,
    ) -> (Sources, Vec<Staged>) {
        match self {
            JobIdentity::HostUser => (
                Sources {
                    job_root: job_root.to_path_buf(),
                    callback_dir: callback_dir.to_path_buf(),
                    guest: guest.to_path_buf(),
                },
                Vec::new(),
            ),
            JobIdentity::Switch { .. } => {
                let staged = vec![
                    Staged::dir(job_root, "root"),
                    Staged::dir(callback_dir, "callback"),
                    Staged::file(guest, "delegate-guest"),
                ];
                let sources = Sources {
                    job_root: staged[0].at(),
                    callback_dir: staged[1].at(),
                    guest: staged[2].at(),
                };
                (sources, staged)
            }
        }
    }
}

/// A host path the root-run child binds under [`STAGE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The host path.
    pub src: PathBuf,
    /// Its name under [`STAGE`].
    pub name: &'static str,
    /// A directory (else a file).
    pub is_dir: bool,
}

impl Staged {
    fn dir(src: &Path, name: &'static str) -> Staged {
        Staged {
            src: src.to_path_buf(),
            name,
            is_dir: true,
        }
    }

    fn file(src: &Path, name: &'static str) -> Staged {
        Staged {
            src: src.to_path_buf(),
            name,
            is_dir: false,
        }
    }

    /// Where it appears for `bwrap`.
    pub fn at(&self) -> PathBuf {
        Path::new(STAGE).join(self.name)
    }
}

/// The host's system paths as the sandbox shows them: what exists here.
pub fn system_entries() -> Vec<SystemEntry> {
    SYSTEM_DIRS
        .iter()
        .chain(ETC_ENTRIES)
        .filter_map(|p| {
            let path = PathBuf::from(p);
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).ok()?;
                Some(SystemEntry::Symlink { path, target })
            } else {
                Some(SystemEntry::ReadOnly(path))
            }
        })
        .collect()
}

/// Opens a file for `bwrap` to copy into the sandbox.
pub fn open_data(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(std::fs::File::open(path)?.into())
}

fn cstring(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", p.display()),
        )
    })
}

/// Paths for the child, allocated before the fork.
struct StagePlan {
    stage: CString,
    binds: Vec<(CString, CString, bool)>,
}

impl StagePlan {
    fn new(staged: &[Staged]) -> std::io::Result<StagePlan> {
        Ok(StagePlan {
            stage: cstring(Path::new(STAGE))?,
            binds: staged
                .iter()
                .map(|s| Ok((cstring(&s.src)?, cstring(&s.at())?, s.is_dir)))
                .collect::<std::io::Result<_>>()?,
        })
    }

    /// In the child, as root: a private mount namespace with the sources
    /// under [`STAGE`]. Only system calls, no allocation.
    fn apply(&self) -> nix::Result<()> {
        unshare(CloneFlags::CLONE_NEWNS)?;
        let none = None::<&std::ffi::CStr>;
        mount(
            none,
            c"/",
            none,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            none,
        )?;
        mount(
            Some(c"tmpfs"),
            self.stage.as_c_str(),
            Some(c"tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(c"mode=0755,size=64k"),
        )?;
        for (src, dest, dir) in &self.binds {
            if *dir {
                mkdir(dest.as_c_str(), Mode::from_bits_truncate(0o755))?;
            } else {
                drop(nix::fcntl::open(
                    dest.as_c_str(),
                    OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )?);
            }
            mount(
                Some(src.as_c_str()),
                dest.as_c_str(),
                none,
                MsFlags::MS_BIND,
                none,
            )?;
        }
        Ok(())
    }
}

/// A `bwrap` (or unsandboxed guest) command ready to start.
pub struct Launch {
    /// The command line.
    pub argv: Vec<OsString>,
    /// Descriptors the child keeps (named by number in `argv`).
    pub keep: Vec<OwnedFd>,
    /// Who the child becomes before exec.
    pub identity: JobIdentity,
    /// What to stage (when the identity switches).
    pub staged: Vec<Staged>,
    /// Environment of the command itself.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory of the command itself.
    pub cwd: PathBuf,
    /// The sandbox cgroup's `cgroup.procs`, joined before exec.
    pub cgroup_procs: Option<PathBuf>,
}

impl Launch {
    /// Builds the command (stdin from /dev/null, a session of its own) and
    /// hands back the descriptors, to be closed once it has started.
    pub fn std_command(self) -> std::io::Result<(std::process::Command, Vec<OwnedFd>)> {
        let plan = if self.staged.is_empty() {
            None
        } else {
            Some(StagePlan::new(&self.staged)?)
        };
        let keep: Vec<RawFd> = self.keep.iter().map(|f| f.as_raw_fd()).collect();
        let cgroup_procs = self.cgroup_procs.as_deref().map(cstring).transpose()?;
        let identity = self.identity;
        let mut cmd = std::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only
        // makes system calls on memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                setsid()?;
                if let Some(procs) = &cgroup_procs {
                    let fd = nix::fcntl::open(
                        procs.as_c_str(),
                        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )?;
                    nix::unistd::write(&fd, b"0")?;
                }
                for fd in &keep {
                    let fd = BorrowedFd::borrow_raw(*fd);
                    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                }
                if let Some(plan) = &plan {
                    plan.apply()?;
                }
                if let JobIdentity::Switch { uid, gid } = identity {
                    nix::unistd::setgroups(&[])?;
                    setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid))?;
                    setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))?;
                }
                nix::sys::prctl::set_no_new_privs()?;
                Ok(())
            });
        }
        Ok((cmd, self.keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_host_runs_jobs_as_the_job_uid_and_never_as_root() {
        assert_eq!(
            JobIdentity::for_host(1000, 65534, 65534),
            Ok(JobIdentity::HostUser)
        );
        assert_eq!(
            JobIdentity::for_host(0, 65534, 65534),
            Ok(JobIdentity::Switch {
                uid: 65534,
                gid: 65534
            })
        );
        assert!(JobIdentity::for_host(0, 0, 65534).is_err());
        assert!(JobIdentity::for_host(0, 65534, 0).is_err());
        let (src, staged) = JobIdentity::Switch { uid: 1, gid: 1 }.sources(
            Path::new("/d/sb/root"),
            Path::new("/d/callback"),
            Path::new("/g"),
        );
        assert!(src.job_root.starts_with(STAGE));
        assert!(src.callback_dir.starts_with(STAGE));
        assert!(src.guest.starts_with(STAGE));
        assert_eq!(staged.len(), 3);
        assert_eq!(staged[0].src, Path::new("/d/sb/root"));
        let (src, staged) =
            JobIdentity::HostUser.sources(Path::new("/r"), Path::new("/c"), Path::new("/g"));
        assert_eq!(src.job_root, Path::new("/r"));
        assert!(staged.is_empty());
    }

    #[test]
    fn the_system_view_has_usr_and_no_host_state() {
        let entries = system_entries();
        assert!(entries.contains(&SystemEntry::ReadOnly("/usr".into())));
        for e in &entries {
            let p = match e {
                SystemEntry::ReadOnly(p)
                | SystemEntry::Extra(p)
                | SystemEntry::Symlink { path: p, .. } => p,
            };
            for never in [
                "/home",
                "/root",
                "/var",
                "/run",
                "/tmp",
                "/etc/shadow",
                "/etc/passwd",
            ] {
                assert_ne!(p, Path::new(never));
            }
        }
    }
}
