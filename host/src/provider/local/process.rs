//! Processes of a sandbox as the host sees them: pid files that also hold
//! the process's start time (so a recycled pid is never killed), liveness,
//! and killing a whole process group.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::provider::ProviderError;

/// The start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` if there is no such process or it is a
/// zombie (dead, waiting to be reaped).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and ')': split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); start time is field 22.
    fields.nth(18)?.parse().ok()
}

/// A process recorded in a pid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Its pid.
    pub pid: u32,
    /// Its start time when recorded.
    pub start: u64,
}

impl Recorded {
    /// Records `pid` as it is now.
    pub fn of(pid: u32) -> Option<Recorded> {
        start_time(pid).map(|start| Recorded { pid, start })
    }

    /// Reads a pid file written by [`Recorded::write`].
    pub fn read(path: &Path) -> Option<Recorded> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut parts = text.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        Some(Recorded { pid, start })
    }

    /// Writes the pid file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, format!("{} {}\n", self.pid, self.start))
    }

    /// True while the same process (not a recycled pid) is alive.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// Sends SIGTERM to the process, if it is still the recorded one.
    pub fn terminate(&self) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        }
    }

    /// SIGKILLs the process and its process group (it leads one), if it
    /// is still the recorded process.
    pub fn kill_group(&self) {
        if !self.alive() {
            return;
        }
        let pid = Pid::from_raw(self.pid as i32);
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// Waits, up to `limit`, for a recorded process to be gone (the local and
/// qemu providers' destroy).
pub(crate) async fn wait_gone(rec: &Recorded, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while rec.alive() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a new file readable only by the host's user (bootstraps, job ids,
/// the sandbox's passwd): never an existing one, which could be a planted
/// link.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    use std::io::Write;
    let fail = |what: &str, e: std::io::Error| ProviderError::Other {
        context: format!("{what} {}", path.display()),
        source: Box::new(e),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| fail("creating", e))?;
    f.write_all(bytes).map_err(|e| fail("writing", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_start_time_and_round_trips() {
        let me = Recorded::of(std::process::id()).unwrap();
        assert!(me.alive());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pid");
        me.write(&f).unwrap();
        assert_eq!(Recorded::read(&f), Some(me));
        let stale = Recorded {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!stale.alive(), "a different start time is another process");
        assert_eq!(start_time(u32::MAX / 2), None);
    }
}
