//! One directory per VM under `<data dir>/qemu/vms/<name>/` (0700): what a
//! restarted host needs to find, identify and destroy its VMs.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The files of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDir {
    /// The directory.
    pub dir: PathBuf,
    /// The bootstrap (0600), read by QEMU for fw_cfg at start and deleted
    /// once the VM is up.
    pub bootstrap: PathBuf,
    /// The serial console.
    pub console: PathBuf,
    /// QEMU's own stdout and stderr.
    pub qemu_log: PathBuf,
    /// The QMP socket.
    pub qmp: PathBuf,
    /// `<pid> <start time>` of QEMU.
    pub pid_file: PathBuf,
    /// The job id.
    pub job_file: PathBuf,
    /// The job's deadline, unix ms.
    pub deadline_file: PathBuf,
    /// The `/workspace` disk image (micro VM).
    pub workspace_disk: PathBuf,
    /// The copy-on-write overlay of the job's disk image (disk-image mode).
    pub root_disk: PathBuf,
    /// Marks a pool VM (its class and forwards, JSON): a VM with it is
    /// listed by `list_idle` and never by `list_owned`.
    pub pool_file: PathBuf,
    /// A pool VM's bootstrap socket: QEMU's end of its virtio-serial port.
    pub pool_socket: PathBuf,
}

impl VmDir {
    /// The files of VM `name` under `root` (`<data dir>/qemu/vms`).
    pub fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        VmDir {
            bootstrap: dir.join("bootstrap.json"),
            console: dir.join("console.log"),
            qemu_log: dir.join("qemu.log"),
            qmp: dir.join("qmp.sock"),
            pid_file: dir.join("pid"),
            job_file: dir.join("job"),
            deadline_file: dir.join("deadline"),
            workspace_disk: dir.join("workspace.img"),
            root_disk: dir.join("root.qcow2"),
            pool_file: dir.join("pool.json"),
            pool_socket: dir.join("pool.sock"),
            dir,
        }
    }

    /// The job id the VM serves, if recorded and well-formed.
    pub fn job_id(&self) -> Option<String> {
        std::fs::read_to_string(&self.job_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| delegate_proto::api::is_valid_job_id(s))
    }

    /// Whether it is a pool VM.
    pub fn is_pool(&self) -> bool {
        self.pool_file.exists()
    }

    /// The recorded deadline.
    pub fn deadline_ms(&self) -> Option<i64> {
        std::fs::read_to_string(&self.deadline_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

/// VM names: `vm-` and 16 hex digits. Anything else is refused before it
/// is joined to a path.
pub fn is_vm_name(name: &str) -> bool {
    name.len() == 19
        && name.starts_with("vm-")
        && name[3..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh VM name.
pub fn new_name() -> String {
    format!("vm-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// The last `lines` lines of a console log (at most its last 16 KiB), for
/// errors: the kernel's and init's last words.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_form_paths_and_tails_are_the_last_lines() {
        assert!(is_vm_name(&new_name()));
        for bad in [
            "",
            "vm-",
            "../x",
            "vm-0123456789abcdeF",
            "sb-0123456789abcdef",
        ] {
            assert!(!is_vm_name(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("console.log");
        std::fs::write(&f, "a\r\nb\n\nc\r\nd\n").unwrap();
        assert_eq!(tail(&f, 2), "c\nd");
        assert_eq!(tail(&f, 10), "a\nb\nc\nd");
        assert_eq!(tail(&dir.path().join("none"), 3), "");
    }
}
