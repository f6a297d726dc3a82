//! Warm pools on qemu: micro VMs booted before any job exists, paused,
//! and handed a bootstrap when a job claims one.
//!
//! A pool VM is a job's micro VM without the fw_cfg bootstrap: its
//! kernel command line, workspace disk and network are the class's, and
//! nothing on them belongs to a job. Instead it has a virtio-serial port
//! ([`POOL_PORT`]) whose host end is `pool.sock` in the VM's 0700
//! directory. Its guest says on the console that it waits there
//! ([`POOL_WAIT_MARKER`]), and the VM is paused (QMP `stop`): an idle VM
//! keeps its memory but burns no CPU. A claim resumes it (`cont`), writes
//! one [`PoolDelivery`] line (the bootstrap and the host's clock, since
//! the guest's clock stood still while paused) and waits for the guest's
//! [`POOL_ACK`].
//!
//! `pool.json` in the directory marks a pool VM (its class, when it was
//! made, and where its forwards lead); the directory is made whole under a
//! staging name and renamed, so no listing sees a VM without its mark.
//! `list_owned` skips marked VMs and `list_idle` lists only them, so a VM
//! is never both. Its forwards to the callback API and the gateway are
//! fixed when QEMU starts, so a bootstrap for another callback address is
//! refused (the job then starts cold).
//!
//! The template is [`MICRO_TEMPLATE`], and its version names what a VM
//! boots: a digest of the initramfs (the guest binary and modules), the
//! accelerator and the hidden paths, and the kernel image's size and
//! modification time, so a pool VM booted from anything older is replaced.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::time::Duration;

use delegate_proto::Bootstrap;
use delegate_proto::microvm::{POOL_ACK, POOL_PORT, POOL_WAIT_MARKER, PoolDelivery};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::state::{self, VmDir, is_vm_name};
use super::{NAME, QemuProvider, boot, forward_target, guest_bootstrap, guest_egress, other, qmp};
use crate::clock::now_ms;
use crate::provider::local::process::write_private;
use crate::provider::{IdleRequest, IdleVm, ProviderError, VmRef};

/// The template name of micro VMs, in `DELEGATE_POOL` classes
/// (`micro:1c1g4g=2`) and as a job's `vmTemplate`.
pub const MICRO_TEMPLATE: &str = "micro";
/// How long QMP `stop` and `cont` may take.
const QMP_WAIT: Duration = Duration::from_secs(5);
/// How long a resumed guest may take to answer a delivery (under TCG on a
/// loaded machine, well under a second is usual).
const ACK_WAIT: Duration = Duration::from_secs(30);

/// What `pool.json` says about a pool VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PoolMark {
    /// The class (`micro:1c1g4g`).
    class: String,
    /// When its directory was made, unix ms.
    created_ms: i64,
    /// `HOST:PORT` its callback forward's relay connects to.
    callback: String,
    /// `HOST:PORT` of its forward to the egress gateway, if any.
    egress: Option<String>,
}

