//! Starting the agent: its own session and process group, the job cgroup,
//! clean signal dispositions, stdio, rlimits and the unprivileged user, then
//! exec.
//!
//! The child is made with `clone3(CLONE_INTO_CGROUP)`, so it starts inside
//! the job cgroup: moving a running process by writing `cgroup.procs` waits
//! for an RCU grace period (~10 ms), the biggest cost of a short job. Where
//! `clone3` is missing (old kernels, container seccomp profiles) it falls
//! back to `fork` and the child joins the cgroup itself.
//!
//! Between clone and exec the child runs only raw system calls on data
//! prepared before the clone: no allocation, no locks, and no libc wrappers
//! such as `setuid` that would try to reach the parent's other threads.

use std::collections::BTreeMap;
use std::ffi::{CString, c_char, c_long};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::sync::oneshot;

use super::mountview::MountView;
use super::raw::sys;
use super::reaper::{ExitStatus, Reaper};
use super::rlimit::Limits;
use super::user::RunUser;

/// `CLONE_INTO_CGROUP` (Linux 5.7); not in libc for every target.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// Set (and not `0`), forces the `fork` fallback (to test it).
pub const NO_CLONE3_ENV: &str = "DELEGATE_GUEST_NO_CLONE3";

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
    /// The job cgroup: its directory (for `CLONE_INTO_CGROUP`) and its
    /// `cgroup.procs` (for the `fork` fallback).
    pub cgroup: Option<(&'a OwnedFd, &'a CString)>,
    /// Show the agent `.0` (the workspace) at `/workspace`, building its
    /// root in the empty directory `.1` (see [`super::mountview`]).
    pub view: Option<(&'a Path, &'a Path)>,
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

/// The step of the child's set-up that failed, reported through a pipe.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum Step {
    Signals = 1,
    Setsid,
    Cgroup,
    Stdio,
    Chdir,
    Rlimit,
    Groups,
    Gid,
    Uid,
    Exec,
    View,
}

impl Step {
    fn from_u32(v: u32) -> &'static str {
        match v {
            1 => "resetting signals",
            2 => "setsid",
            3 => "joining the cgroup",
            4 => "setting up stdio",
            5 => "changing to the workspace",
            6 => "setting rlimits",
            7 => "setgroups",
            8 => "setgid",
            9 => "setuid",
            10 => "exec",
            11 => "making the /workspace view (user and mount namespaces)",
            _ => "setting up the child",
        }
    }
}

/// A step of the child's set-up failed before exec.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {cause}")]
struct SetupError {
    step: &'static str,
    in_view: bool,
    cause: std::io::Error,
}

/// Whether `e` (from [`spawn`]) says only the `/workspace` view could not
/// be made: the same spawn without the view may still work.
pub fn failed_in_view(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<SetupError>())
        .is_some_and(|s| s.in_view)
}

/// Everything the child needs, made before the clone.
struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp: Vec<*const c_char>,
    cwd: CString,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    report: OwnedFd,
    limits: Limits,
    ids: Option<(u32, u32, Vec<libc::gid_t>)>,
    cgroup_procs: Option<CString>,
    view: Option<MountView>,
}

fn cstring(bytes: &[u8], what: &str) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// A pipe whose ends are close-on-exec and not 0, 1 or 2 (which the child
/// overwrites with dup3).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Starts the agent under the reaper's spawn guard.
pub fn spawn(spec: SpawnSpec<'_>) -> std::io::Result<Spawned> {
    let argv_c: Vec<CString> = std::iter::once(cstring(spec.arg0.as_bytes(), "argv[0]"))
        .chain(
            spec.args
                .iter()
                .map(|a| cstring(a.as_bytes(), "an argument")),
        )
        .collect::<Result<_, _>>()?;
    let envp_c: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes(), "the environment"))
        .collect::<Result<_, _>>()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let devnull = above_stdio(File::open("/dev/null")?.into())?;
    let prepared = Prepared {
        path: cstring(spec.program.as_os_str().as_bytes(), "the program path")?,
        argv: argv_c
            .iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
        _argv: argv_c,
        envp: envp_c
            .iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
        _envp: envp_c,
        cwd: cstring(spec.cwd.as_os_str().as_bytes(), "the workspace path")?,
        stdin: devnull,
        stdout: out_w,
        stderr: err_w,
        report: report_w,
        limits: spec.limits,
        ids: spec.user.map(|u| {
            (
                u.uid.as_raw(),
                u.gid.as_raw(),
                u.groups.iter().map(|g| g.as_raw()).collect(),
            )
        }),
        cgroup_procs: spec.cgroup.map(|(_, procs)| procs.clone()),
        view: match spec.view {
            Some((workspace, root)) => {
                let (uid, gid) = spec.user.map_or_else(
                    || {
                        (
                            nix::unistd::geteuid().as_raw(),
                            nix::unistd::getegid().as_raw(),
                        )
                    },
                    |u| (u.uid.as_raw(), u.gid.as_raw()),
                );
                Some(MountView::new(workspace, root, uid, gid)?)
            }
            None => None,
        },
    };
    let cgroup_fd = spec.cgroup.map(|(fd, _)| fd.as_raw_fd());
    let (pid, (stdout, stderr), exit) = Reaper::global().spawn_guarded(|| {
        let pid = create_child(&prepared, cgroup_fd)?;
        // The child has its copies; the write ends must close here so that
        // end of file arrives when the agent's tree is gone.
        drop(prepared);
        let mut report = File::from(report_r);
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < buf.len() {
            match report.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if got == buf.len() {
            // The child failed before exec and exits; the reaper reaps it.
            let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
            let cause = std::io::Error::from_raw_os_error(errno);
            return Err(std::io::Error::new(
                cause.kind(),
                SetupError {
                    step: Step::from_u32(step),
                    in_view: step == Step::View as u32,
                    cause,
                },
            ));
        }
        Ok((pid, (File::from(out_r), File::from(err_r))))
    })?;
    Ok(Spawned {
        pid,
        stdout,
        stderr,
        exit,
    })
}

