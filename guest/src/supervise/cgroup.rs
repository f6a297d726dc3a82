//! A cgroup v2 for the job, when the runner may make one.
//!
//! What works is detected, not assumed: inside a VM the v2 tree usually has
//! the `memory`, `cpu` and `pids` controllers and the job gets real limits;
//! on a hybrid host (`/sys/fs/cgroup/unified` without controllers) the job
//! cgroup still ends the whole tree with `cgroup.kill`; without a writable
//! v2 tree there is no cgroup and the subreaper does the killing.
//!
//! The job's cgroup is a child of the runner's own. Controllers can only be
//! enabled for children of a cgroup that has no processes of its own, so
//! the runner first moves itself into a leaf beside the job (for a systemd
//! unit this needs `Delegate=yes`), except in the hierarchy's root.

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CPU period for `cpu.max`, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// Limits to put on the job's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `memory.max` in bytes.
    pub memory: Option<u64>,
    /// Whole CPUs for `cpu.max`.
    pub cpus: Option<u32>,
    /// `pids.max`.
    pub pids: Option<u64>,
}

/// Which limits the kernel accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// `memory.max` is in force.
    pub memory: bool,
    /// `cpu.max` is in force.
    pub cpu: bool,
    /// `pids.max` is in force.
    pub pids: bool,
}

/// The job's cgroup.
#[derive(Debug)]
pub struct JobCgroup {
    dir: PathBuf,
    dir_fd: OwnedFd,
    procs: CString,
    kill: bool,
    applied: Applied,
}

/// The `cpu.max` line for a number of CPUs.
pub fn cpu_max(cpus: u32) -> String {
    format!("{} {CPU_PERIOD}", u64::from(cpus) * CPU_PERIOD)
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
pub fn v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_octal(mount_point)))
    })
}

/// The runner's v2 cgroup path, from `/proc/self/cgroup` (`0::/path`).
pub fn own_v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end_matches(" (deleted)").to_string())
}

/// mountinfo escapes spaces and such as `\040`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'3').contains(&b[i + 1]) && (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl JobCgroup {
    /// Makes the job's cgroup, or says why there is none.
    pub fn create(limits: &CgroupLimits) -> Result<JobCgroup, String> {
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let mount = v2_mount(&mountinfo).ok_or("no cgroup v2 hierarchy is mounted")?;
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let own = own_v2_path(&own).ok_or("the runner is in no cgroup v2")?;
        let base = mount.join(own.trim_start_matches('/'));
        if !base.join("cgroup.procs").exists() {
            return Err(format!("{} is not visible", base.display()));
        }
        let pid = std::process::id();
        enable_controllers(&base, limits, pid);
        let dir = new_child(&base, "delegate-job", pid)
            .map_err(|e| format!("cannot create a job cgroup in {}: {e}", base.display()))?;
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|e| e.to_string())?;
        let dir_fd: OwnedFd = std::fs::File::open(&dir)
            .map_err(|e| format!("cannot open {}: {e}", dir.display()))?
            .into();
        let mut applied = Applied::default();
        if let Some(bytes) = limits.memory {
            applied.memory = write(&dir, "memory.max", &bytes.to_string());
            // Without this the job could swap past its memory limit.
            if applied.memory {
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            }
        }
        if let Some(cpus) = limits.cpus {
            applied.cpu = write(&dir, "cpu.max", &cpu_max(cpus));
        }
        if let Some(pids) = limits.pids {
            applied.pids = write(&dir, "pids.max", &pids.to_string());
        }
        Ok(JobCgroup {
            kill: dir.join("cgroup.kill").exists(),
            dir,
            dir_fd,
            procs,
            applied,
        })
    }

    /// The directory, open, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn dir_fd(&self) -> &OwnedFd {
        &self.dir_fd
    }

    /// The `cgroup.procs` file a child writes `0` to in order to join.
    pub fn procs_file(&self) -> &CString {
        &self.procs
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which limits are in force.
    pub fn applied(&self) -> Applied {
        self.applied
    }

    /// True when `cgroup.kill` exists (Linux 5.14+).
    pub fn has_kill(&self) -> bool {
        self.kill
    }

    /// Every pid in the cgroup and its descendants.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        collect_pids(&self.dir, &mut out, 0);
        out
    }

    /// Ends every process in the cgroup with SIGKILL.
    pub fn kill_all(&self) {
        if self.kill && write(&self.dir, "cgroup.kill", "1") {
            return;
        }
        for pid in self.pids() {
            let _ =
                nix::sys::signal::kill(super::reaper::pid(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// True when the memory limit killed something.
    pub fn oom_killed(&self) -> bool {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }

    /// Removes the (empty) cgroup. The kernel may need a moment after the
    /// last process exits before it allows the removal.
    pub fn remove(&self) {
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        tracing::warn!("could not remove cgroup {}", self.dir.display());
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>, depth: usize) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if depth > 16 {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out, depth + 1);
            }
        }
    }
}

