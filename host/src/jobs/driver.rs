//! One driver task per live job: provision its VM, watch its deadline and
//! heartbeat lease while it runs, and clean up once it is final.
//!
//! Ownership rule: only a job's driver calls the provider for that job, and
//! a job has at most one driver per engine (the `runs` map), so a VM is
//! provisioned and destroyed by exactly one task; `vm_destroyed` in the
//! store makes "destroyed" survive a restart.

use std::sync::Arc;
use std::time::Duration;

use delegate_proto::bootstrap::BOOTSTRAP_VERSION;
use delegate_proto::outcome::ErrorKind;
use delegate_proto::{Bootstrap, JobState, Lifecycle};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::clock::now_ms;
use super::manager::{Run, Shared};
use super::model::JobRecord;
use super::{resources, token};
use crate::provider::{ProviderError, ProvisionRequest, VmRef};

/// Attempts at provisioning when the provider says a retry may work.
const PROVISION_ATTEMPTS: u32 = 3;
/// Attempts at destroying before housekeeping takes over.
const DESTROY_ATTEMPTS: u32 = 4;

/// Where a driver starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resume {
    /// A pending job: provision it.
    Fresh,
    /// A job left in `provisioning` before its VM had its bootstrap:
    /// destroy what was created, provision again.
    Reprovision,
    /// A job whose guest has its bootstrap: watch it.
    Attached,
    /// A final job whose VM still exists: clean up.
    Cleanup,
}

/// Starts a driver for the job unless it has one. Returns whether it did.
pub(super) fn launch(shared: &Arc<Shared>, job_id: &str, resume: Resume) -> bool {
    let Some(core) = &shared.core else {
        return false;
    };
    if core.shutdown.is_cancelled() {
        return false;
    }
    let (stop, changed) = {
        let mut runs = core.runs();
        if runs.contains_key(job_id) {
            return false;
        }
        let stop = core.shutdown.child_token();
        let changed = Arc::new(Notify::new());
        runs.insert(
            job_id.to_string(),
            Run {
                stop: stop.clone(),
                changed: changed.clone(),
                provisioning: matches!(resume, Resume::Fresh | Resume::Reprovision),
            },
        );
        (stop, changed)
    };
    let s = shared.clone();
    let id = job_id.to_string();
    core.tracker.spawn(async move {
        drive(&s, &id, &stop, &changed, resume).await;
        if let Some(core) = &s.core {
            core.runs().remove(&id);
            core.wake.notify_one();
        }
    });
    true
}

async fn drive(
    shared: &Arc<Shared>,
    id: &str,
    stop: &CancellationToken,
    changed: &Notify,
    resume: Resume,
) {
    let Some(core) = &shared.core else { return };
    let shutdown = &core.shutdown;
    match resume {
        Resume::Fresh => match shared.transition(id, JobState::Provisioning, None) {
            Ok(true) => provision(shared, id, stop).await,
            // Final already (cancelled or timed out while pending).
            Ok(false) => return,
            Err(e) => {
                tracing::error!(job_id = id, error = %e, "cannot start the job");
                return;
            }
        },
        Resume::Reprovision => {
            if let Ok(rec) = shared.store.get_job(id)
                && let Some(vm) = rec.vm
                && !rec.vm_destroyed
            {
                tracing::info!(job_id = id, vm = %vm.id, "destroying the VM of an interrupted provisioning");
                if !destroy(shared, id, &vm, shutdown).await {
                    return;
                }
                if let Err(e) = shared.store.clear_vm(id) {
                    tracing::error!(job_id = id, error = %e, "cannot clear the old VM");
                }
            }
            provision(shared, id, stop).await;
        }
        Resume::Attached | Resume::Cleanup => {}
    }
    if let Some(run) = core.runs().get_mut(id) {
        run.provisioning = false;
    }
    core.wake.notify_one();
    if shutdown.is_cancelled() {
        return;
    }
    watch(shared, id, changed, shutdown).await;
    if shutdown.is_cancelled() {
        return;
    }
    cleanup(shared, id, changed, shutdown).await;
}

fn fail(shared: &Shared, id: &str, to: JobState, why: &str, kind: ErrorKind) {
    if let Err(e) = shared.transition(id, to, Some((why, kind))) {
        tracing::error!(job_id = id, error = %e, "cannot record the job's end");
    }
}