#[repr(C, align(8))]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Makes the child; returns its pid in the parent, never returns in the child.
fn create_child(p: &Prepared, cgroup_fd: Option<RawFd>) -> std::io::Result<i32> {
    let use_clone3 = std::env::var(NO_CLONE3_ENV).map_or(true, |v| v.is_empty() || v == "0");
    if use_clone3 {
        let mut args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        if let Some(fd) = cgroup_fd {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = fd as u64;
        }
        // SAFETY: clone3 without CLONE_VM and without a stack behaves like
        // fork: the child gets a copy of this thread and of the memory.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match ret {
            0 => {
                // SAFETY: in the child; `p` was prepared before the clone.
                unsafe { child_main(p, false) }
            }
            pid if pid > 0 => return Ok(pid as i32),
            _ => {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM) => {
                        tracing::debug!("clone3 unavailable ({e}); using fork");
                    }
                    _ => return Err(e),
                }
            }
        }
    }
    // SAFETY: fork in a multi-threaded process; the child only makes raw
    // system calls until exec.
    match unsafe { libc::fork() } {
        // SAFETY: in the child; `p` was prepared before the fork.
        0 => unsafe { child_main(p, cgroup_fd.is_some()) },
        pid if pid > 0 => Ok(pid),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The child between clone and exec.
///
/// # Safety
/// Only to be called in a freshly cloned child.
unsafe fn child_main(p: &Prepared, join_cgroup: bool) -> ! {
    let fail = |step: Step, errno: i32| -> ! {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: raw write of a stack buffer, then exit without running
        // anything of the parent's (no atexit handlers, no destructors).
        unsafe {
            libc::syscall(
                libc::SYS_write,
                p.report.as_raw_fd(),
                buf.as_ptr(),
                buf.len(),
            );
            libc::syscall(libc::SYS_exit_group, 127);
        }
        unreachable!()
    };
    // SAFETY: (the whole block) raw system calls on memory prepared before
    // the clone, which the child owns a copy of.
    unsafe {
        // Default dispositions for every signal (ignored ones included,
        // which exec would keep) and an empty mask. An all-zero kernel
        // sigaction is SIG_DFL on every architecture.
        let zero = [0u64; 4];
        for sig in 1..=64usize {
            if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
                continue;
            }
            let _ = sys(libc::SYS_rt_sigaction, sig, zero.as_ptr() as usize, 0, 8);
        }
        let empty: u64 = 0;
        if let Err(e) = sys(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &empty as *const u64 as usize,
            0,
            8,
        ) {
            fail(Step::Signals, e);
        }
        if let Err(e) = sys(libc::SYS_setsid, 0, 0, 0, 0) {
            fail(Step::Setsid, e);
        }
        if join_cgroup && let Some(procs) = &p.cgroup_procs {
            let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
            match sys(
                libc::SYS_openat,
                libc::AT_FDCWD as usize,
                procs.as_ptr() as usize,
                flags,
                0,
            ) {
                Ok(fd) => {
                    let wrote = sys(libc::SYS_write, fd as usize, b"0".as_ptr() as usize, 1, 0);
                    let _ = sys(libc::SYS_close, fd as usize, 0, 0, 0);
                    if let Err(e) = wrote {
                        fail(Step::Cgroup, e);
                    }
                }
                Err(e) => fail(Step::Cgroup, e),
            }
        }
        for (from, to) in [(&p.stdin, 0usize), (&p.stdout, 1), (&p.stderr, 2)] {
            if let Err(e) = sys(libc::SYS_dup3, from.as_raw_fd() as usize, to, 0, 0) {
                fail(Step::Stdio, e);
            }
        }
        if let Err(e) = sys(libc::SYS_chdir, p.cwd.as_ptr() as usize, 0, 0, 0) {
            fail(Step::Chdir, e);
        }
        for (resource, value) in p.limits.pairs().into_iter().flatten() {
            let lim = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if let Err(e) = sys(
                libc::SYS_prlimit64,
                0,
                resource as usize,
                &lim as *const _ as usize,
                0,
            ) {
                fail(Step::Rlimit, e);
            }
        }
        if let Some((uid, gid, groups)) = &p.ids {
            if let Err(e) = sys(
                libc::SYS_setgroups,
                groups.len(),
                groups.as_ptr() as usize,
                0,
                0,
            ) {
                fail(Step::Groups, e);
            }
            let g = *gid as usize;
            if let Err(e) = sys(libc::SYS_setresgid, g, g, g, 0) {
                fail(Step::Gid, e);
            }
            let u = *uid as usize;
            if let Err(e) = sys(libc::SYS_setresuid, u, u, u, 0) {
                fail(Step::Uid, e);
            }
            // A failed drop must never run the agent as root.
            if sys(libc::SYS_getuid, 0, 0, 0, 0) != Ok(*uid as c_long)
                || sys(libc::SYS_geteuid, 0, 0, 0, 0) != Ok(*uid as c_long)
            {
                fail(Step::Uid, libc::EPERM);
            }
        }
        if let Some(view) = &p.view
            && let Err(e) = view.enter()
        {
            fail(Step::View, e);
        }
        let e = sys(
            libc::SYS_execve,
            p.path.as_ptr() as usize,
            p.argv.as_ptr() as usize,
            p.envp.as_ptr() as usize,
            0,
        )
        .err()
        .unwrap_or(libc::EIO);
        fail(Step::Exec, e)
    }
}
