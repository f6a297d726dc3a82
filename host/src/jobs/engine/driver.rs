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
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Engine, gone, pool};
use crate::clock::now_ms;
use crate::jobs::state::Run;
use crate::jobs::{resources, token};
use crate::model::JobRecord;
use crate::provider::{ProviderError, ProvisionRequest, VmRef};
use crate::retry::RetryPolicy;

/// Provisioning when the provider says a retry may work: 3 attempts,
/// waiting about 2 s, then 4 s.
const PROVISION_RETRY: RetryPolicy =
    RetryPolicy::new(3, Duration::from_secs(2), Duration::from_secs(8));
/// Destroying before housekeeping takes over: 4 attempts, waiting about
/// 2, 4 and 8 s.
const DESTROY_RETRY: RetryPolicy =
    RetryPolicy::new(4, Duration::from_secs(2), Duration::from_secs(16));

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
pub(super) fn launch(engine: &Engine, job_id: &str, resume: Resume) -> bool {
    if engine.shutdown.is_cancelled() {
        return false;
    }
    let (stop, changed) = {
        let mut runs = engine.shared.runs();
        if runs.contains_key(job_id) {
            return false;
        }
        let stop = engine.shutdown.child_token();
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
    let e = engine.clone();
    let id = job_id.to_string();
    engine.tracker.spawn(async move {
        drive(&e, &id, &stop, &changed, resume).await;
        e.shared.runs().remove(&id);
        e.shared.wake.notify_one();
    });
    true
}

async fn drive(
    engine: &Engine,
    id: &str,
    stop: &CancellationToken,
    changed: &Notify,
    resume: Resume,
) {
    let shutdown = &engine.shutdown;
    match resume {
        Resume::Fresh => match engine.shared.start_provisioning(id).await {
            Ok(true) => provision(engine, id, stop).await,
            // Final already (cancelled or timed out while pending).
            Ok(false) => return,
            Err(e) => {
                tracing::error!(job_id = id, error = %e, "cannot start the job");
                return;
            }
        },
        Resume::Reprovision => {
            if let Ok(rec) = engine.job(id).await
                && let Some(vm) = rec.vm
                && !rec.vm_destroyed
            {
                tracing::info!(job_id = id, vm = %vm.id, "destroying the VM of an interrupted provisioning");
                if !destroy(engine, id, &vm, shutdown).await {
                    return;
                }
                let jid = id.to_string();
                if let Err(e) = engine.store(move |s| s.clear_vm(&jid)).await {
                    tracing::error!(job_id = id, error = %e, "cannot clear the old VM");
                }
            }
            provision(engine, id, stop).await;
        }
        Resume::Attached | Resume::Cleanup => {}
    }
    if let Some(run) = engine.shared.runs().get_mut(id) {
        run.provisioning = false;
    }
    engine.shared.wake.notify_one();
    if shutdown.is_cancelled() {
        return;
    }
    let watched = watch(engine, id, changed, shutdown).await;
    if shutdown.is_cancelled() || watched == Watched::GaveUp {
        return;
    }
    if let Ok(rec) = engine.job(id).await
        && let Some(session_id) = &rec.session_id
    {
        // A turn has no VM of its own (see `turns`).
        super::turns::after_turn(engine, id, session_id).await;
        return;
    }
    cleanup(engine, id, changed, shutdown).await;
}

/// The job's own timeout, which its deadline counts from provisioning on.
fn timeout_secs(engine: &Engine, rec: &JobRecord) -> u64 {
    rec.manifest
        .timeout_or(engine.shared.settings.default_timeout.as_secs())
}

/// Ends the job with `why`, retrying with backoff while the store fails
/// (see `jobs::full`). Returns whether the end is on record.
async fn fail(engine: &Engine, id: &str, to: JobState, why: &str, kind: ErrorKind) -> bool {
    engine.shared.record_end(id, to, why, kind).await
}

/// Provisions the job's VM; on return the job either has a VM with its
/// bootstrap, or is final, or provisioning was abandoned (cancel, shutdown).
async fn provision(engine: &Engine, id: &str, stop: &CancellationToken) {
    let provider = &engine.provider;
    let rec = match engine.job(id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(job_id = id, error = %e, "cannot read the job to provision");
            return;
        }
    };
    if let Some(session_id) = &rec.session_id {
        // A follow-up turn runs in its session's kept VM.
        super::turns::attach(engine, id, session_id).await;
        return;
    }
    let deadline = instant_at(rec.deadline_at);
    let isolation = provider.isolation();
    for attempt in 1..=PROVISION_RETRY.attempts {
        let (token, hash) = match token::new_token() {
            Ok(t) => t,
            Err(e) => {
                let why = format!("cannot make a job token: {e}");
                {
                    fail(engine, id, JobState::Failed, &why, ErrorKind::Internal).await;
                    return;
                }
            }
        };
        let jid = id.to_string();
        if let Err(e) = engine.store(move |s| s.set_token_hash(&jid, &hash)).await {
            let why = format!("cannot store the job token: {e}");
            {
                fail(engine, id, JobState::Failed, &why, ErrorKind::Internal).await;
                return;
            }
        }
        let (size, template) = resources::resolve(
            &rec.manifest,
            &resources::VmDefaults::from_settings(&engine.shared.settings),
        );
        let req = ProvisionRequest {
            job_id: id.to_string(),
            template,
            size,
            bootstrap: Bootstrap {
                v: BOOTSTRAP_VERSION,
                job_id: id.to_string(),
                callback_url: engine.shared.settings.callback_url.clone(),
                token,
                egress_url: None,
            },
            egress_url: engine
                .shared
                .settings
                .egress
                .listen
                .and(engine.shared.settings.egress.url.clone()),
            deadline_ms: rec.deadline_at,
        };
        // The VM is recorded before the provider goes on, so a crash right
        // after still finds it: the one store write made inline on a
        // runtime thread (see the store's module doc).
        let store = engine.shared.store.clone();
        let jid = id.to_string();
        let on_created = move |vm: VmRef| {
            tracing::info!(job_id = %jid, vm = %vm.id, "VM created");
            if let Err(e) = store.set_vm(&jid, &vm, isolation) {
                tracing::error!(job_id = %jid, error = %e, "cannot record the new VM");
            }
        };
        let started = tokio::time::Instant::now();
        tracing::info!(job_id = id, attempt, "provisioning");
        // A pool VM if one fits and is ready, else a cold start.
        let start = async {
            if let Some(pool) = &engine.pool
                && let pool::Claim::Hit(vm) = pool::claim(engine, pool, &req).await
            {
                return Ok((vm, true));
            }
            provider
                .provision(req, &on_created)
                .await
                .map(|vm| (vm, false))
        };
        let outcome = tokio::select! {
            r = start => r,
            _ = stop.cancelled() => {
                tracing::info!(job_id = id, "provisioning abandoned");
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let why = format!(
                    "the job's timeout of {} s passed while its VM was being provisioned",
                    timeout_secs(engine, &rec)
                );
                fail(engine, id, JobState::Timeout, &why, ErrorKind::Timeout).await;
                return;
            }
        };
        match outcome {
            Ok((vm, warm)) => {
                let now = now_ms();
                let took_ms = started.elapsed().as_millis() as u64;
                let (jid, created) = (id.to_string(), vm.clone());
                let warnings = provider.warnings(&vm);
                for w in &warnings {
                    tracing::warn!(job_id = id, vm = %vm.id, "{w}");
                }
                let saved = engine
                    .store(move |s| {
                        s.set_vm(&jid, &created, isolation)?;
                        s.set_warnings(&jid, &warnings)?;
                        s.mark_provisioned(&jid, now)?;
                        s.set_vm_start(&jid, warm, took_ms)
                    })
                    .await;
                if let Err(e) = saved {
                    tracing::error!(job_id = id, error = %e, "cannot record the provisioned VM");
                }
                let metrics = &engine.shared.metrics;
                metrics.observe_provisioning(started.elapsed().as_secs_f64());
                metrics.count_start(warm);
                tracing::info!(job_id = id, vm = %vm.id, warm, seconds = started.elapsed().as_secs_f64(), "provisioned");
                return;
            }
            Err(ProviderError::Provision {
                message,
                retryable: true,
            }) if attempt < PROVISION_RETRY.attempts => {
                tracing::warn!(job_id = id, attempt, %message, "provisioning failed; retrying");
                if let Ok(r) = engine.job(id).await
                    && let Some(vm) = r.vm
                {
                    if !destroy(engine, id, &vm, stop).await {
                        return;
                    }
                    let jid = id.to_string();
                    let _ = engine.store(move |s| s.clear_vm(&jid)).await;
                }
                let backoff = PROVISION_RETRY.delay(attempt);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            Err(e) => {
                let why = e.to_string();
                fail(engine, id, JobState::Failed, &why, ErrorKind::Provision).await;
                return;
            }
        }
    }
}

/// How watching a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watched {
    /// The job is final, or watching stopped (shutdown, unreadable job).
    Done,
    /// Its end could not be recorded; its VM was destroyed ([`give_up`]).
    GaveUp,
}