/// Provisions the job's VM; on return the job either has a VM with its
/// bootstrap, or is final, or provisioning was abandoned (cancel, shutdown).
async fn provision(shared: &Arc<Shared>, id: &str, stop: &CancellationToken) {
    let Some(provider) = shared.provider.clone() else {
        return;
    };
    let rec = match shared.store.get_job(id) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(job_id = id, error = %e, "cannot read the job to provision");
            return;
        }
    };
    let deadline = instant_at(rec.deadline_at);
    let isolation = provider.isolation();
    for attempt in 1..=PROVISION_ATTEMPTS {
        let (token, hash) = match token::new_token() {
            Ok(t) => t,
            Err(e) => {
                let why = format!("cannot make a job token: {e}");
                return fail(shared, id, JobState::Failed, &why, ErrorKind::Internal);
            }
        };
        if let Err(e) = shared.store.set_token_hash(id, &hash) {
            let why = format!("cannot store the job token: {e}");
            return fail(shared, id, JobState::Failed, &why, ErrorKind::Internal);
        }
        let (size, template) = resources::resolve(
            &rec.manifest,
            &resources::VmDefaults::from_settings(&shared.settings),
        );
        let req = ProvisionRequest {
            job_id: id.to_string(),
            template,
            size,
            bootstrap: Bootstrap {
                v: BOOTSTRAP_VERSION,
                job_id: id.to_string(),
                callback_url: shared.settings.callback_url.clone(),
                token,
            },
            deadline_ms: rec.deadline_at,
        };
        let store = shared.store.clone();
        let jid = id.to_string();
        let on_created = move |vm: VmRef| {
            tracing::info!(job_id = %jid, vm = %vm.id, "VM created");
            if let Err(e) = store.set_vm(&jid, &vm, isolation) {
                tracing::error!(job_id = %jid, error = %e, "cannot record the new VM");
            }
        };
        let started = tokio::time::Instant::now();
        tracing::info!(job_id = id, attempt, "provisioning");
        let outcome = tokio::select! {
            r = provider.provision(req, &on_created) => r,
            _ = stop.cancelled() => {
                tracing::info!(job_id = id, "provisioning abandoned");
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let why = format!(
                    "the job's timeout of {} s passed while its VM was being provisioned",
                    (rec.deadline_at - rec.created_at) / 1000
                );
                return fail(shared, id, JobState::Timeout, &why, ErrorKind::Timeout);
            }
        };
        match outcome {
            Ok(vm) => {
                let now = now_ms();
                let saved = shared
                    .store
                    .set_vm(id, &vm, isolation)
                    .and_then(|()| shared.store.mark_provisioned(id, now));
                if let Err(e) = saved {
                    tracing::error!(job_id = id, error = %e, "cannot record the provisioned VM");
                }
                shared
                    .metrics
                    .observe_provisioning(started.elapsed().as_secs_f64());
                tracing::info!(job_id = id, vm = %vm.id, seconds = started.elapsed().as_secs_f64(), "provisioned");
                return;
            }
            Err(ProviderError::Provision {
                message,
                retryable: true,
            }) if attempt < PROVISION_ATTEMPTS => {
                tracing::warn!(job_id = id, attempt, %message, "provisioning failed; retrying");
                if let Ok(r) = shared.store.get_job(id)
                    && let Some(vm) = r.vm
                {
                    if !destroy(shared, id, &vm, stop).await {
                        return;
                    }
                    let _ = shared.store.clear_vm(id);
                }
                let backoff = Duration::from_secs(2u64.pow(attempt));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            Err(e) => {
                let why = e.to_string();
                return fail(shared, id, JobState::Failed, &why, ErrorKind::Provision);
            }
        }
    }
}

