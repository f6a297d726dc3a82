//! The agent's own user and mount namespace in which its workspace is at
//! `/workspace` (standalone runs; see `workspace::view`).
//!
//! Done in the agent's child between the user switch and exec, with raw
//! system calls only, so the agent is exec'ed directly: its pid, session,
//! exit status and signals are its own, as without the view. The child
//! unshares a user namespace (its own uid mapped to itself: no privilege
//! gained, none lost) and a mount namespace, builds a root on a tmpfs at
//! `<workspace>/.delegate/root` from bind mounts of every top-level entry
//! of `/` plus the workspace at `/workspace`, and `chroot`s into it.
//! The agent gets no capabilities: exec drops them for its non-root uid.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::raw::sys;

/// A top-level entry of the host's `/` and where it goes in the new root.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A directory, bound recursively: `(source, destination)`.
    Dir(CString, CString),
    /// A symlink, recreated: `(target, destination)`.
    Symlink(CString, CString),
}

/// Everything the child needs, made before the clone.
#[derive(Debug)]
pub(crate) struct MountView {
    root: CString,
    entries: Vec<Entry>,
    workspace: CString,
    workspace_dest: CString,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

fn c(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", p.display()),
        )
    })
}

impl MountView {
    /// The view of `workspace` for an agent running as `uid`/`gid`, its new
    /// root built at `root` (an empty directory).
    pub(crate) fn new(workspace: &Path, root: &Path, uid: u32, gid: u32) -> std::io::Result<Self> {
        let mut entries = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir("/")?.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let name = e.file_name();
            if name == "workspace" {
                continue;
            }
            let src = Path::new("/").join(&name);
            let dest = root.join(&name);
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_symlink() {
                if let Ok(target) = std::fs::read_link(&src) {
                    entries.push(Entry::Symlink(c(&target)?, c(&dest)?));
                }
            } else if kind.is_dir() {
                entries.push(Entry::Dir(c(&src)?, c(&dest)?));
            }
        }
        Ok(MountView {
            root: c(root)?,
            entries,
            workspace: c(workspace)?,
            workspace_dest: c(&root.join("workspace"))?,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        })
    }

    /// In the child: enters the view. Returns the errno of the first
    /// failing call.
    ///
    /// # Safety
    /// Only in a freshly cloned child; makes raw system calls on memory
    /// prepared before the clone.
    pub(crate) unsafe fn enter(&self) -> Result<(), i32> {
        // SAFETY: we are in a freshly cloned child (the caller's contract);
        // every call is a raw system call whose pointers point into `self`,
        // which was prepared before the clone and outlives the calls.
        unsafe {
            // After a user switch the process is not dumpable, and its
            // /proc/self files belong to root; the maps must be written.
            sys(libc::SYS_prctl, libc::PR_SET_DUMPABLE as usize, 1, 0, 0)?;
            sys(
                libc::SYS_unshare,
                (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as usize,
                0,
                0,
                0,
            )?;
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", &self.uid_map)?;
            write_file(c"/proc/self/gid_map", &self.gid_map)?;
            mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
            mount(
                Some(c"tmpfs"),
                &self.root,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(c"mode=0755"),
            )?;
            for entry in &self.entries {
                match entry {
                    Entry::Dir(src, dest) => {
                        sys(libc::SYS_mkdir, dest.as_ptr() as usize, 0o755, 0, 0)?;
                        mount(Some(src), dest, None, libc::MS_BIND | libc::MS_REC, None)?;
                    }
                    Entry::Symlink(target, dest) => {
                        sys(
                            libc::SYS_symlinkat,
                            target.as_ptr() as usize,
                            libc::AT_FDCWD as usize,
                            dest.as_ptr() as usize,
                            0,
                        )?;
                    }
                }
            }
            sys(
                libc::SYS_mkdir,
                self.workspace_dest.as_ptr() as usize,
                0o755,
                0,
                0,
            )?;
            mount(
                Some(&self.workspace),
                &self.workspace_dest,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?;
            sys(libc::SYS_chroot, self.root.as_ptr() as usize, 0, 0, 0)?;
            sys(libc::SYS_chdir, c"/workspace".as_ptr() as usize, 0, 0, 0)?;
        }
        Ok(())
    }
}

/// # Safety
/// Raw system calls; `path` and `bytes` must stay valid.
unsafe fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> Result<(), i32> {
    // SAFETY: forwarded to the caller.
    unsafe {
        let fd = sys(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            (libc::O_WRONLY | libc::O_CLOEXEC) as usize,
            0,
        )?;
        let wrote = sys(
            libc::SYS_write,
            fd as usize,
            bytes.as_ptr() as usize,
            bytes.len(),
            0,
        );
        let _ = sys(libc::SYS_close, fd as usize, 0, 0, 0);
        wrote.map(|_| ())
    }
}

/// # Safety
/// Raw `mount(2)`; the strings must stay valid.
unsafe fn mount(
    src: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    data: Option<&std::ffi::CStr>,
) -> Result<(), i32> {
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(0, |s| s.as_ptr() as usize);
    // SAFETY: forwarded to the caller; mount takes five arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount,
            ptr(src),
            target.as_ptr() as usize,
            ptr(fstype),
            flags as usize,
            ptr(data),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_every_top_level_entry_but_workspace() {
        let v = MountView::new(
            Path::new("/tmp/ws"),
            Path::new("/tmp/ws/.delegate/root"),
            7,
            8,
        )
        .unwrap();
        assert_eq!(v.uid_map, b"7 7 1\n");
        assert_eq!(v.gid_map, b"8 8 1\n");
        assert_eq!(
            v.workspace_dest.as_bytes(),
            b"/tmp/ws/.delegate/root/workspace"
        );
        let dests: Vec<&[u8]> = v
            .entries
            .iter()
            .map(|e| match e {
                Entry::Dir(_, d) | Entry::Symlink(_, d) => d.as_bytes(),
            })
            .collect();
        assert!(dests.contains(&b"/tmp/ws/.delegate/root/usr".as_slice()));
        assert!(!dests.contains(&b"/tmp/ws/.delegate/root/workspace".as_slice()));
    }
}
