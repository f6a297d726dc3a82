//! The scheduler and housekeeping loops.
//!
//! The scheduler starts the oldest `pending` jobs in the store while both
//! limits allow (`DELEGATE_MAX_RUNNING` VMs alive, `DELEGATE_MAX_PROVISIONING`
//! being provisioned). It reads the store rather than a queue in memory, so
//! jobs inserted by another process or left by a previous run start too.
//!
//! Housekeeping runs every second for what must be prompt (cancel flags set
//! by other processes, pending jobs past their deadline, kept VMs released
//! or past their idle time-to-live) and every
//! `CLEANUP_INTERVAL_SECONDS` for the rest (VMs whose destroy failed,
//! retention).

use std::time::Duration;

use delegate_proto::JobState;
use delegate_proto::outcome::ErrorKind;

use super::Engine;
use super::driver::{self, Resume};
use super::reconcile::{Pass, reconcile};
use crate::clock::now_ms;
use crate::jobs::change::JobChangeKind;
use crate::store::StoreError;

/// How often the scheduler looks at the store without being woken.
const SCHEDULER_POLL: Duration = Duration::from_secs(1);
/// Period of the prompt housekeeping.
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);

/// Starts the scheduler and housekeeping tasks.
pub(super) fn spawn(engine: &Engine) {
    let e = engine.clone();
    engine.tracker.spawn(async move { scheduler(e).await });
    let e = engine.clone();
    engine.tracker.spawn(async move { housekeeping(e).await });
}

async fn scheduler(engine: Engine) {
    loop {
        schedule_once(&engine).await;
        tokio::select! {
            _ = engine.shutdown.cancelled() => break,
            _ = engine.shared.wake.notified() => {}
            _ = tokio::time::sleep(SCHEDULER_POLL) => {}
        }
    }
}

/// Starts as many pending jobs as the limits allow, oldest first.
async fn schedule_once(engine: &Engine) {
    let settings = &engine.shared.settings;
    let (alive, provisioning) = {
        let runs = engine.shared.runs();
        (runs.len(), runs.values().filter(|r| r.provisioning).count())
    };
    let free = settings
        .max_running
        .saturating_sub(alive)
        .min(settings.max_provisioning.saturating_sub(provisioning));
    if free == 0 {
        return;
    }
    let pending = match engine.store(move |s| s.pending_ids(free + alive)).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "scheduler cannot read pending jobs");
            return;
        }
    };
    let mut started = 0;
    for id in pending {
        if started == free {
            break;
        }
        if driver::launch(engine, &id, Resume::Fresh) {
            started += 1;
        }
    }
}

async fn housekeeping(engine: Engine) {
    let cleanup_every = engine.shared.settings.cleanup_interval;
    let mut last_cleanup = tokio::time::Instant::now();
    // Reconciliation destroys VMs one by one (tens of seconds each on a
    // busy cluster): it runs beside the loop, one pass at a time, so the
    // prompt checks below keep their one-second beat.
    let mut reconciling: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = engine.shutdown.cancelled() => break,
            _ = tokio::time::sleep(HOUSEKEEPING_TICK) => {}
        }
        let e = engine.clone();
        if let Err(e) = engine.store(move |_| prompt_checks(&e)).await {
            tracing::error!(error = %e, "housekeeping failed");
        }
        if last_cleanup.elapsed() >= cleanup_every {
            last_cleanup = tokio::time::Instant::now();
            let e = engine.clone();
            if let Err(e) = engine.store(move |_| periodic_cleanup(&e)).await {
                tracing::error!(error = %e, "cleanup failed");
            }
            if reconciling.as_ref().is_none_or(|t| t.is_finished()) {
                let e = engine.clone();
                reconciling = Some(tokio::spawn(async move {
                    if let Err(e) = reconcile(&e, Pass::Periodic).await {
                        tracing::error!(error = %e, "reconciling the provider's VMs failed");
                    }
                }));
            }
        }
    }
    if let Some(pass) = reconciling {
        pass.abort();
    }
}

/// The one-second checks; blocking (run inside [`Engine::store`]).
fn prompt_checks(engine: &Engine) -> Result<(), StoreError> {
    let shared = &engine.shared;
    // Cancels flagged by another process: the state is already final; stop
    // the driver's provisioning and let it clean up.
    for id in shared.store.take_cancel_requests()? {
        tracing::info!(job_id = %id, "cancel requested by another process");
        shared.notify(&id, JobChangeKind::State);
        shared.stop_run(&id);
    }
    let why = format!(
        "the queue timeout of {} s (DELEGATE_QUEUE_TIMEOUT_SECONDS) passed while the job \
         waited for a free VM slot",
        shared.settings.queue_timeout.as_secs()
    );
    for id in shared.store.pending_past_deadline(now_ms())? {
        shared.transition_blocking(&id, JobState::Timeout, Some((&why, ErrorKind::Timeout)))?;
    }
    super::turns::end_due(engine)
}

/// The slower clean-up; blocking (run inside [`Engine::store`]).
fn periodic_cleanup(engine: &Engine) -> Result<(), StoreError> {
    let shared = &engine.shared;
    // VMs of final jobs that no driver is cleaning up (a destroy that kept
    // failing, or a job that ended in another process).
    for id in shared.store.final_ids_with_vm()? {
        driver::launch(engine, &id, Resume::Cleanup);
    }
    // Back once space returns, for the next full disk.
    if let Err(e) = shared.store.keep_reserve() {
        tracing::warn!(error = %e, "cannot restore the data directory's space reserve");
    }
    if let Some(keep) = shared.settings.retention {
        let before = now_ms() - keep.as_millis() as i64;
        let pruned = shared.store.prune_finished(before)?;
        if !pruned.is_empty() {
            tracing::info!(count = pruned.len(), "pruned finished jobs past retention");
        }
    }
    Ok(())
}
