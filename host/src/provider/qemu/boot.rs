//! Watching a VM come up: its console says when init is ready, when init
//! failed, or nothing at all before QEMU exits or the boot time runs out.
//! Every failure carries the console's last lines, which name the cause
//! (a missing module, a kernel panic, QEMU refusing an option).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use delegate_proto::microvm::{FAILED_MARKER, READY_MARKER};

use super::state::{VmDir, tail};
use crate::provider::local::process::Recorded;

/// Lines of console quoted in a boot failure.
pub const TAIL_LINES: usize = 15;
const POLL: Duration = Duration::from_millis(100);

/// Why a VM did not come up.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Init said so before powering off.
    #[error("the VM's init failed:\n{console}")]
    InitFailed {
        /// The console's last lines.
        console: String,
    },
    /// QEMU ended before init was ready.
    #[error("QEMU exited before the VM was up: {qemu}\nconsole:\n{console}")]
    Exited {
        /// QEMU's own last words.
        qemu: String,
        /// The console's last lines.
        console: String,
    },
    /// Nothing within the boot timeout.
    #[error("the VM was not up within {} s; console:\n{console}", .after.as_secs())]
    Timeout {
        /// The boot timeout.
        after: Duration,
        /// The console's last lines.
        console: String,
    },
}

/// Reads what was appended to a file since the last call.
struct Follow {
    offset: u64,
    text: String,
}

impl Follow {
    fn poll(&mut self, path: &Path) -> &str {
        if let Ok(mut f) = std::fs::File::open(path)
            && f.seek(SeekFrom::Start(self.offset)).is_ok()
        {
            let mut bytes = Vec::new();
            if let Ok(n) = f.read_to_end(&mut bytes) {
                self.offset += n as u64;
                self.text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        // Keep only what may still hold a marker cut at a read boundary.
        if self.text.len() > 64 * 1024 {
            let cut = self.text.len() - 1024;
            let cut = (cut..self.text.len())
                .find(|i| self.text.is_char_boundary(*i))
                .unwrap_or(0);
            self.text.drain(..cut);
        }
        &self.text
    }
}

/// A disk image's init is its own, which prints no marker: the VM counts
/// as started once QEMU answers on its QMP socket (the guest then calls
/// back on its own, and the job's heartbeat lease covers a guest that
/// never does).
pub async fn wait_started(vm: &VmDir, qemu: Recorded, limit: Duration) -> Result<(), BootError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if !qemu.alive() {
            return Err(BootError::Exited {
                qemu: tail(&vm.qemu_log, 5),
                console: tail(&vm.console, TAIL_LINES),
            });
        }
        if super::qmp::execute(&vm.qmp, "query-status", Duration::from_secs(2))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BootError::Timeout {
                after: limit,
                console: tail(&vm.console, TAIL_LINES),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until init prints [`READY_MARKER`].
pub async fn wait_ready(vm: &VmDir, qemu: Recorded, limit: Duration) -> Result<(), BootError> {
    wait_for(vm, qemu, limit, READY_MARKER).await
}

/// Waits until the console shows `marker`: init's [`READY_MARKER`] in a
/// micro VM, the runner's [`delegate_proto::microvm::BOOT_MARKER`] in a
/// disk image whose console is the serial port.
pub async fn wait_for(
    vm: &VmDir,
    qemu: Recorded,
    limit: Duration,
    marker: &str,
) -> Result<(), BootError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut console = Follow {
        offset: 0,
        text: String::new(),
    };
    loop {
        let text = console.poll(&vm.console);
        if text.contains(marker) {
            return Ok(());
        }
        if text.contains(FAILED_MARKER) {
            return Err(BootError::InitFailed {
                console: tail(&vm.console, TAIL_LINES),
            });
        }
        if !qemu.alive() {
            // A last look: init may have written the marker just before.
            if console.poll(&vm.console).contains(marker) {
                return Ok(());
            }
            return Err(BootError::Exited {
                qemu: tail(&vm.qemu_log, 5),
                console: tail(&vm.console, TAIL_LINES),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BootError::Timeout {
                after: limit,
                console: tail(&vm.console, TAIL_LINES),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
