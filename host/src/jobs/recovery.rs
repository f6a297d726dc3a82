//! What the engine does when it starts: reconcile the provider's VMs with
//! the store, then give every job that was alive a driver again.
//!
//! - a VM whose job is unknown, or that is not the VM its job records, is
//!   destroyed (an orphan of a crash or of another engine's past);
//! - a job whose guest had its bootstrap is watched again (its token hash
//!   is in the store, so the guest's retries are accepted);
//! - a job interrupted while provisioning is provisioned afresh;
//! - a final job whose VM was not yet destroyed is cleaned up;
//! - `pending` jobs need nothing: the scheduler reads them from the store.

use std::sync::Arc;

use delegate_proto::JobState;

use super::driver::{self, Resume};
use super::error::JobError;
use super::manager::Shared;
use crate::provider::VmRef;
use crate::store::StoreError;

fn same_vm(a: &VmRef, b: &VmRef) -> bool {
    a.provider == b.provider && a.id == b.id
}

pub(super) async fn recover(shared: &Arc<Shared>) -> Result<(), JobError> {
    let Some(provider) = shared.provider.clone() else {
        return Ok(());
    };
    match provider.list_owned().await {
        Ok(owned) => {
            for o in owned {
                let rec = match &o.job_id {
                    Some(id) => match shared.store.get_job(id) {
                        Ok(r) => Some(r),
                        Err(StoreError::NotFound(_)) => None,
                        Err(e) => return Err(e.into()),
                    },
                    None => None,
                };
                let recorded = rec
                    .as_ref()
                    .and_then(|r| r.vm.as_ref())
                    .is_some_and(|vm| same_vm(vm, &o.vm));
                if recorded {
                    continue;
                }
                tracing::info!(vm = %o.vm.id, job_id = ?o.job_id, "destroying a VM that no job owns");
                if let Err(e) = provider.destroy(&o.vm).await {
                    tracing::warn!(vm = %o.vm.id, error = %e, "cannot destroy an orphan VM");
                } else {
                    shared.metrics.count_destroyed();
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the provider's VMs; orphans stay until the next start")
        }
    }

    let live = shared
        .store
        .ids_in_states(&[JobState::Provisioning, JobState::Running])?;
    for id in live {
        let rec = shared.store.get_job(&id)?;
        let resume = if rec.vm.is_some() && shared.store.is_provisioned(&id)? {
            Resume::Attached
        } else {
            Resume::Reprovision
        };
        tracing::info!(job_id = %id, state = %rec.state, ?resume, "resuming job after a restart");
        driver::launch(shared, &id, resume);
    }
    for id in shared.store.final_ids_with_vm()? {
        driver::launch(shared, &id, Resume::Cleanup);
    }
    Ok(())
}