impl PoolMark {
    fn read(dir: &VmDir) -> Option<PoolMark> {
        let bytes = std::fs::read(&dir.pool_file).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether the VM's forwards, fixed when it booted, lead where a job's
    /// VM would lead now (`HOST:PORT`s): a forward to an old port may reach
    /// whatever listens there since.
    fn check_forwards(&self, callback: &str, egress: Option<&str>) -> Result<(), String> {
        if self.callback != callback {
            return Err(format!(
                "it forwards to the callback API at {}, the job's is at {callback}",
                self.callback
            ));
        }
        if self.egress.as_deref() != egress {
            return Err(format!(
                "it forwards to the egress gateway at {}, the job's is at {}",
                self.egress.as_deref().unwrap_or("nothing"),
                egress.unwrap_or("nothing")
            ));
        }
        Ok(())
    }
}

fn refuse(message: String) -> ProviderError {
    ProviderError::Provision {
        message,
        retryable: false,
    }
}

/// What the micro VMs of a provider boot, apart from the kernel image:
/// the initramfs's digest, the accelerator and the hidden paths.
pub(super) fn boot_digest(
    initramfs: &std::path::Path,
    accel: &str,
    hide: &[PathBuf],
) -> Result<String, ProviderError> {
    let bytes = std::fs::read(initramfs)
        .map_err(|e| other(format!("reading {}", initramfs.display()), e))?;
    let mut h = Sha256::new();
    h.update(&bytes);
    h.update(accel.as_bytes());
    for p in hide {
        h.update([0]);
        h.update(p.as_os_str().as_encoded_bytes());
    }
    Ok(h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl QemuProvider {
    /// Boots a pool micro VM until its guest waits on its port, then
    /// pauses it.
    pub(super) async fn prepare_idle_vm(
        &self,
        req: &IdleRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError> {
        if req.template != MICRO_TEMPLATE {
            return Err(refuse(format!(
                "the qemu provider pools micro VMs only (template {MICRO_TEMPLATE}), not {:?}",
                req.template
            )));
        }
        let (callback, _) = forward_target(&req.callback_url)
            .map_err(|why| refuse(format!("callback URL {}: {why}", req.callback_url)))?;
        let egress = match &req.egress_url {
            Some(url) => Some(
                forward_target(url)
                    .map_err(|why| refuse(format!("egress gateway URL {url}: {why}")))?
                    .0,
            ),
            None => None,
        };
        let mark = PoolMark {
            class: req.class.clone(),
            created_ms: now_ms(),
            callback: callback.clone(),
            egress: egress.clone(),
        };
        let json = serde_json::to_vec(&mark).map_err(|e| other("encoding the pool mark", e))?;
        let name = state::new_name();
        let vm_dir = self.create_vm_dir(&name, |d| write_private(&d.pool_file, &json))?;
        let vm = VmRef {
            provider: NAME.into(),
            id: name,
            node: None,
        };
        // From here on there is something to destroy.
        on_created(vm.clone());
        let disk = self.workspace_disk(&vm_dir, req.size.disk_bytes).await?;
        let spec = super::argv::VmSpec {
            bootstrap: None,
            pool_port: Some(vm_dir.pool_socket.clone()),
            ..self.spec(&vm_dir, req.size, callback, egress, disk)
        };
        let rec = self.launch(&vm_dir, &spec, &req.pool_id)?;
        tracing::info!(pool_id = %req.pool_id, vm = %vm.id, class = %req.class, "pool VM starting");
        boot::wait_for(&vm_dir, rec, self.settings.boot_timeout, POOL_WAIT_MARKER)
            .await
            .map_err(|e| refuse(e.to_string()))?;
        qmp::execute(&vm_dir.qmp, "stop", QMP_WAIT)
            .await
            .map_err(|e| refuse(format!("pausing the idle VM: {e}")))?;
        Ok(vm)
    }

    /// Resumes a pool VM and hands its guest the bootstrap.
    pub(super) async fn deliver_to(
        &self,
        vm: &VmRef,
        bootstrap: &Bootstrap,
        egress_url: Option<&str>,
    ) -> Result<(), ProviderError> {
        if !is_vm_name(&vm.id) {
            return Err(refuse(format!("{:?} is not a qemu VM name", vm.id)));
        }
        let dir = self.vm_dir(&vm.id);
        let mark = PoolMark::read(&dir)
            .ok_or_else(|| refuse(format!("VM {} is not a pool VM of this host", vm.id)))?;
        // The bootstrap as a cold VM's guest would get it, and the
        // forwards that VM would have been given.
        let (mut guest, callback) = guest_bootstrap(bootstrap)?;
        let egress = guest_egress(&mut guest, egress_url)?;
        mark.check_forwards(&callback, egress.as_deref())
            .map_err(|why| refuse(format!("pool VM {}: {why}", vm.id)))?;
        let line = PoolDelivery {
            now_ms: now_ms(),
            bootstrap: guest,
        }
        .to_line()
        .map_err(|e| other("encoding the bootstrap", e))?;
        qmp::execute(&dir.qmp, "cont", QMP_WAIT)
            .await
            .map_err(|e| refuse(format!("resuming pool VM {}: {e}", vm.id)))?;
        tokio::time::timeout(ACK_WAIT, hand_over(&dir, &line))
            .await
            .map_err(|_| {
                refuse(format!(
                    "the guest of pool VM {} did not take its bootstrap within {ACK_WAIT:?}; console:\n{}",
                    vm.id,
                    state::tail(&dir.console, boot::TAIL_LINES)
                ))
            })?
            .map_err(|e| refuse(format!("pool VM {}'s port {POOL_PORT}: {e}", vm.id)))
    }

    /// The VM directories marked as pool VMs.
    pub(super) fn idle_vms(&self) -> Result<Vec<IdleVm>, ProviderError> {
        Ok(self
            .vm_names()?
            .into_iter()
            .filter_map(|name| {
                let dir = self.vm_dir(&name);
                if !dir.is_pool() {
                    return None;
                }
                let mark = PoolMark::read(&dir);
                Some(IdleVm {
                    vm: VmRef {
                        provider: NAME.into(),
                        id: name,
                        node: None,
                    },
                    class: mark.as_ref().map(|m| m.class.clone()),
                    created_ms: mark.map(|m| m.created_ms),
                })
            })
            .collect())
    }

    /// The micro VM's version: what it boots (see the module's doc).
    pub(super) fn template_version_of(&self, template: &str) -> Result<String, ProviderError> {
        if template != MICRO_TEMPLATE {
            return Err(refuse(format!(
                "the qemu provider pools micro VMs only (template {MICRO_TEMPLATE}), not {template:?}"
            )));
        }
        let kernel = &self.settings.kernel.image;
        let meta = std::fs::metadata(kernel)
            .map_err(|e| other(format!("reading {}", kernel.display()), e))?;
        Ok(format!(
            "{}-{}-{}",
            self.boot_digest,
            meta.len(),
            meta.mtime()
        ))
    }
}

/// Writes the delivery on the VM's port and reads the guest's answer.
async fn hand_over(dir: &VmDir, line: &[u8]) -> Result<(), String> {
    let stream = tokio::net::UnixStream::connect(&dir.pool_socket)
        .await
        .map_err(|e| format!("connecting to {}: {e}", dir.pool_socket.display()))?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(line)
        .await
        .map_err(|e| format!("writing the bootstrap: {e}"))?;
    let mut answer = String::new();
    BufReader::new(read)
        .read_line(&mut answer)
        .await
        .map_err(|e| format!("reading the guest's answer: {e}"))?;
    if answer.trim() != POOL_ACK {
        return Err(format!(
            "the guest answered {:?} instead of {POOL_ACK:?}",
            answer.trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_vm_serves_only_jobs_whose_forwards_it_has() {
        let mark = PoolMark {
            class: "micro:1c512m64m".into(),
            created_ms: 0,
            callback: "127.0.0.1:8765".into(),
            egress: Some("127.0.0.1:8766".into()),
        };
        assert!(
            mark.check_forwards("127.0.0.1:8765", Some("127.0.0.1:8766"))
                .is_ok()
        );
        let err = mark
            .check_forwards("127.0.0.1:9000", Some("127.0.0.1:8766"))
            .unwrap_err();
        assert!(err.contains("callback API at 127.0.0.1:8765"), "{err}");
        let err = mark
            .check_forwards("127.0.0.1:8765", Some("127.0.0.1:9001"))
            .unwrap_err();
        assert!(err.contains("egress gateway"), "{err}");
        assert!(mark.check_forwards("127.0.0.1:8765", None).is_err());
        let bare = PoolMark {
            egress: None,
            ..mark
        };
        assert!(bare.check_forwards("127.0.0.1:8765", None).is_ok());
        assert!(
            bare.check_forwards("127.0.0.1:8765", Some("127.0.0.1:8766"))
                .is_err()
        );
    }
}
