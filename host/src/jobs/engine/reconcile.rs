//! The provider's VMs against the store: at engine start and every cleanup
//! interval, VMs of ours that no live job needs are destroyed, and VMs stuck
//! in a provider operation are reported.
//!
//! At start no driver runs, so any VM that is not its job's recorded VM is
//! an orphan (of a crash, or of an interrupted provisioning). While the
//! engine runs, a provisioning driver may hold a VM it has not recorded yet,
//! so the periodic pass destroys only what cannot be anyone's: VMs of unknown
//! jobs, of final jobs whose driver is done with them, and of jobs past their
//! deadline by more than the grace. A VM its job's driver has destroyed is
//! never destroyed again: its id may already name another job's VM.

use std::time::Duration;

use super::Engine;
use crate::clock::now_ms;
use crate::model::{JobRecord, UnixMs};
use crate::provider::{OwnedVm, VmRef};
use crate::store::StoreError;

/// Which pass this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Engine start: no driver holds any VM yet.
    Start,
    /// While the engine runs.
    Periodic,
}

/// How long past its deadline a live job's VM is left to its driver.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(120);

/// Why `owned` is to be destroyed, or `None` to keep it. `job` is the record
/// of the job the VM names, if the store has it.
pub fn verdict(
    owned: &OwnedVm,
    job: Option<&JobRecord>,
    now: UnixMs,
    pass: Pass,
) -> Option<&'static str> {
    let past_deadline = |deadline: UnixMs| now > deadline + DEADLINE_GRACE.as_millis() as i64;
    let Some(job) = job else {
        return Some("no job owns it");
    };
    let recorded = job.vm.as_ref().is_some_and(|vm| same_vm(vm, &owned.vm));
    if job.state.is_final() {
        // The job's own driver destroys its recorded VM and confirms it is
        // gone. A listing that still shows it is older than that, and the
        // id may already be another job's VM (Proxmox reuses VMIDs), so
        // only a VM the job never recorded is left over.
        return (!recorded).then_some("its job is final");
    }
    if pass == Pass::Start && !recorded {
        return Some("its job records another VM");
    }
    if past_deadline(job.deadline_at) || owned.deadline_ms.is_some_and(past_deadline) {
        return Some("its job is past its deadline");
    }
    None
}

fn same_vm(a: &VmRef, b: &VmRef) -> bool {
    a.provider == b.provider && a.id == b.id
}

/// One pass over the provider's VMs. Provider errors are logged (the next
/// pass tries again); store errors are returned.
pub(super) async fn reconcile(engine: &Engine, pass: Pass) -> Result<(), StoreError> {
    let provider = &engine.provider;
    let owned = match provider.list_owned().await {
        Ok(owned) => owned,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the provider's VMs; orphans stay until the next pass");
            return Ok(());
        }
    };
    let now = now_ms();
    for o in owned {
        let job = match &o.job_id {
            Some(id) => match engine.job(id).await {
                Ok(r) => Some(r),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let Some(reason) = verdict(&o, job.as_ref(), now, pass) else {
            continue;
        };
        tracing::info!(vm = %o.vm.id, job_id = ?o.job_id, reason, "destroying a VM of ours");
        match provider.destroy(&o.vm).await {
            Ok(()) => engine.shared.metrics.count_destroyed(),
            Err(e) => tracing::warn!(vm = %o.vm.id, error = %e, "cannot destroy a left-over VM"),
        }
    }
    match provider.stuck().await {
        Ok(stuck) => {
            for vm in stuck {
                tracing::warn!(
                    vm = %vm.id,
                    node = ?vm.node,
                    "a VM of ours is stuck in a provider operation past its grace; \
                     check the provider's task log"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for stuck VMs"),
    }
    super::pool::reconcile(engine, pass).await
}

#[cfg(test)]
mod tests {
    use delegate_proto::{JobManifest, JobState};

    use super::*;

    fn vm(id: &str) -> VmRef {
        VmRef {
            provider: "proxmox".into(),
            id: id.into(),
            node: Some("pve1".into()),
        }
    }

    fn owned(id: &str, deadline_ms: Option<UnixMs>) -> OwnedVm {
        OwnedVm {
            vm: vm(id),
            job_id: Some("j".into()),
            deadline_ms,
        }
    }

    fn job(state: JobState, recorded: Option<&str>, destroyed: bool) -> JobRecord {
        let manifest =
            JobManifest::from_value(serde_json::json!({"task": "t", "agentType": "script"}))
                .unwrap();
        JobRecord {
            deadline_at: 1_000_000,
            vm: recorded.map(vm),
            vm_destroyed: destroyed,
            ..JobRecord::blank("j", state, manifest)
        }
    }

    #[test]
    fn decides_by_job_state_record_and_deadline() {
        use JobState::*;
        use Pass::*;
        let now = 500_000;
        let late = 1_000_000 + DEADLINE_GRACE.as_millis() as i64 + 1;
        // (what, the job, the VM's metadata deadline, now, pass, destroy?)
        type Case<'a> = (
            &'a str,
            Option<JobRecord>,
            Option<UnixMs>,
            UnixMs,
            Pass,
            bool,
        );
        let cases: &[Case] = &[
            ("unknown job", None, None, now, Periodic, true),
            (
                "running, its VM",
                Some(job(Running, Some("100"), false)),
                None,
                now,
                Periodic,
                false,
            ),
            (
                "running, its VM, start",
                Some(job(Running, Some("100"), false)),
                None,
                now,
                Start,
                false,
            ),
            (
                "provisioning, not recorded yet",
                Some(job(Provisioning, None, false)),
                None,
                now,
                Periodic,
                false,
            ),
            (
                "provisioning, not recorded, start",
                Some(job(Provisioning, None, false)),
                None,
                now,
                Start,
                true,
            ),
            (
                "another attempt's VM, start",
                Some(job(Running, Some("101"), false)),
                None,
                now,
                Start,
                true,
            ),
            (
                "final, driver still to destroy it",
                Some(job(Failed, Some("100"), false)),
                None,
                now,
                Periodic,
                false,
            ),
            (
                "final, reported destroyed: a stale listing",
                Some(job(Success, Some("100"), true)),
                None,
                now,
                Periodic,
                false,
            ),
            (
                "final, never recorded",
                Some(job(Cancelled, None, false)),
                None,
                now,
                Periodic,
                true,
            ),
            (
                "live past deadline + grace",
                Some(job(Running, Some("100"), false)),
                None,
                late,
                Periodic,
                true,
            ),
            (
                "live within grace",
                Some(job(Running, Some("100"), false)),
                None,
                1_000_001,
                Periodic,
                false,
            ),
            (
                "metadata deadline passed",
                Some(job(Running, Some("100"), false)),
                Some(0),
                now,
                Periodic,
                true,
            ),
        ];
        for (what, rec, meta_deadline, at, pass, destroy) in cases {
            let got = verdict(&owned("100", *meta_deadline), rec.as_ref(), *at, *pass);
            assert_eq!(got.is_some(), *destroy, "{what}: {got:?}");
        }
    }
}
