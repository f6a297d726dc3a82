//! Follow-up turns of persistent jobs, as the manager offers them:
//! `continue_job` (a new turn in the session's kept VM), `release_job` (end
//! the kept VM now), what status and listings say about a session, and the
//! callback API's `GET turns/next`, where the guest in a kept VM waits for
//! its next turn. Whether a VM is kept is decided by `session::keep`.

use std::time::Duration;

use delegate_proto::api::MAX_CONTROL_WAIT_SECS;
use delegate_proto::turn::{NextTurn, NextTurnAction, TurnSpec};
use delegate_proto::{JobState, Lifecycle};

use super::change::JobChangeKind;
use super::error::JobError;
use super::guest::GuestError;
use super::manager::JobManager;
use super::session::{self, Keep};
use super::token;
use crate::clock::now_ms;
use crate::model::JobRecord;
use crate::store::{NewTurn, StoreError};

/// How often a held `turns/next` looks at the store again, for turns
/// started by another process (whose notices this one never gets).
const NEXT_TURN_RECHECK: Duration = Duration::from_millis(500);

/// What `release_job` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Released {
    /// The session's first job.
    pub session_id: String,
    /// The turn that was running and was cancelled, if one was.
    pub cancelled_turn: Option<String>,
}

impl JobManager {
    /// The session of `job_id` (any of its turns): its jobs, first turn
    /// first, and whether its VM is kept.
    pub async fn session(&self, job_id: &str) -> Result<(Vec<JobRecord>, Keep), JobError> {
        let rec = self.get_async(job_id).await?;
        let sid = rec.session().to_string();
        let jobs = self.store().run(move |s| s.session_jobs(&sid)).await?;
        let keep = session::keep(&jobs, self.settings().persistent_ttl, now_ms());
        Ok((jobs, keep))
    }

    /// [`JobManager::session`] for blocking code (views of listings).
    pub fn session_blocking(&self, rec: &JobRecord) -> Result<(Vec<JobRecord>, Keep), JobError> {
        let jobs = self.store().session_jobs(rec.session())?;
        let keep = session::keep(&jobs, self.settings().persistent_ttl, now_ms());
        Ok((jobs, keep))
    }

    /// Starts a follow-up turn of `job_id`'s session with `task`, in the
    /// same VM and workspace; `max_budget_usd` raises (or lowers) a
    /// `claude` job's budget within the host's ceiling. Refused unless the
    /// job is persistent, its VM is kept and no turn runs.
    pub async fn continue_job(
        &self,
        job_id: &str,
        task: &str,
        max_budget_usd: Option<f64>,
    ) -> Result<JobRecord, JobError> {
        let (jobs, keep) = self.session(job_id).await?;
        let first = &jobs[0];
        let last = &jobs[jobs.len() - 1];
        match keep {
            Keep::Until(_) => {}
            Keep::NotPersistent => {
                return Err(JobError::Session(format!(
                    "job {} is not persistent (lifecycle {}): its VM ended with it, so there \
                     is nothing to continue; submit it again with \"lifecycle\": \"persistent\" \
                     to continue it later",
                    first.id,
                    lifecycle_name(first.manifest.lifecycle())
                )));
            }
            Keep::InUse { job_id, turn } => {
                return Err(JobError::Session(format!(
                    "turn {turn} of job {} (job {job_id}) has not finished; wait for it \
                     (wait_for_job) and continue then",
                    first.id
                )));
            }
            Keep::Gone(why) => {
                return Err(JobError::Session(format!(
                    "job {} cannot be continued: {why}; submit a new job",
                    first.id
                )));
            }
        }
        let mut manifest = last.manifest.clone();
        manifest.task = task.to_string();
        // The workspace holds them already (and whatever the turns did to
        // them): writing them again would undo the agent's changes.
        manifest.files.clear();
        if let Some(usd) = max_budget_usd {
            manifest.agent.max_budget_usd = Some(usd);
        }
        manifest.validate()?;
        let manifest = super::intake::cap_budget(manifest, self.settings().max_budget_usd)?;
        let now = now_ms();
        let turn = NewTurn {
            id: uuid::Uuid::new_v4().to_string(),
            session_id: first.id.clone(),
            turn: last.turn + 1,
            manifest,
            created_at: now,
            deadline_at: now.saturating_add(self.settings().queue_timeout.as_millis() as i64),
        };
        let rec = self
            .store()
            .run(move |s| s.insert_turn(&turn))
            .await
            .map_err(|e| match e {
                StoreError::TurnTaken { session_id, turn } => JobError::Session(format!(
                    "turn {turn} of job {session_id} was just started by another client; \
                     wait for it and continue then"
                )),
                e => JobError::Store(e),
            })?;
        tracing::info!(job_id = %rec.id, session = %first.id, turn = rec.turn, "follow-up turn submitted");
        self.shared.notify(&rec.id, JobChangeKind::State);
        self.shared.wake.notify_one();
        Ok(rec)
    }

