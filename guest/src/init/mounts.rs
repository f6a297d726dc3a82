//! The VM's file systems: the machine's root read-only over virtio-9p
//! under a writable overlay in memory, then fresh kernel file systems,
//! `/tmp`, `/run` and `/workspace` inside it.

use std::path::Path;

use nix::mount::{MsFlags, mount};

use delegate_proto::microvm::ROOT_TAG;

use super::InitConfig;
/// Where the read-only lower layer is mounted in the initramfs.
const LOWER: &str = "/lower";
/// The tmpfs holding the overlay's upper and work directories.
const RW: &str = "/rw";
/// Where the job's root is assembled.
pub const NEW_ROOT: &str = "/newroot";

fn mnt(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(Some(source), target, Some(fstype), flags, data).map_err(|e| {
        format!(
            "mounting {fstype} on {target} ({}): {e}",
            data.unwrap_or("")
        )
    })
}

fn mkdir(path: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("creating {path}: {e}")),
    }
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// `/proc`, `/sys` and `/dev` of the initramfs (module loading and fw_cfg
/// need them).
pub fn early() -> Result<(), String> {
    for dir in ["/proc", "/sys", "/dev"] {
        mkdir(dir, 0o755)?;
    }
    mnt("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    mnt("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None)?;
    mnt(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
}

/// The machine's root, read-only, with a tmpfs overlay, at [`NEW_ROOT`].
pub fn root() -> Result<(), String> {
    for dir in [LOWER, RW, NEW_ROOT] {
        mkdir(dir, 0o755)?;
    }
    // cache=loose: the lower layer is read-only for the VM's life, so the
    // guest may cache it; under TCG every round trip to QEMU is slow.
    mnt(
        ROOT_TAG,
        LOWER,
        "9p",
        MsFlags::MS_RDONLY,
        Some("trans=virtio,version=9p2000.L,msize=262144,cache=loose"),
    )?;
    mnt("tmpfs", RW, "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    mkdir(&format!("{RW}/upper"), 0o755)?;
    mkdir(&format!("{RW}/work"), 0o755)?;
    // The host exports only its root file system (QEMU's multidevs=forbid):
    // its mount points, /proc and /sys among them, cannot even be looked
    // up (ENODEV). A skeleton layer above it holds opaque, empty
    // directories where this VM mounts its own, so the overlay never looks
    // below them.
    let skel = format!("{RW}/skel");
    mkdir(&skel, 0o755)?;
    for (dir, _) in SCRATCH_DIRS {
        let path = format!("{skel}{dir}");
        mkdir(&path, 0o755)?;
        opaque(&path)?;
    }
    mnt(
        "overlay",
        NEW_ROOT,
        "overlay",
        MsFlags::empty(),
        Some(&format!(
            "lowerdir={skel}:{LOWER},upperdir={RW}/upper,workdir={RW}/work"
        )),
    )
}

/// Directories the VM mounts its own file systems on, with their modes.
const SCRATCH_DIRS: [(&str, u32); 6] = [
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/dev", 0o755),
    ("/tmp", 0o1777),
    ("/run", 0o755),
    ("/workspace", 0o755),
];

/// Marks a directory of an overlay layer opaque: the layers below it are
/// not consulted for its contents.
fn opaque(path: &str) -> Result<(), String> {
    let c_path = std::ffi::CString::new(path).map_err(|_| format!("{path}: NUL in path"))?;
    // SAFETY: NUL-terminated name and path; the value is a 1-byte buffer.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    if rc != 0 {
        return Err(format!(
            "marking {path} opaque: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Kernel file systems and private scratch space inside the new root, and
/// empty directories over the host paths to hide.
pub fn inside(cfg: &InitConfig) -> Result<(), String> {
    let at = |p: &str| format!("{NEW_ROOT}{p}");
    for (dir, mode) in SCRATCH_DIRS {
        mkdir(&at(dir), mode)?;
    }
    mnt("proc", &at("/proc"), "proc", NOSUID_NODEV_NOEXEC, None)?;
    mnt("sysfs", &at("/sys"), "sysfs", NOSUID_NODEV_NOEXEC, None)?;
    // The runner puts the job in a cgroup of its own (memory, CPU and pids
    // limits, and one kill for the whole tree) when cgroup2 is mounted.
    mnt(
        "cgroup2",
        &at("/sys/fs/cgroup"),
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        None,
    )?;
    mnt(
        "devtmpfs",
        &at("/dev"),
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mkdir(&at("/dev/pts"), 0o755)?;
    mkdir(&at("/dev/shm"), 0o1777)?;
    mnt(
        "devpts",
        &at("/dev/pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mnt(
        "tmpfs",
        &at("/dev/shm"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mnt(
        "tmpfs",
        &at("/tmp"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mnt(
        "tmpfs",
        &at("/run"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    if cfg.workspace_disk {
        workspace_disk(&at("/workspace"))?;
    } else {
        let ws = match cfg.workspace_size {
            Some(n) => format!("mode=0755,size={n}"),
            None => "mode=0755".to_string(),
        };
        mnt(
            "tmpfs",
            &at("/workspace"),
            "tmpfs",
            MsFlags::MS_NODEV,
            Some(&ws),
        )?;
    }
    for path in &cfg.hide {
        let target = at(path);
        // A path that is not there has nothing to hide.
        if Path::new(&target).is_dir() {
            mnt(
                "tmpfs",
                &target,
                "tmpfs",
                MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
                Some("mode=0700,size=4k"),
            )?;
        }
    }
    Ok(())
}

/// The workspace disk the host formatted: the VM's first virtio disk.
const WORKSPACE_DISK: &str = "/dev/vda";

/// Mounts the workspace disk at `target`, once its device node is there
/// (virtio-blk registers the disk while its module loads, but give udev-less
/// devtmpfs a moment).
fn workspace_disk(target: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !Path::new(WORKSPACE_DISK).exists() {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{WORKSPACE_DISK} did not appear (virtio_blk loaded?)"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    mount(
        Some(WORKSPACE_DISK),
        target,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| format!("mounting {WORKSPACE_DISK} (ext4) on {target}: {e}"))?;
    // mkfs leaves lost+found; a job's workspace starts empty.
    let _ = std::fs::remove_dir(format!("{target}/lost+found"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {target}: {e}"))
}

/// Makes [`NEW_ROOT`] the root of this process (what `switch_root` does:
/// the initramfs cannot be pivoted away, so the new root is moved over `/`
/// and entered with chroot).
pub fn enter() -> Result<(), String> {
    std::env::set_current_dir(NEW_ROOT).map_err(|e| format!("entering {NEW_ROOT}: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("moving {NEW_ROOT} over /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}
