//! A pooled VM's bootstrap: the `qemu` provider boots pool VMs before any
//! job exists, so they have no fw_cfg bootstrap. Instead they have a
//! virtio-serial port named [`POOL_PORT`], whose other end is a 0600 Unix
//! socket in the VM's directory on the host. `delegate-guest boot` says on
//! the console that it waits ([`POOL_WAIT_MARKER`]; the host then pauses
//! the VM), and reads one [`PoolDelivery`] line when a job claims the VM,
//! answers [`POOL_ACK`] and sets the clock from it: the VM slept while
//! paused, and its clock with it.
//!
//! A virtio-serial read returns 0 while no host end is connected, so the
//! port is read in a short sleep loop; a line cut by a host that went away
//! is discarded, never joined to the next host's.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use delegate_proto::Bootstrap;
use delegate_proto::microvm::{POOL_ACK, POOL_PORT, POOL_WAIT_MARKER, PoolDelivery};

use super::CallbackError;
use super::bootstrap::BootstrapSource;

/// No delivery line is anywhere near this large.
const MAX_LINE: usize = 64 * 1024;
/// How often an unconnected port is read again.
const POLL: Duration = Duration::from_millis(10);
/// Where sysfs lists virtio-serial ports.
const SYS_PORTS: &str = "/sys/class/virtio-ports";

/// The pool port of this VM, if it has one.
pub fn find() -> Option<PathBuf> {
    find_port(Path::new(SYS_PORTS), Path::new("/dev"))
}

/// The device of the virtio-serial port named [`POOL_PORT`]: each port is
/// `<sys_ports>/<dev name>/name` in sysfs and `<dev>/<dev name>` in devtmpfs
/// (no udev in a micro VM for the `/dev/virtio-ports/` links).
pub fn find_port(sys_ports: &Path, dev: &Path) -> Option<PathBuf> {
    std::fs::read_dir(sys_ports)
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim() == POOL_PORT)
        })
        .map(|e| dev.join(e.file_name()))
}

/// Announces the wait on the console, then blocks (on a blocking thread)
/// until the host delivers; sets the clock from the delivery.
pub async fn wait(port: PathBuf) -> Result<(Bootstrap, BootstrapSource), CallbackError> {
    crate::say!("{POOL_WAIT_MARKER}{}", port.display());
    let p = port.clone();
    let delivery = tokio::task::spawn_blocking(move || receive(&p))
        .await
        .map_err(|e| CallbackError::Io {
            op: "waiting on the pool port",
            path: port.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
    if let Err(e) = set_clock(delivery.now_ms) {
        crate::say!("delegate-guest: cannot set the clock from the host's: {e}");
    }
    Ok((delivery.bootstrap, BootstrapSource::PoolPort(port)))
}

/// Reads the first whole line from the port, answers it and parses it.
pub fn receive(port: &Path) -> Result<PoolDelivery, CallbackError> {
    let io = |op: &'static str| {
        move |source| CallbackError::Io {
            op,
            path: port.to_path_buf(),
            source,
        }
    };
    let mut dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(port)
        .map_err(io("opening the pool port"))?;
    let line = read_line(&mut dev).map_err(io("reading the pool port"))?;
    let delivery = PoolDelivery::from_line(&line).map_err(|error| CallbackError::BadBootstrap {
        source_name: BootstrapSource::PoolPort(port.to_path_buf()).to_string(),
        error,
    })?;
    // The host waits for this to know the guest has it; a host that went
    // away meanwhile learns nothing more from a failed write.
    let _ = dev
        .write_all(format!("{POOL_ACK}\n").as_bytes())
        .and_then(|()| dev.flush());
    Ok(delivery)
}

/// One line from `port`, without its newline. A read of 0 bytes means no
/// host end is connected: wait and read again, dropping a partial line.
fn read_line(port: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match port.read(&mut buf) {
            Ok(0) => {
                line.clear();
                std::thread::sleep(POLL);
            }
            Ok(n) => {
                line.extend_from_slice(&buf[..n]);
                if let Some(end) = line.iter().position(|b| *b == b'\n') {
                    line.truncate(end);
                    return Ok(line);
                }
                if line.len() > MAX_LINE {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("no newline in {MAX_LINE} bytes; not a delivery"),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sets the wall clock to `now_ms` (the guest runs as root in its VM).
fn set_clock(now_ms: i64) -> std::io::Result<()> {
    let ms = u64::try_from(now_ms)
        .map_err(|_| std::io::Error::other(format!("{now_ms} ms is before 1970")))?;
    let ts = nix::sys::time::TimeSpec::from(Duration::from_millis(ms));
    // SAFETY: `ts` is a valid timespec that outlives the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, ts.as_ref()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port as the kernel shows it: reads of 0 until a host connects,
    /// then what it wrote, in pieces.
    struct Port(Vec<Vec<u8>>);

    impl std::io::Read for Port {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let next = self.0.remove(0);
            buf[..next.len()].copy_from_slice(&next);
            Ok(next.len())
        }
    }

    #[test]
    fn a_line_is_read_across_pieces_and_a_cut_one_is_dropped() {
        let mut port = Port(vec![
            vec![],
            b"{\"cut".to_vec(),
            vec![],
            b"{\"whole\":".to_vec(),
            b"1}\nrest".to_vec(),
        ]);
        assert_eq!(read_line(&mut port).unwrap(), b"{\"whole\":1}");
        let mut endless = std::iter::repeat_n(vec![b'x'; 4096], 20).collect::<Vec<_>>();
        endless.push(b"\n".to_vec());
        assert!(read_line(&mut Port(endless)).is_err());
    }

    #[test]
    fn the_port_is_found_by_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        for (dev, name) in [("vport0p0", "other"), ("vport1p1", POOL_PORT)] {
            std::fs::create_dir_all(sys.join(dev)).unwrap();
            std::fs::write(sys.join(dev).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_port(&sys, Path::new("/dev")),
            Some(PathBuf::from("/dev/vport1p1"))
        );
        assert_eq!(find_port(&dir.path().join("none"), Path::new("/dev")), None);
    }
}
