//! What the `qemu` provider's host side and the guest's init (PID 1 of a
//! micro VM) agree on: console markers the host waits for, and the mount
//! tag of the machine's root.

/// Printed by init on the console once the VM is up and the runner starts;
/// until then a failure is a failed boot.
pub const READY_MARKER: &str = "delegate-init: ready";
/// Printed by init in the host's KVM probe (`delegate.probe`) before it
/// powers off.
pub const PROBE_MARKER: &str = "delegate-init: probe ok";
/// Starts the line `delegate-guest boot` prints once it has its bootstrap:
/// in a disk image booted with `console=ttyS0` (whose init is its own and
/// prints no [`READY_MARKER`]) the host waits for it on the console.
pub const BOOT_MARKER: &str = "delegate-guest: job ";
/// Starts the line init prints before powering off because something failed.
pub const FAILED_MARKER: &str = "delegate-init: failed:";
/// The virtio-9p mount tag of the machine's root file system.
pub const ROOT_TAG: &str = "hostroot";
