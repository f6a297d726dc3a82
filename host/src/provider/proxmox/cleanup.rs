//! Destroying our VMs and finding them again.
//!
//! Destroy is idempotent: a VM that is gone is destroyed. A VM still
//! locked by its clone is waited for (up to the clone-lock grace); a running
//! one is stopped hard; then `DELETE ...?purge=1&destroy-unreferenced-disks=1`
//! and a check that it is really gone. Reconciliation lists VMs tagged with
//! our instance, plus VMs in our range whose description names our instance
//! (a VM still being cloned has no tags yet), and reports a VM stuck in
//! `lock: clone` past the grace.

use std::time::{Duration, Instant};

use super::client::FailureKind;
use super::client::wire::Resource;
use super::metadata;
use super::provider::{ProxmoxProvider, vm_ref};
use crate::clock::now_ms;
use crate::provider::{OwnedVm, ProviderError, VmRef};

fn destroy_err(vm: &VmRef, message: String) -> ProviderError {
    ProviderError::Destroy {
        vm: format!("VM {}", vm.id),
        message,
    }
}

impl ProxmoxProvider {
    /// The cluster's VMs (templates included), with `context` on failure.
    pub(super) async fn list_vms(&self, context: &str) -> Result<Vec<Resource>, ProviderError> {
        self.client
            .resources(Some("vm"))
            .await
            .map_err(|e| ProviderError::Other {
                context: context.into(),
                source: Box::new(e),
            })
    }

    /// The node a VM is on now (its `VmRef` may predate a restart).
    pub(super) async fn locate(&self, vmid: u32) -> Result<Option<String>, ProviderError> {
        let res = self.list_vms("listing VMs").await?;
        Ok(res
            .into_iter()
            .find(|r| r.vmid == Some(u64::from(vmid)) && r.kind == "qemu")
            .and_then(|r| r.node))
    }

