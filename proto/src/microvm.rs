//! What the `qemu` provider's host side and the guest's init (PID 1 of a
//! micro VM) agree on: console markers the host waits for, the mount tag
//! of the machine's root, and the port a pooled VM gets its bootstrap on.

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

/// The name of the virtio-serial port a pooled VM's guest waits on for its
/// bootstrap: a VM booted before any job exists has no fw_cfg bootstrap, so
/// the host hands one over this port when a job claims the VM.
pub const POOL_PORT: &str = "org.delegate.bootstrap";
/// Starts the line `delegate-guest boot` prints once it waits on
/// [`POOL_PORT`]: the host pauses the VM when it sees it.
pub const POOL_WAIT_MARKER: &str = "delegate-guest: waiting for a bootstrap on ";
/// The guest's answer on [`POOL_PORT`] once it has read a [`PoolDelivery`],
/// one line.
pub const POOL_ACK: &str = "ok";

/// What the host writes on [`POOL_PORT`], as one line of JSON: the
/// bootstrap, and the host's wall clock, because a VM paused while idle
/// resumes with its clock behind by the time it slept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDelivery {
    /// The host's wall clock when it wrote the line, unix milliseconds.
    pub now_ms: i64,
    /// The job's bootstrap.
    pub bootstrap: crate::Bootstrap,
}

impl PoolDelivery {
    /// One line: JSON and a newline (JSON never holds a raw newline).
    pub fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }

    /// Parses one line and checks the bootstrap in it.
    pub fn from_line(line: &[u8]) -> Result<Self, crate::bootstrap::BootstrapError> {
        let d: PoolDelivery = serde_json::from_slice(line.trim_ascii())?;
        d.bootstrap.check()?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_one_line_and_its_bootstrap_is_checked() {
        let d = PoolDelivery {
            now_ms: 1_700_000_000_000,
            bootstrap: crate::Bootstrap {
                v: crate::bootstrap::BOOTSTRAP_VERSION,
                job_id: "0f4c7e1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b".into(),
                callback_url: "http://10.0.2.100:80".into(),
                token: "a".repeat(64),
                egress_url: None,
            },
        };
        let line = d.to_line().unwrap();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(PoolDelivery::from_line(&line).unwrap(), d);
        let mut bad = d.clone();
        bad.bootstrap.token = "short".into();
        let line = serde_json::to_vec(&bad).unwrap();
        assert!(PoolDelivery::from_line(&line).is_err());
        assert!(PoolDelivery::from_line(b"{\"now_ms\":1}").is_err());
    }
}
