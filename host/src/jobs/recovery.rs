//! What the engine does when it starts: reconcile the provider's VMs with
//! the store, then give every job that was alive a driver again.
//!
//! - a VM whose job is unknown, final, or that is not the VM its job
//!   records, is destroyed (an orphan of a crash or of another engine's
//!   past; see [`super::reconcile`]);
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
use super::reconcile::{Pass, reconcile};

pub(super) async fn recover(shared: &Arc<Shared>) -> Result<(), JobError> {
    reconcile(shared, Pass::Start).await?;
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
