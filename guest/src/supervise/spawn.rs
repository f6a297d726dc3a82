//! Starting the agent: its own session and process group, the job cgroup,
//! rlimits and the unprivileged user, all set in the child between fork and
//! exec (in that order: joining the cgroup needs the runner's privileges).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use tokio::sync::oneshot;

use super::reaper::{ExitStatus, Reaper};
use super::rlimit::Limits;
use super::user::RunUser;

/// What to start.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// The resolved program.
    pub program: &'a Path,
    /// `argv[0]` as the program should see it.
    pub arg0: &'a str,
    /// Arguments.
    pub args: &'a [String],
    /// The complete environment.
    pub env: &'a BTreeMap<String, String>,
    /// Working directory.
    pub cwd: &'a Path,
    /// Run as this user (when the runner is root).
    pub user: Option<&'a RunUser>,
    /// Resource limits.
    pub limits: Limits,
    /// `cgroup.procs` of the job cgroup to join.
    pub cgroup_procs: Option<CString>,
}

/// A started agent.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group and session id.
    pub pid: i32,
    /// Read end of its stdout.
    pub stdout: File,
    /// Read end of its stderr.
    pub stderr: File,
    /// Where its exit status arrives (from the reaper).
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Starts the agent under the reaper's spawn guard.
pub fn spawn(spec: SpawnSpec<'_>) -> std::io::Result<Spawned> {
    let mut cmd = Command::new(spec.program);
    cmd.arg0(spec.arg0)
        .args(spec.args)
        .env_clear()
        .envs(spec.env)
        .current_dir(spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let limits = spec.limits;
    let cgroup = spec.cgroup_procs;
    let ids = spec.user.map(|u| {
        let groups: Vec<libc::gid_t> = u.groups.iter().map(|g| g.as_raw()).collect();
        (u.uid.as_raw(), u.gid.as_raw(), groups)
    });
    // SAFETY: the closure runs in the forked child before exec. It only
    // makes raw syscalls (setsid, open/write/close, setrlimit, setgroups,
    // setgid, setuid) on data prepared before the fork; it allocates nothing
    // and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(procs) = &cgroup {
                join_cgroup(procs)?;
            }
            limits.apply()?;
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Paranoia: a failed drop must never run the agent as root.
                if libc::getuid() != *uid || libc::geteuid() != *uid {
                    return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                }
            }
            Ok(())
        });
    }
    let (pid, (stdout, stderr), exit) = Reaper::global().spawn_guarded(|| {
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        let out = child.stdout.take().map(OwnedFd::from);
        let err = child.stderr.take().map(OwnedFd::from);
        // Dropping `child` neither waits nor kills: the reaper owns its exit.
        drop(child);
        match (out, err) {
            (Some(o), Some(e)) => Ok((pid, (File::from(o), File::from(e)))),
            _ => Err(std::io::Error::other("child pipes missing")),
        }
    })?;
    Ok(Spawned {
        pid,
        stdout,
        stderr,
        exit,
    })
}

/// Moves the calling process into a cgroup: writing `0` to `cgroup.procs`
/// means "me".
///
/// # Safety
/// Called between fork and exec: raw syscalls only.
unsafe fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: a valid NUL-terminated path and a 1-byte buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}