fn write(dir: &Path, file: &str, value: &str) -> bool {
    match std::fs::write(dir.join(file), value) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("cgroup {file}={value}: {e}");
            false
        }
    }
}

/// Enables the controllers the limits need for the runner's children,
/// moving the runner into a leaf first when its cgroup holds processes.
fn enable_controllers(base: &Path, limits: &CgroupLimits, pid: u32) {
    let read = |f: &str| std::fs::read_to_string(base.join(f)).unwrap_or_default();
    let available = read("cgroup.controllers");
    let enabled = read("cgroup.subtree_control");
    let wanted: Vec<&str> = [
        ("memory", limits.memory.is_some()),
        ("cpu", limits.cpus.is_some()),
        ("pids", limits.pids.is_some()),
    ]
    .into_iter()
    .filter(|(name, needed)| {
        *needed
            && available.split_whitespace().any(|c| c == *name)
            && !enabled.split_whitespace().any(|c| c == *name)
    })
    .map(|(name, _)| name)
    .collect();
    if wanted.is_empty() {
        return;
    }
    let line: String = wanted.iter().map(|c| format!("+{c} ")).collect();
    let control = base.join("cgroup.subtree_control");
    // Enabling only threaded controllers (pids, cpu) in a cgroup that holds
    // processes succeeds, but makes it a thread root whose new children
    // refuse processes (clone3 into them fails with EOPNOTSUPP; seen in a
    // systemd unit with Delegate=yes). So a runner leaves its cgroup first,
    // unless that is the hierarchy's real root, which may hold processes
    // and has no cgroup.type (a cgroup namespace's root has one).
    let holds_processes = !read("cgroup.procs").trim().is_empty();
    let real_root = !base.join("cgroup.type").exists();
    let must_leave = holds_processes && !real_root;
    if !must_leave {
        match std::fs::write(&control, line.trim_end()) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                tracing::info!("cannot enable {line}in {}: {e}", base.display());
                return;
            }
        }
    }
    let moved = new_child(base, "delegate-runner", pid)
        .and_then(|leaf| std::fs::write(leaf.join("cgroup.procs"), "0"))
        .and_then(|_| std::fs::write(&control, line.trim_end()));
    if let Err(e) = moved {
        tracing::info!(
            "cannot enable {line}in {} after moving the runner to a leaf: {e}",
            base.display()
        );
    }
}

/// Creates a cgroup of our own under `base`, named `<prefix>-<pid>-<nonce>`.
///
/// Never an existing one: runners in sibling pid namespaces (the local
/// sandbox) share a parent cgroup and often the same pid, and a runner that
/// joined another's cgroup would see it removed, or kill it, at the end.
fn new_child(base: &Path, prefix: &str, pid: u32) -> std::io::Result<PathBuf> {
    use std::hash::{BuildHasher, Hasher};
    let mut last = None;
    for _ in 0..8 {
        // RandomState is seeded from the OS's randomness per instance.
        let nonce = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as u32;
        let dir = base.join(format!("{prefix}-{pid}-{nonce:08x}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runners_with_the_same_pid_get_cgroups_of_their_own() {
        let base = tempfile::tempdir().unwrap();
        let a = new_child(base.path(), "delegate-job", 2).unwrap();
        let b = new_child(base.path(), "delegate-job", 2).unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("delegate-job-2-"), "{name}");
        let missing = base.path().join("gone");
        assert!(new_child(&missing, "delegate-job", 2).is_err());
    }

    #[test]
    fn finds_the_v2_mount_on_hybrid_and_pure_hosts() {
        let hybrid = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        assert_eq!(
            v2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw";
        assert_eq!(v2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(v2_mount("1 2 0:3 / /proc rw - proc proc rw"), None);
        let spaced = "35 24 0:30 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw";
        assert_eq!(v2_mount(spaced), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn reads_the_own_path() {
        let text = "4:memory:/x\n0::/system.slice/delegate-guest.service\n";
        assert_eq!(
            own_v2_path(text).as_deref(),
            Some("/system.slice/delegate-guest.service")
        );
        assert_eq!(own_v2_path("4:memory:/x\n"), None);
    }

    #[test]
    fn cpu_max_is_quota_and_period() {
        assert_eq!(cpu_max(1), "100000 100000");
        assert_eq!(cpu_max(4), "400000 100000");
    }
}