/// Waits until the job is final, ending it when its deadline passes or its
/// heartbeat lease runs out.
async fn watch(shared: &Shared, id: &str, changed: &Notify, shutdown: &CancellationToken) {
    let lease_ms = shared.settings.heartbeat_threshold.as_millis() as i64;
    // A guest gets a full lease from when this driver began watching, so a
    // host restart never counts its own downtime against the guest.
    let base = now_ms();
    loop {
        let rec = match shared.store.get_job(id) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(job_id = id, error = %e, "cannot read the job");
                return;
            }
        };
        if rec.state.is_final() {
            return;
        }
        let lease_end = rec.last_event_at.unwrap_or(0).max(base) + lease_ms;
        let wake_at = rec.deadline_at.min(lease_end);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => continue,
            _ = tokio::time::sleep_until(instant_at(wake_at)) => {}
        }
        let now = now_ms();
        if now >= rec.deadline_at {
            let why = format!(
                "the job ran past its timeout of {} s",
                (rec.deadline_at - rec.created_at) / 1000
            );
            fail(shared, id, JobState::Timeout, &why, ErrorKind::Timeout);
            continue;
        }
        let fresh = shared.store.get_job(id).ok();
        let last = fresh
            .as_ref()
            .and_then(|r| r.last_event_at)
            .unwrap_or(0)
            .max(base);
        if fresh.is_some_and(|r| !r.state.is_final()) && last + lease_ms <= now {
            let why = format!(
                "no event from the guest for {} s (heartbeat lease expired); its VM was destroyed",
                lease_ms / 1000
            );
            fail(shared, id, JobState::Failed, &why, ErrorKind::Lost);
        }
    }
}

/// Whether the job's VM is kept after the job: persistent jobs that ran,
/// unless they were cancelled or their guest was lost (a cancel and a lost
/// lease both promise the VM is destroyed).
fn keeps_vm(rec: &JobRecord, provisioned: bool) -> bool {
    rec.manifest.lifecycle() == Lifecycle::Persistent
        && provisioned
        && rec.state != JobState::Cancelled
        && rec.error_kind != Some(ErrorKind::Lost)
}

async fn cleanup(shared: &Shared, id: &str, changed: &Notify, shutdown: &CancellationToken) {
    let Ok(mut rec) = shared.store.get_job(id) else {
        return;
    };
    let Some(vm) = rec.vm.clone() else { return };
    if rec.vm_destroyed {
        return;
    }
    let provisioned = shared.store.is_provisioned(id).unwrap_or(false);
    // A guest told to stop gets its grace to upload artifacts and report.
    if matches!(rec.state, JobState::Cancelled | JobState::Timeout) && provisioned {
        let until = rec.completed_at.unwrap_or_else(now_ms)
            + shared.settings.cancel_grace.as_millis() as i64;
        while rec.result.is_none() && now_ms() < until {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
                _ = tokio::time::sleep_until(instant_at(until)) => {}
            }
            match shared.store.get_job(id) {
                Ok(r) => rec = r,
                Err(_) => return,
            }
        }
    }
    if keeps_vm(&rec, provisioned) {
        tracing::info!(job_id = id, vm = %vm.id, "persistent job: VM kept");
        return;
    }
    destroy(shared, id, &vm, shutdown).await;
}

/// Destroys the VM and records it, retrying a few times. Returns whether
/// the VM is gone.
async fn destroy(shared: &Shared, id: &str, vm: &VmRef, stop: &CancellationToken) -> bool {
    let Some(provider) = &shared.provider else {
        return false;
    };
    for attempt in 1..=DESTROY_ATTEMPTS {
        match provider.destroy(vm).await {
            Ok(()) => {
                if let Err(e) = shared.store.mark_vm_destroyed(id) {
                    tracing::error!(job_id = id, error = %e, "cannot record the destroyed VM");
                }
                shared.metrics.count_destroyed();
                tracing::info!(job_id = id, vm = %vm.id, "VM destroyed");
                return true;
            }
            Err(e) => {
                tracing::warn!(job_id = id, vm = %vm.id, attempt, error = %e, "destroying the VM failed");
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_secs(1 << attempt)) => {}
                }
            }
        }
    }
    tracing::error!(job_id = id, vm = %vm.id, "VM not destroyed; cleanup retries later");
    false
}

/// The tokio instant of a wall-clock time in unix milliseconds.
fn instant_at(ms: i64) -> tokio::time::Instant {
    let delta = ms - now_ms();
    let now = tokio::time::Instant::now();
    if delta <= 0 {
        now
    } else {
        now + Duration::from_millis(delta as u64)
    }
}