/// Waits until the job is final, ending it when its deadline passes, its
/// heartbeat lease runs out or its provider says the VM is gone.
async fn watch(
    engine: &Engine,
    id: &str,
    changed: &Notify,
    shutdown: &CancellationToken,
) -> Watched {
    let lease_ms = engine.shared.settings.heartbeat_threshold.as_millis() as i64;
    // A guest gets a full lease from when this driver began watching, so a
    // host restart never counts its own downtime against the guest.
    let base = now_ms();
    let vm = engine
        .job(id)
        .await
        .ok()
        .and_then(|r| r.vm.filter(|_| !r.vm_destroyed));
    let mut gone = std::pin::pin!(gone::gone(engine, id, vm).fuse());
    loop {
        let rec = match engine.job(id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(job_id = id, error = %e, "cannot read the job");
                return Watched::Done;
            }
        };
        if rec.state.is_final() {
            return Watched::Done;
        }
        let lease_end = rec.last_event_at.unwrap_or(0).max(base) + lease_ms;
        let wake_at = rec.deadline_at.min(lease_end);
        tokio::select! {
            _ = shutdown.cancelled() => return Watched::Done,
            _ = changed.notified() => continue,
            reason = &mut gone => {
                if !gone::fail(engine, id, &reason).await {
                    give_up(engine, id, &rec, shutdown).await;
                    return Watched::GaveUp;
                }
                continue;
            }
            _ = tokio::time::sleep_until(instant_at(wake_at)) => {}
        }
        let now = now_ms();
        if now >= rec.deadline_at {
            let why = format!(
                "the job ran past its timeout of {} s",
                timeout_secs(engine, &rec)
            );
            if !fail(engine, id, JobState::Timeout, &why, ErrorKind::Timeout).await {
                give_up(engine, id, &rec, shutdown).await;
                return Watched::GaveUp;
            }
            continue;
        }
        let fresh = engine.job(id).await.ok();
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
            if !fail(engine, id, JobState::Failed, &why, ErrorKind::Lost).await {
                give_up(engine, id, &rec, shutdown).await;
                return Watched::GaveUp;
            }
        }
    }
}

