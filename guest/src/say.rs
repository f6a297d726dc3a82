//! The guest's own lines on stderr and stdout, written so that a full or
//! closed stream never ends the guest: `eprintln!` and `println!` panic when
//! the write fails, and a guest whose stderr is a file on a full file system
//! (the local provider's `guest.log` in the host's data directory) exited
//! 101 in the middle of a job. A line that cannot be written is lost; the
//! job goes on.

use std::fmt::Arguments;
use std::io::Write;

/// Writes one formatted line to stderr, ignoring write errors.
pub fn stderr_line(args: Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Writes formatted text to stderr as it is, ignoring write errors.
pub fn stderr_text(args: Arguments<'_>) {
    let _ = write!(std::io::stderr().lock(), "{args}");
}

/// Writes one formatted line to stdout, ignoring write errors.
pub fn stdout_line(args: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{args}");
    let _ = out.flush();
}

/// `eprintln!` that never panics (see the module doc).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::say::stderr_line(format_args!($($arg)*)) };
}
