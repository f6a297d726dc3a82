//! Raw system calls for the child between `clone` and `exec` (`spawn`,
//! and the mount view it sets up there), where only async-signal-safe
//! code may run: no allocation, no locks, errno as a number.

use libc::c_long;

/// Raw system call returning `Err(errno)` on failure.
///
/// # Safety
/// The arguments must be valid for the call.
pub(super) unsafe fn sys(
    num: c_long,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
) -> Result<c_long, i32> {
    // SAFETY: forwarded to the caller.
    let r = unsafe { libc::syscall(num, a, b, c, d) };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(r)
    }
}
