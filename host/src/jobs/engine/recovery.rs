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

use delegate_proto::JobState;

use super::Engine;
use super::driver::{self, Resume};
use super::reconcile::{Pass, reconcile};
use crate::jobs::error::JobError;

pub(super) async fn recover(engine: &Engine) -> Result<(), JobError> {
    reconcile(engine, Pass::Start).await?;
    let e = engine.clone();
    engine
        .store(move |store| {
            for id in store.ids_in_states(&[JobState::Provisioning, JobState::Running])? {
                let rec = store.get_job(&id)?;
                let resume = if rec.vm.is_some() && store.is_provisioned(&id)? {
                    Resume::Attached
                } else {
                    Resume::Reprovision
                };
                tracing::info!(job_id = %id, state = %rec.state, ?resume, "resuming job after a restart");
                driver::launch(&e, &id, resume);
            }
            for id in store.final_ids_with_vm()? {
                driver::launch(&e, &id, Resume::Cleanup);
            }
            Ok(())
        })
        .await?;
    Ok(())
}
