//! Loading the kernel modules the host bundled into the initramfs, in the
//! order the host resolved from `modules.dep` (dependencies first), with
//! `finit_module(2)`: no modprobe in the initramfs, and the host already
//! did the dependency work.

use std::os::fd::AsRawFd;
use std::path::Path;

/// The list the host writes: one path (relative to `/`) per line.
pub const LOAD_LIST: &str = "/modules.load";

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses `.ko.xz`/`.ko.zst`
/// itself (Linux 6.1+ built with module decompression).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Loads every module of the list; a module already present (built in, or
/// loaded as someone's dependency) is fine.
pub fn load_all(list: &Path) -> Result<usize, String> {
    let text =
        std::fs::read_to_string(list).map_err(|e| format!("reading {}: {e}", list.display()))?;
    let mut loaded = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new("/").join(line);
        if load(&path)? {
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// Loads one module; `false` when it was already loaded.
fn load(path: &Path) -> Result<bool, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    let params = c"";
    // SAFETY: finit_module reads the open file and the NUL-terminated
    // parameter string; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(false);
    }
    Err(format!("loading {}: {err}", path.display()))
}
