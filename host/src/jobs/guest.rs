//! What the callback API asks of the manager on a guest's behalf: checking
//! its token, handing out its job, and taking its events, artifacts and
//! result. Every operation re-reads the store, so a late call after a
//! cancel or a timeout finds the job final and changes nothing.

use delegate_proto::event_check::BatchError;
use std::time::Duration;

use delegate_proto::api::{
    ArtifactsAck, ControlAction, ControlAnswer, JobSpec, PROTOCOL_VERSION, ResultAck,
};
use delegate_proto::{EventBatch, EventsAck, JobResult, JobState};
use tokio::sync::broadcast;

use super::change::{JobChange, JobChangeKind};
use super::manager::JobManager;
use super::rules::{self, ResultApplied};
use super::token;
use crate::clock::now_ms;
use crate::store::{ArchiveCheck, ArtifactError, EventLimits, StagedArchive, StoreError};

/// Most files in one artifact archive.
const MAX_ARTIFACT_ENTRIES: usize = 100_000;
/// Most phase, progress and dropped events kept per job (the progress
/// history); the job row keeps the latest phase and progress beyond it.
/// With proto's caps on messages and reasons, at most a few MB per job.
const MAX_EVENT_ROWS: u64 = 1000;
/// Most bytes of the host's own notes (lost-bytes markers, dropped-event
/// lines, the log-limit note) in a job's combined log, on top of its
/// output: a guest decides how many notes there are, so they are capped
/// like output is.
const MAX_LOG_NOTE_BYTES: u64 = 64 * 1024;

/// How often a held control request re-reads the job, besides the change
/// notices: a cancel made by another process (the CLI beside a server)
/// changes the store only, and the engine passes it on within a second.
const CONTROL_RECHECK: Duration = Duration::from_millis(500);

/// Why a guest's request was refused; the callback API maps each to a
/// status code.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// No token, a wrong one, another job's, or an unknown job (not told
    /// apart, so a guess learns nothing).
    #[error("missing or invalid job token")]
    Unauthorized,
    /// The job is over and its token no longer accepted.
    #[error("job is {0}; it takes no more calls")]
    Final(JobState),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over a cap.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What.
        what: String,
        /// The cap.
        limit: u64,
    },
    /// The body holds more items than allowed (events, files).
    #[error("{what} is over the limit of {limit} {unit}")]
    TooMany {
        /// What.
        what: String,
        /// The cap.
        limit: u64,
        /// What the cap counts, e.g. "events".
        unit: &'static str,
    },
    /// The request speaks another protocol version (or none).
    #[error("protocol version {0:?} is not supported; this host speaks {PROTOCOL_VERSION}")]
    UnsupportedProtocol(String),
    /// The host holds as many requests of this kind as it will; ask again
    /// later.
    #[error("{0}")]
    Busy(String),
    /// The host failed.
    #[error("host error: {0}")]
    Internal(String),
}

impl From<StoreError> for GuestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => GuestError::Unauthorized,
            e => GuestError::Internal(e.to_string()),
        }
    }
}

impl JobManager {
    /// Checks a guest's bearer token for `job_id`. Valid only for its own
    /// job, and only until the job is final and its result stored, or the
    /// grace after a cancel or timeout has passed.
    pub async fn authorize_guest(
        &self,
        job_id: &str,
        token: Option<&str>,
    ) -> Result<(), GuestError> {
        let token = token.ok_or(GuestError::Unauthorized)?;
        if !delegate_proto::api::is_valid_job_id(job_id) {
            return Err(GuestError::Unauthorized);
        }
        let id = job_id.to_string();
        let view = self.shared.store.run(move |s| s.auth_view(&id)).await?;
        if !token::matches(token, &view.token_hash) {
            return Err(GuestError::Unauthorized);
        }
        if view.state.is_final() {
            let grace = self.shared.settings.cancel_grace.as_millis() as i64;
            let in_grace = view
                .completed_at
                .is_some_and(|done| now_ms() <= done.saturating_add(grace));
            if view.has_result || !in_grace {
                return Err(GuestError::Final(view.state));
            }
        }
        Ok(())
    }