    /// Ends the kept VM of `job_id`'s session now (cancelling a turn that
    /// runs in it). Refused when there is no kept VM.
    pub async fn release_job(&self, job_id: &str) -> Result<Released, JobError> {
        let (jobs, keep) = self.session(job_id).await?;
        let first = jobs[0].id.clone();
        let cancelled_turn = match keep {
            Keep::Until(_) => None,
            Keep::InUse { job_id, .. } => {
                self.cancel(&job_id).await?;
                Some(job_id)
            }
            Keep::NotPersistent => {
                return Err(JobError::Session(format!(
                    "job {first} is not persistent: its VM is not kept, so there is nothing \
                     to release"
                )));
            }
            Keep::Gone(why) => {
                return Err(JobError::Session(format!(
                    "job {first} has no kept VM to release: {why}"
                )));
            }
        };
        let sid = first.clone();
        self.store()
            .run(move |s| s.release_session(&sid, now_ms()))
            .await?;
        tracing::info!(session = %first, "kept VM released");
        self.shared.notify(&first, JobChangeKind::State);
        self.shared.wake.notify_one();
        Ok(Released {
            session_id: first,
            cancelled_turn,
        })
    }

    /// What a turn's `JobSpec` says about it; none for a first job.
    pub(super) async fn turn_spec(&self, rec: &JobRecord) -> Result<Option<TurnSpec>, GuestError> {
        let Some(sid) = rec.session_id.clone() else {
            return Ok(None);
        };
        let number = rec.turn;
        let jobs = self.store().run(move |s| s.session_jobs(&sid)).await?;
        let before: Vec<JobRecord> = jobs.into_iter().filter(|r| r.turn < number).collect();
        Ok(Some(TurnSpec {
            session_id: rec.session().to_string(),
            number,
            resume_session_id: session::resume_session_id(&before),
        }))
    }

    /// `GET turns/next`: held until a turn after `after` is ready for the
    /// guest in the session's kept VM (`run`), the VM is no longer kept
    /// (`release`), or `wait` passes (`wait`). Authorized by the session's
    /// token, which outlives its first job's result while the VM is kept.
    pub async fn guest_next_turn(
        &self,
        session_id: &str,
        bearer: Option<&str>,
        after: u32,
        wait: Duration,
    ) -> Result<NextTurn, GuestError> {
        let bearer = bearer.ok_or(GuestError::Unauthorized)?;
        if !delegate_proto::api::is_valid_job_id(session_id) {
            return Err(GuestError::Unauthorized);
        }
        let sid = session_id.to_string();
        let view = self.store().run(move |s| s.auth_view(&sid)).await?;
        if !token::matches(bearer, &view.token_hash) {
            return Err(GuestError::Unauthorized);
        }
        // One held request per session, under the control polls' cap.
        let slot = self
            .shared
            .control
            .enter(&format!("{session_id}/turns"))
            .map_err(|e| GuestError::Busy(e.to_string()))?;
        let deadline =
            tokio::time::Instant::now() + wait.min(Duration::from_secs(MAX_CONTROL_WAIT_SECS));
        let mut changes = self.shared.subscribe();
        loop {
            let sid = session_id.to_string();
            let jobs = self.store().run(move |s| s.session_jobs(&sid)).await?;
            if jobs[0].session_id.is_some() {
                // A turn's id: only the first job names a session.
                return Err(GuestError::Unauthorized);
            }
            let ready = jobs.iter().find(|r| {
                r.turn > after && matches!(r.state, JobState::Provisioning | JobState::Running)
            });
            if let Some(turn) = ready {
                return Ok(NextTurn {
                    action: NextTurnAction::Run,
                    job_id: Some(turn.id.clone()),
                    turn: Some(turn.turn),
                    kept_until_ms: None,
                });
            }
            let keep = session::keep(&jobs, self.settings().persistent_ttl, now_ms());
            if !keep.kept() {
                return Ok(answer(NextTurnAction::Release));
            }
            let wait = NextTurn {
                kept_until_ms: match keep {
                    Keep::Until(t) => u64::try_from(t).ok(),
                    _ => None,
                },
                ..answer(NextTurnAction::Wait)
            };
            tokio::select! {
                biased;
                _ = slot.ended() => return Ok(wait),
                _ = tokio::time::sleep_until(deadline) => return Ok(wait),
                _ = any_change(&mut changes) => {}
                _ = tokio::time::sleep(NEXT_TURN_RECHECK) => {}
            }
        }
    }
}

/// Resolves on any notice (or notices lost to lag); never once the
/// sender is gone, so a closed channel cannot make the wait spin.
async fn any_change(changes: &mut tokio::sync::broadcast::Receiver<super::change::JobChange>) {
    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = changes.recv().await {
        std::future::pending::<()>().await;
    }
}

fn answer(action: NextTurnAction) -> NextTurn {
    NextTurn {
        action,
        job_id: None,
        turn: None,
        kept_until_ms: None,
    }
}

fn lifecycle_name(l: Lifecycle) -> &'static str {
    match l {
        Lifecycle::Ephemeral => "ephemeral",
        Lifecycle::Persistent => "persistent",
    }
}
