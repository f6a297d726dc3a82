//! Whether a VM that lives as a process on this machine has ended: the
//! local sandbox's `bwrap` and the qemu provider's QEMU, each recorded in
//! its directory's pid file with its start time (so a recycled pid never
//! passes for the VM).

use std::path::Path;
use std::time::Duration;

use super::local::process::Recorded;

/// How often the engine asks a process-backed provider whether a job's VM
/// is gone: a look at `/proc`, cheap enough for every live job each second.
pub(crate) const PROCESS_GONE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether the process recorded in `pid_file` (in the VM directory `dir`)
/// has ended. A missing directory means the VM was taken apart; a missing
/// or unreadable pid file inside an existing directory tells nothing
/// (`false`), since the provider writes it just after the start.
pub(crate) fn process_ended(dir: &Path, pid_file: &Path) -> bool {
    if !dir.exists() {
        return true;
    }
    Recorded::read(pid_file).is_some_and(|rec| !rec.alive())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_not_gone_and_a_dead_one_or_a_missing_directory_is() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        assert!(!process_ended(dir.path(), &pid_file), "no pid file yet");
        Recorded::of(std::process::id())
            .unwrap()
            .write(&pid_file)
            .unwrap();
        assert!(!process_ended(dir.path(), &pid_file));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let rec = Recorded::of(child.id());
        child.wait().unwrap();
        if let Some(rec) = rec {
            rec.write(&pid_file).unwrap();
            assert!(process_ended(dir.path(), &pid_file), "it exited");
        }
        assert!(process_ended(&dir.path().join("gone"), &pid_file));
    }
}
