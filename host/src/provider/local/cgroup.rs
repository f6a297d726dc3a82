//! A cgroup v2 per sandbox, where the host may make one: a child of the
//! host's own v2 cgroup, `delegate-<sandbox name>`.
//!
//! `bwrap` is moved into it before exec, so the whole sandbox is inside
//! and cannot leave it (its cgroup namespace starts there). The job's
//! limits are written here, in files the job cannot change; the directory
//! itself (and its `cgroup.procs` and `cgroup.subtree_control`) is handed
//! to the job uid and bound at `/sys/fs/cgroup` in the sandbox, so the
//! guest inside makes its own job cgroup below it as in a VM. Destroying
//! ends everything in it with `cgroup.kill` where the kernel has it.
//!
//! What holds depends on the host: cgroup v2 with the `memory`, `cpu` and
//! `pids` controllers enabled for the host's cgroup (a systemd unit with
//! `Delegate=yes`) gives all three; a hybrid host's controller-less v2
//! tree gives `cgroup.kill` only; without a writable v2 tree (an ordinary
//! user's host) there is no sandbox cgroup, and the guest's rlimits (open
//! files, file size from `resources.disk`) are what holds.

use std::path::{Path, PathBuf};

/// CPU period for `cpu.max`, in microseconds.
const CPU_PERIOD: u64 = 100_000;
/// `pids.max` of a sandbox: the guest's 4096 for its job, and room for
/// `bwrap` and the guest.
pub const SANDBOX_PIDS: u64 = 4096 + 64;

/// The limits a sandbox asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max` in bytes.
    pub memory: Option<u64>,
    /// Whole CPUs for `cpu.max`.
    pub cpus: Option<u32>,
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`
/// (the same reading as the guest's; the two crates share no I/O code).
pub fn v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2" && !mount_point.contains('\\')).then(|| PathBuf::from(mount_point))
    })
}

/// This process's v2 cgroup, from `/proc/self/cgroup` (`0::/path`).
pub fn own_v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| !p.ends_with(" (deleted)"))
}

/// Where sandbox cgroups go: the host's own v2 cgroup, if it is writable.
pub fn parent() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = v2_mount(&mountinfo)?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let dir = mount.join(own_v2_path(&own)?.trim_start_matches('/'));
    nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK)
        .ok()
        .map(|()| dir)
}

/// A sandbox's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCgroup {
    /// Its directory.
    pub dir: PathBuf,
}

/// Which limits hold, for the log and the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The files the kernel accepted (`memory.max`, ...).
    pub files: Vec<&'static str>,
    /// `cgroup.kill` exists.
    pub kill: bool,
}

impl Applied {
    /// A sentence: what holds.
    pub fn describe(&self) -> String {
        let mut parts: Vec<&str> = self.files.clone();
        if self.kill {
            parts.push("cgroup.kill");
        }
        if parts.is_empty() {
            "a sandbox cgroup without limits".into()
        } else {
            format!("sandbox cgroup with {}", parts.join(", "))
        }
    }
}

impl SandboxCgroup {
    /// The cgroup of sandbox `name` under `parent`.
    pub fn at(parent: &Path, name: &str) -> SandboxCgroup {
        SandboxCgroup {
            dir: parent.join(format!("delegate-{name}")),
        }
    }

    /// Makes it, writes the limits the kernel takes, and hands the
    /// directory to `owner` (the job uid) for the guest's own job cgroup.
    pub fn create(&self, limits: Limits, owner: Option<(u32, u32)>) -> std::io::Result<Applied> {
        std::fs::create_dir(&self.dir)?;
        let mut applied = Applied {
            kill: self.dir.join("cgroup.kill").exists(),
            ..Applied::default()
        };
        let mut set = |file: &'static str, value: String| {
            if std::fs::write(self.dir.join(file), value).is_ok() {
                applied.files.push(file);
            }
        };
        if let Some(bytes) = limits.memory {
            set("memory.max", bytes.to_string());
            let _ = std::fs::write(self.dir.join("memory.swap.max"), "0");
        }
        if let Some(cpus) = limits.cpus {
            set(
                "cpu.max",
                format!("{} {CPU_PERIOD}", u64::from(cpus) * CPU_PERIOD),
            );
        }
        set("pids.max", SANDBOX_PIDS.to_string());
        if let Some((uid, gid)) = owner {
            for p in [
                self.dir.clone(),
                self.dir.join("cgroup.procs"),
                self.dir.join("cgroup.subtree_control"),
                self.dir.join("cgroup.threads"),
            ] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
            }
        }
        Ok(applied)
    }

    /// `cgroup.procs`, which the sandbox's first process joins.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Kills everything in it (where `cgroup.kill` exists).
    pub fn kill(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
    }

    /// Removes it and what the guest made below it (once empty).
    pub fn remove(&self) -> std::io::Result<()> {
        remove_tree(&self.dir)
    }
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&e.path())?;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_v2_mount_and_own_path() {
        let mi = "29 23 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                  30 23 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(v2_mount(mi), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(v2_mount("30 23 0:27 / /x rw - cgroup cgroup rw\n"), None);
        assert_eq!(
            own_v2_path("4:memory:/a\n0::/user.slice/x\n"),
            Some("/user.slice/x")
        );
        assert_eq!(own_v2_path("0::/gone (deleted)\n"), None);
    }

    #[test]
    fn says_what_holds() {
        let a = Applied {
            files: vec!["memory.max", "pids.max"],
            kill: true,
        };
        assert_eq!(
            a.describe(),
            "sandbox cgroup with memory.max, pids.max, cgroup.kill"
        );
        assert_eq!(
            SandboxCgroup::at(Path::new("/c"), "sb-1").dir,
            Path::new("/c/delegate-sb-1")
        );
    }
}
