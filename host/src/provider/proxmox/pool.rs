//! Warm pools on Proxmox: an idle VM is made exactly as a job's VM is
//! (clone, configure, firewall, start, wait for the guest agent) but carries a pool
//! class in its metadata and the `delegate-pool` tag instead of a job; its
//! guest waits for the bootstrap file as every template's `.path` unit
//! does, and a claim writes that file with the agent's `file-write`. The
//! template's version is its copies' VMIDs with their config digests, so a
//! template rebuilt under the same name (new VMID) or edited (new digest)
//! makes pooled clones of the old one stale.

use super::metadata::VmMeta;
use super::placement;
use super::provider::ProxmoxProvider;
use crate::clock::now_ms;
use crate::provider::{IdleRequest, IdleVm, ProviderError, VmRef};
use delegate_proto::Bootstrap;

fn other(context: String, e: impl std::error::Error + Send + Sync + 'static) -> ProviderError {
    ProviderError::Other {
        context,
        source: Box::new(e),
    }
}

impl ProxmoxProvider {
    pub(super) async fn prepare_idle_vm(
        &self,
        req: &IdleRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError> {
        let meta = VmMeta {
            job_id: req.pool_id.clone(),
            host_instance: self.settings.instance.clone(),
            created_ms: now_ms(),
            // No job, no deadline: the pool's own age limit recycles it.
            deadline_ms: i64::MAX,
            pool: Some(req.class.clone()),
        };
        // No job yet: the firewall allows the host's configured URLs.
        let targets = self.firewall_targets(None, None);
        let (vm, _, _) = self
            .boot(&req.template, &meta, req.size, &targets, on_created)
            .await?;
        Ok(vm)
    }

    pub(super) async fn deliver_to(
        &self,
        vm: &VmRef,
        bootstrap: &Bootstrap,
    ) -> Result<(), ProviderError> {
        let vmid: u32 = vm.id.parse().map_err(|_| ProviderError::Provision {
            message: format!("{:?} is not a VMID", vm.id),
            retryable: false,
        })?;
        let node = vm.node.clone().ok_or_else(|| ProviderError::Provision {
            message: format!("pool VM {vmid} has no node on record"),
            retryable: false,
        })?;
        self.deliver(&node, vmid, bootstrap).await
    }

    pub(super) async fn idle_vms(&self) -> Result<Vec<IdleVm>, ProviderError> {
        Ok(self
            .scan()
            .await?
            .into_iter()
            .filter(|(_, _, pooled)| *pooled)
            .map(|(owned, meta, _)| IdleVm {
                vm: owned.vm,
                class: meta.as_ref().and_then(|m| m.pool.clone()),
                created_ms: meta.map(|m| m.created_ms),
            })
            .collect())
    }

    pub(super) async fn template_version_of(
        &self,
        template: &str,
    ) -> Result<String, ProviderError> {
        let res = self
            .list_vms("listing VMs for the template's version")
            .await?;
        let mut copies = placement::find_templates(&res, template);
        if copies.is_empty() {
            return Err(ProviderError::Provision {
                message: format!("template {template:?} not found"),
                retryable: true,
            });
        }
        copies.sort();
        let mut parts = Vec::new();
        for (vmid, node) in copies {
            let cfg = self
                .client
                .vm_config(&node, vmid)
                .await
                .map_err(|e| other(format!("reading template {vmid}'s config"), e))?;
            let digest = cfg.text("digest").unwrap_or_default();
            parts.push(format!("{vmid}@{digest}"));
        }
        Ok(parts.join(","))
    }
}