/// The job's end could not be recorded even after retries (the store
/// fails): its VM is destroyed anyway, so nothing runs on unwatched, and
/// the driver stops instead of trying again at once (it once retried
/// about 650 times a second). The job stays as stored; the next start's
/// recovery ends it.
async fn give_up(engine: &Engine, id: &str, rec: &JobRecord, shutdown: &CancellationToken) {
    if let Some(vm) = &rec.vm
        && !rec.vm_destroyed
    {
        destroy(engine, id, vm, shutdown).await;
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

async fn cleanup(engine: &Engine, id: &str, changed: &Notify, shutdown: &CancellationToken) {
    let Ok(mut rec) = engine.job(id).await else {
        return;
    };
    let Some(vm) = rec.vm.clone() else { return };
    if rec.vm_destroyed {
        return;
    }
    let jid = id.to_string();
    let provisioned = engine
        .store(move |s| s.is_provisioned(&jid))
        .await
        .unwrap_or(false);
    // A guest told to stop gets its grace to upload artifacts and report.
    if matches!(rec.state, JobState::Cancelled | JobState::Timeout) && provisioned {
        let until = rec.completed_at.unwrap_or_else(now_ms)
            + engine.shared.settings.cancel_grace.as_millis() as i64;
        while rec.result.is_none() && now_ms() < until {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
                _ = tokio::time::sleep_until(instant_at(until)) => {}
            }
            match engine.job(id).await {
                Ok(r) => rec = r,
                Err(_) => return,
            }
        }
    }
    if keeps_vm(&rec, provisioned) && super::turns::still_kept(engine, id).await {
        tracing::info!(job_id = id, vm = %vm.id, "persistent job: VM kept");
        return;
    }
    destroy(engine, id, &vm, shutdown).await;
}

/// Destroys the VM and records it, retrying a few times. Returns whether
/// the VM is gone.
async fn destroy(engine: &Engine, id: &str, vm: &VmRef, stop: &CancellationToken) -> bool {
    for attempt in 1..=DESTROY_RETRY.attempts {
        match engine.provider.destroy(vm).await {
            Ok(()) => {
                let jid = id.to_string();
                let gone = vm.clone();
                let marked = engine
                    .store(move |s| {
                        s.mark_vm_destroyed(&jid)?;
                        // A pool VM's row goes with it (none for a cold VM).
                        s.pool_forget(&gone)
                    })
                    .await;
                if let Err(e) = marked {
                    tracing::error!(job_id = id, error = %e, "cannot record the destroyed VM");
                }
                engine.shared.metrics.count_destroyed();
                tracing::info!(job_id = id, vm = %vm.id, "VM destroyed");
                return true;
            }
            Err(e) => {
                tracing::warn!(job_id = id, vm = %vm.id, attempt, error = %e, "destroying the VM failed");
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(DESTROY_RETRY.delay(attempt)) => {}
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