    /// `GET manifest`: the job for the guest, which now runs.
    pub async fn guest_spec(&self, job_id: &str) -> Result<JobSpec, GuestError> {
        let id = job_id.to_string();
        let rec = self.shared.store.run(move |s| s.get_job(&id)).await?;
        if rec.state.is_final() {
            return Err(GuestError::Final(rec.state));
        }
        if rec.state == JobState::Provisioning {
            self.shared
                .transition(job_id, JobState::Running, None)
                .await?;
        }
        let id = job_id.to_string();
        self.shared
            .store
            .run(move |s| s.touch(&id, now_ms()))
            .await?;
        let turn = self.turn_spec(&rec).await?;
        let s = &self.shared.settings;
        let remaining_ms = (rec.deadline_at - now_ms()).max(1000);
        Ok(JobSpec {
            egress: crate::egress::spec_for(&s.egress, &rec.manifest),
            job_id: rec.id,
            manifest: rec.manifest,
            timeout_seconds: (remaining_ms / 1000) as u64,
            heartbeat_interval_seconds: s.heartbeat_interval.as_secs(),
            max_artifact_bytes: s.max_artifact_bytes,
            turn,
        })
    }

    /// `POST events`: stores what follows the highest sequence held.
    pub async fn guest_events(
        &self,
        job_id: &str,
        batch: EventBatch,
    ) -> Result<EventsAck, GuestError> {
        batch.check().map_err(|e| match e {
            BatchError::TooMany { count, limit } => GuestError::TooMany {
                what: format!("a batch of {count} events"),
                limit: limit as u64,
                unit: "events",
            },
            e @ BatchError::Field { .. } => GuestError::BadRequest(e.to_string()),
        })?;
        let limits = EventLimits {
            max_log_bytes: self.shared.settings.max_log_bytes,
            max_event_rows: MAX_EVENT_ROWS,
            max_note_bytes: MAX_LOG_NOTE_BYTES,
        };
        let id = job_id.to_string();
        let applied = self
            .shared
            .store
            .run(move |s| rules::apply_events(s, &id, &batch.events, limits, now_ms()))
            .await
            .map_err(|e| (job_id, e));
        let applied = match applied {
            Ok(a) => a,
            Err((job_id, e)) => return Err(self.store_failed(job_id, e).await),
        };
        self.shared.metrics.count_events(applied.applied);
        if applied.state_changed {
            self.shared.notify(job_id, JobChangeKind::State);
        }
        if applied.progress_changed {
            self.shared.notify(job_id, JobChangeKind::Progress);
        }
        if applied.log_changed {
            self.shared.notify(job_id, JobChangeKind::Log);
        }
        Ok(EventsAck {
            highest_seq: applied.highest_seq,
            cancel: applied.state.is_some_and(|s| s.is_final()),
        })
    }

