//! Whether a job's VM is still there: stopped behind the host's back
//! (crashed, shut down from the console, killed by the OOM killer of its
//! node) or deleted, so the engine fails its job at once instead of
//! waiting out the heartbeat lease.

use std::time::Duration;

use super::client::FailureKind;
use super::provider::ProxmoxProvider;
use crate::provider::{ProviderError, VmRef};

/// How often the engine asks: one status request per live job each time,
/// so less often than the process-backed providers' look at `/proc`.
pub(super) const GONE_INTERVAL: Duration = Duration::from_secs(5);

impl ProxmoxProvider {
    /// `Some(reason)` when the VM is stopped or no longer exists. A node
    /// that does not answer, or a VM in another state, tells nothing.
    pub(super) async fn vm_gone(&self, vm: &VmRef) -> Result<Option<String>, ProviderError> {
        let Ok(vmid) = vm.id.parse::<u32>() else {
            return Ok(None);
        };
        if !self.vmids.in_range(vmid) {
            return Ok(None);
        }
        let missing = || {
            Some(format!(
                "VM {vmid} no longer exists: it was deleted before its guest reported a result"
            ))
        };
        let node = match &vm.node {
            Some(n) => n.clone(),
            None => match self.locate(vmid).await? {
                Some(n) => n,
                None => return Ok(missing()),
            },
        };
        match self.client.vm_status(&node, vmid).await {
            Ok(status) if status.status == "stopped" => Ok(Some(format!(
                "VM {vmid} on node {node} stopped before its guest reported a result"
            ))),
            Ok(_) => Ok(None),
            // Not on its node: deleted, or moved to another one.
            Err(e) if e.kind() == FailureKind::NotFound => Ok(match self.locate(vmid).await? {
                None => missing(),
                Some(_) => None,
            }),
            Err(e) => Err(ProviderError::Other {
                context: format!("asking for the status of VM {vmid} on {node}"),
                source: Box::new(e),
            }),
        }
    }
}
