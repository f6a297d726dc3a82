//! Which state a job goes to: every such decision of the host, each made
//! inside the store's job transaction ([`Store::with_job`]) so the row
//! cannot change between the decision and the write, and each step taken
//! through proto's transition function (`step`).
//!
//! These functions change the store only; telling the rest of the process
//! (change notices, drivers, metrics) is `state::Shared`'s job.

use delegate_proto::outcome::ErrorKind;
use delegate_proto::{Event, JobResult, JobState};

use crate::model::{JobRecord, StoredResult, UnixMs};
use crate::store::{EventLimits, EventsApplied, JobTx, Store, StoreError};

/// What storing a result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultApplied {
    /// Stored; the job went to this final state.
    Final(JobState),
    /// Stored after the job had already ended (cancel grace); state unchanged.
    Late(JobState),
    /// A result was already stored; nothing changed.
    Duplicate(JobState),
    /// The job ended too long ago to take a result; nothing changed.
    Stale(JobState),
}

/// One step `from → to`, if proto's transition function allows it; a
/// refusal is [`StoreError::Transition`] and rolls the transaction back.
fn step(
    job: &JobTx<'_>,
    from: JobState,
    to: JobState,
    reason: Option<(&str, ErrorKind)>,
) -> Result<(), StoreError> {
    from.transition(to)
        .map_err(|source| StoreError::Transition {
            job_id: job.id().to_string(),
            source,
        })?;
    job.set_state(from, to, reason)
}

/// Moves a job to `to` from whatever state it is in, if proto's transition
/// function allows it; records why when a reason is given. A refusal is
/// [`StoreError::Transition`] and changes nothing.
pub fn transition(
    store: &Store,
    id: &str,
    to: JobState,
    reason: Option<(&str, ErrorKind)>,
    now: UnixMs,
) -> Result<JobRecord, StoreError> {
    store.with_job(id, now, |job| step(job, job.view()?.state, to, reason))?;
    store.get_job(id)
}

/// Starts a pending job's provisioning: `provisioning` from now on, and
/// its deadline `timeout_ms` from now (until then the deadline was the
/// queue's: time spent waiting for a slot does not count against the job's
/// own timeout). A refusal (the job ended while pending) is
/// [`StoreError::Transition`] and changes nothing.
pub fn start_provisioning(
    store: &Store,
    id: &str,
    timeout_ms: i64,
    now: UnixMs,
) -> Result<JobRecord, StoreError> {
    store.with_job(id, now, |job| {
        step(job, job.view()?.state, JobState::Provisioning, None)?;
        job.set_deadline(now.saturating_add(timeout_ms))
    })?;
    store.get_job(id)
}

/// Cancels a job from a process that does not run the engine: the state
/// becomes `cancelled` at once and the job is flagged for the engine, which
/// polls for the flag and destroys the VM. Returns the record and whether
/// it changed (a final job stays as it is).
pub fn request_cancel(
    store: &Store,
    id: &str,
    now: UnixMs,
) -> Result<(JobRecord, bool), StoreError> {
    let changed = store.with_job(id, now, |job| {
        let reason = Some(("cancelled by request", ErrorKind::Cancelled));
        match step(job, job.view()?.state, JobState::Cancelled, reason) {
            Ok(()) => job.flag_cancel().map(|()| true),
            Err(StoreError::Transition { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    })?;
    Ok((store.get_job(id)?, changed))
}

/// Fails a live job whose VM its provider says is gone, with the
/// provider's reason, as a lost guest. A guest that posted its result and
/// then exited is not lost: a job with its result, or final already, is
/// left as it is. Returns whether the job failed.
pub fn vm_gone(store: &Store, id: &str, reason: &str, now: UnixMs) -> Result<bool, StoreError> {
    store.with_job(id, now, |job| {
        let view = job.view()?;
        if view.has_result || view.state.is_final() {
            return Ok(false);
        }
        step(
            job,
            view.state,
            JobState::Failed,
            Some((reason, ErrorKind::Lost)),
        )?;
        Ok(true)
    })
}

/// Takes the guest's result. A live job becomes final with the result's
/// state (a job still `provisioning` runs first: its guest evidently ran);
/// a job that already ended keeps its state and takes the result only
/// until `completed_at + grace_ms`.
pub fn store_result(
    store: &Store,
    id: &str,
    result: &JobResult,
    now: UnixMs,
    grace_ms: i64,
) -> Result<ResultApplied, StoreError> {
    let stored = StoredResult {
        exit_code: result.exit_code,
        signal: result.signal.clone(),
        duration_ms: result.duration_ms,
        output: result.output.clone(),
        agent_result: result.agent_result.clone(),
        error: result.error.clone(),
        patch: result.patch.clone(),
        turn_patch: result.turn_patch.clone(),
    };
    store.with_job(id, now, |job| {
        let view = job.view()?;
        if view.has_result {
            return Ok(ResultApplied::Duplicate(view.state));
        }
        if view.state.is_final() {
            let until = view.completed_at.unwrap_or(now).saturating_add(grace_ms);
            if now <= until {
                job.save_result(&stored)?;
                return Ok(ResultApplied::Late(view.state));
            }
            return Ok(ResultApplied::Stale(view.state));
        }
        let mut from = view.state;
        if from == JobState::Provisioning {
            step(job, from, JobState::Running, None)?;
            from = JobState::Running;
        }
        let to = result.status.job_state();
        let reason = match to {
            JobState::Success => None,
            _ => Some((
                result
                    .error
                    .as_deref()
                    .unwrap_or("the agent did not succeed"),
                result.error_kind.unwrap_or(match to {
                    JobState::Timeout => ErrorKind::Timeout,
                    JobState::Cancelled => ErrorKind::Cancelled,
                    _ => ErrorKind::Exit,
                }),
            )),
        };
        step(job, from, to, reason)?;
        job.save_result(&stored)?;
        Ok(ResultApplied::Final(to))
    })
}

/// Stores a batch of guest events ([`Store::apply_events`]); a job still
/// `provisioning` whose guest sent anything new is running (it fetched its
/// manifest before a restart, or the fetch raced this batch).
pub fn apply_events(
    store: &Store,
    id: &str,
    events: &[Event],
    limits: EventLimits,
    now: UnixMs,
) -> Result<EventsApplied, StoreError> {
    store.apply_events(id, events, limits, now, |job, out| {
        if out.applied > 0 && out.state == Some(JobState::Provisioning) {
            step(job, JobState::Provisioning, JobState::Running, None)?;
            out.state = Some(JobState::Running);
            out.state_changed = true;
        }
        Ok(())
    })
}