    /// `GET control`: `stop` as soon as the job is final (cancelled, timed
    /// out, its lease lost, ...), else `continue` after `wait`, or at once
    /// when a newer control request for the job took over or the callback
    /// API is shutting down.
    pub async fn guest_control(
        &self,
        job_id: &str,
        wait: Duration,
    ) -> Result<ControlAnswer, GuestError> {
        let slot = self
            .shared
            .control
            .enter(job_id)
            .map_err(|e| GuestError::Busy(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + wait;
        // Subscribed before the first read, so no change falls between.
        let mut changes = self.shared.subscribe();
        loop {
            let id = job_id.to_string();
            let state = self
                .shared
                .store
                .run(move |s| s.auth_view(&id))
                .await?
                .state;
            let answer = |action| ControlAnswer { action, state };
            if state.is_final() {
                return Ok(answer(ControlAction::Stop));
            }
            tokio::select! {
                biased;
                _ = slot.ended() => return Ok(answer(ControlAction::Continue)),
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(answer(ControlAction::Continue));
                }
                _ = state_changed(&mut changes, job_id) => {}
                _ = tokio::time::sleep(CONTROL_RECHECK) => {}
            }
        }
    }

    /// Answers every held control request and every later one at once
    /// (`continue`): the callback API is shutting down.
    pub fn end_control_waits(&self) {
        self.shared.control.close();
    }

    /// The file an artifact upload streams into, and the size cap.
    pub async fn guest_stage_artifacts(
        &self,
        job_id: &str,
    ) -> Result<(StagedArchive, u64), GuestError> {
        let id = job_id.to_string();
        let staged = self.shared.store.run(move |s| s.stage_artifacts(&id)).await;
        match staged {
            Ok(staged) => Ok((staged, self.shared.settings.max_artifact_bytes)),
            Err(e) => Err(self.store_failed(job_id, e).await),
        }
    }

    /// `PUT artifacts`, once the upload is complete: inspects and keeps it.
    pub async fn guest_commit_artifacts(
        &self,
        job_id: &str,
        staged: StagedArchive,
        size: u64,
        sha256: String,
    ) -> Result<ArtifactsAck, GuestError> {
        let cap = self.shared.settings.max_artifact_bytes;
        let check = ArchiveCheck {
            max_uncompressed: cap,
            max_entries: MAX_ARTIFACT_ENTRIES,
        };
        let digest = sha256.clone();
        let committed = self
            .shared
            .store
            .run(move |store| store.commit_artifacts(staged, size, &digest, check))
            .await;
        let entries = match committed {
            Ok(entries) => entries,
            Err(ArtifactError::TooLarge { what, limit }) => {
                return Err(GuestError::TooLarge {
                    what: format!("the artifacts' {what}"),
                    limit,
                });
            }
            Err(ArtifactError::TooMany { what, limit }) => {
                return Err(GuestError::TooMany {
                    what: format!("the artifacts' {what}"),
                    limit,
                    unit: "files",
                });
            }
            Err(e @ (ArtifactError::Unsafe { .. } | ArtifactError::Malformed(_))) => {
                return Err(GuestError::BadRequest(e.to_string()));
            }
            Err(ArtifactError::Store(e)) => return Err(self.store_failed(job_id, e).await),
        };
        tracing::info!(job_id, size, files = entries.len(), "artifacts stored");
        self.shared.notify(job_id, JobChangeKind::Artifacts);
        Ok(ArtifactsAck {
            size,
            sha256,
            entries,
        })
    }

    /// `POST result`: ends a running job with the result's state; after a
    /// cancel or timeout the result is kept but the state stays.
    pub async fn guest_result(
        &self,
        job_id: &str,
        result: JobResult,
    ) -> Result<ResultAck, GuestError> {
        let grace = self.shared.settings.cancel_grace.as_millis() as i64;
        let id = job_id.to_string();
        let applied = self
            .shared
            .store
            .run(move |s| {
                let applied = rules::store_result(s, &id, &result, now_ms(), grace)?;
                // The record for `on_final`, read while still off the runtime.
                let rec = match applied {
                    ResultApplied::Final(_) => s.get_job(&id).ok(),
                    _ => None,
                };
                Ok::<_, StoreError>((applied, rec))
            })
            .await;
        let applied = match applied {
            Ok(a) => a,
            Err(e) => return Err(self.store_failed(job_id, e).await),
        };
        let state = match applied {
            (ResultApplied::Final(state), rec) => {
                if let Some(rec) = rec {
                    self.shared.on_final(&rec, Some("the guest's result"));
                }
                self.shared.notify(job_id, JobChangeKind::Result);
                state
            }
            (ResultApplied::Late(state), _) => {
                tracing::info!(job_id, %state, "late result stored; state unchanged");
                self.shared.notify(job_id, JobChangeKind::Result);
                self.shared.poke(job_id);
                state
            }
            (ResultApplied::Duplicate(state) | ResultApplied::Stale(state), _) => state,
        };
        Ok(ResultAck { state })
    }
}

/// Resolves when the job's state may have changed: a state notice for it,
/// or notices lost to lag. Never resolves once the sender is gone.
async fn state_changed(changes: &mut broadcast::Receiver<JobChange>, job_id: &str) {
    loop {
        match changes.recv().await {
            Ok(c) if c.job_id == job_id && c.kind == JobChangeKind::State => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl JobManager {
    /// What a guest's call gets when the store failed: on a full disk the
    /// job is failed at once with that reason (its driver then destroys
    /// the VM), and the guest's next call finds it final.
    async fn store_failed(&self, job_id: &str, e: StoreError) -> GuestError {
        if e.is_full() {
            self.shared.on_store_error(&e);
            self.shared.fail_full(job_id).await;
            return GuestError::Internal(self.shared.full_reason());
        }
        e.into()
    }
}