    pub(super) async fn destroy_vm(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let vmid: u32 = vm
            .id
            .parse()
            .map_err(|_| destroy_err(vm, format!("{:?} is not a VMID", vm.id)))?;
        if !self.vmids.in_range(vmid) {
            // Never touch what is not ours, whatever the caller says.
            return Err(destroy_err(
                vm,
                format!(
                    "VMID {vmid} is outside PROXMOX_VMID_RANGE; refusing to destroy a VM this \
                     host did not create"
                ),
            ));
        }
        let started = Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut node = match &vm.node {
            Some(n) => n.clone(),
            None => match self.locate(vmid).await? {
                Some(n) => n,
                None => {
                    self.vmids.release(vmid);
                    return Ok(());
                }
            },
        };
        loop {
            match self.destroy_once(&node, vmid).await {
                Ok(()) => {
                    self.vmids.release(vmid);
                    tracing::info!(vmid, node = %node, "VM destroyed");
                    return Ok(());
                }
                Err(e) => {
                    let kind = e.kind();
                    let waiting = matches!(
                        kind,
                        FailureKind::Locked | FailureKind::LockTimeout | FailureKind::Transient
                    );
                    if kind == FailureKind::NotFound {
                        // Gone from this node: really gone, or elsewhere now?
                        match self.locate(vmid).await? {
                            Some(n) if n != node => {
                                node = n;
                                continue;
                            }
                            Some(_) => {}
                            None => {
                                self.vmids.release(vmid);
                                return Ok(());
                            }
                        }
                    }
                    // A lock is given the clone-lock grace; anything else
                    // (unreachable node, lock timeouts) the destroy timeout.
                    let budget = if kind == FailureKind::Locked {
                        self.settings.clone_lock_grace
                    } else {
                        self.timeouts.destroy
                    };
                    if !waiting || started.elapsed() > budget {
                        return Err(destroy_err(vm, e.to_string()));
                    }
                    tracing::debug!(vmid, error = %e, "destroy must wait");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One pass: stop if running, delete, confirm.
    async fn destroy_once(&self, node: &str, vmid: u32) -> Result<(), super::PveError> {
        let status = match self.client.vm_status(node, vmid).await {
            Ok(s) => s,
            Err(e) if e.kind() == FailureKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(lock) = &status.lock {
            // A clone in progress holds the config; delete would fail the same way.
            return Err(super::PveError::Api {
                method: "DELETE",
                path: format!("/nodes/{node}/qemu/{vmid}"),
                status: 500,
                message: format!("VM {vmid} is locked ({lock})"),
                errors: Default::default(),
            });
        }
        if status.status == "running" {
            match self.client.stop_vm(node, vmid, self.timeouts.power).await {
                Ok(()) => {}
                Err(e) if e.kind() == FailureKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        match self
            .client
            .destroy_vm(node, vmid, self.timeouts.destroy)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == FailureKind::NotFound => return Ok(()),
            // Started again in between (it should not be): stop on the next pass.
            Err(e) if e.message().contains("is running - destroy failed") => {
                return Err(super::PveError::TaskTimeout {
                    upid: format!("destroy of {vmid}"),
                    waited_secs: 0,
                });
            }
            Err(e) => return Err(e),
        }
        match self.client.vm_status(node, vmid).await {
            Err(e) if e.kind() == FailureKind::NotFound => Ok(()),
            Ok(_) => Err(super::PveError::Api {
                method: "GET",
                path: format!("/nodes/{node}/qemu/{vmid}/status/current"),
                status: 500,
                message: format!("VM {vmid} still exists after its destroy task succeeded"),
                errors: Default::default(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Job VMs of ours (pool VMs are [`Self::scan`]'s other half).
    pub(super) async fn owned_vms(&self) -> Result<Vec<OwnedVm>, ProviderError> {
        Ok(self
            .scan()
            .await?
            .into_iter()
            .filter(|(_, _, pooled)| !pooled)
            .map(|(owned, _, _)| owned)
            .collect())
    }

    /// Every VM of ours with its metadata, job and pool VMs alike, and
    /// whether it is a pool VM: its metadata names a pool class, or (when
    /// its config could not be read) its name is a pool VM's, so a claimed
    /// pool VM is never taken for a VM of an unknown job.
    pub(super) async fn scan(
        &self,
    ) -> Result<Vec<(OwnedVm, Option<metadata::VmMeta>, bool)>, ProviderError> {
        let res = self.list_vms("listing VMs for reconciliation").await?;
        let tag = self.settings.instance_tag();
        let mut out = Vec::new();
        for r in res.iter().filter(|r| r.kind == "qemu" && !r.template) {
            let (Some(vmid), Some(node)) = (r.vmid.and_then(|v| u32::try_from(v).ok()), &r.node)
            else {
                continue;
            };
            let tagged = r
                .tags
                .as_deref()
                .is_some_and(|t| metadata::has_tag(t, &tag));
            let maybe = self.vmids.in_range(vmid)
                && r.name.as_deref().is_some_and(|n| n.starts_with("dlg-"));
            if !tagged && !maybe {
                continue;
            }
            let meta = match self.client.vm_config(node, vmid).await {
                Ok(cfg) => cfg
                    .text("description")
                    .as_deref()
                    .and_then(metadata::parse_description),
                Err(e) => {
                    tracing::warn!(vmid, error = %e, "cannot read the config of a VM of ours");
                    None
                }
            };
            let ours = tagged
                || meta
                    .as_ref()
                    .is_some_and(|m| m.host_instance == self.settings.instance);
            if !ours {
                continue;
            }
            if r.lock.as_deref() == Some("clone") {
                let age = meta
                    .as_ref()
                    .map(|m| Duration::from_millis((now_ms() - m.created_ms).max(0) as u64));
                if age.is_some_and(|a| a > self.settings.clone_lock_grace) {
                    tracing::warn!(
                        vmid,
                        node = %node,
                        age_s = age.map_or(0, |a| a.as_secs()),
                        "VM still locked by its clone past PROXMOX_CLONE_LOCK_GRACE_SECONDS; \
                         check the clone task on the node (it may need `qm unlock`)"
                    );
                }
            }
            let job_id = meta.as_ref().map(|m| m.job_id.clone()).or_else(|| {
                r.name
                    .as_deref()
                    .and_then(|n| n.strip_prefix("dlg-"))
                    .map(str::to_string)
            });
            let pooled = match &meta {
                Some(m) => m.pool.is_some(),
                None => r
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(metadata::POOL_NAME_PREFIX)),
            };
            out.push((
                OwnedVm {
                    vm: vm_ref(vmid, node),
                    job_id,
                    deadline_ms: meta.as_ref().map(|m| m.deadline_ms),
                },
                meta,
                pooled,
            ));
        }
        Ok(out)
    }

    /// VMs of ours still locked by a clone for longer than the grace.
    pub async fn stuck_clones(&self) -> Result<Vec<VmRef>, ProviderError> {
        let owned = self.owned_vms().await?;
        let res = self.list_vms("listing VMs").await?;
        let mut out = Vec::new();
        for o in owned {
            let locked = res.iter().any(|r| {
                r.vmid.map(|v| v.to_string()) == Some(o.vm.id.clone())
                    && r.lock.as_deref() == Some("clone")
            });
            if !locked {
                continue;
            }
            let node = o.vm.node.clone().unwrap_or_default();
            let vmid: u32 = o.vm.id.parse().unwrap_or(0);
            let created = self
                .client
                .vm_config(&node, vmid)
                .await
                .ok()
                .and_then(|c| c.text("description"))
                .and_then(|d| metadata::parse_description(&d))
                .map(|m| m.created_ms);
            if created.is_some_and(|c| {
                Duration::from_millis((now_ms() - c).max(0) as u64) > self.settings.clone_lock_grace
            }) {
                out.push(o.vm);
            }
        }
        Ok(out)
    }
}
