//! What the callback API asks of the manager on a guest's behalf: checking
//! its token, handing out its job, and taking its events, artifacts and
//! result. Every operation re-reads the store, so a late call after a
//! cancel or a timeout finds the job final and changes nothing.

use delegate_proto::api::{ArtifactsAck, JobSpec, PROTOCOL_VERSION, ResultAck};
use delegate_proto::{EventBatch, EventsAck, JobResult, JobState};

use super::change::JobChangeKind;
use super::manager::JobManager;
use super::rules::{self, ResultApplied};
use super::token;
use crate::clock::now_ms;
use crate::store::{ArchiveCheck, ArtifactError, EventLimits, StagedArchive, StoreError};

/// Most files in one artifact archive.
const MAX_ARTIFACT_ENTRIES: usize = 100_000;

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
    /// The request speaks another protocol version (or none).
    #[error("protocol version {0:?} is not supported; this host speaks {PROTOCOL_VERSION}")]
    UnsupportedProtocol(String),
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
        let s = &self.shared.settings;
        let remaining_ms = (rec.deadline_at - now_ms()).max(1000);
        Ok(JobSpec {
            egress: crate::egress::spec_for(&s.egress, &rec.manifest),
            job_id: rec.id,
            manifest: rec.manifest,
            timeout_seconds: (remaining_ms / 1000) as u64,
            heartbeat_interval_seconds: s.heartbeat_interval.as_secs(),
            max_artifact_bytes: s.max_artifact_bytes,
        })
    }

    /// `POST events`: stores what follows the highest sequence held.
    pub async fn guest_events(
        &self,
        job_id: &str,
        batch: EventBatch,
    ) -> Result<EventsAck, GuestError> {
        if batch.events.len() > delegate_proto::api::MAX_EVENTS_PER_BATCH {
            return Err(GuestError::TooLarge {
                what: format!("a batch of {} events", batch.events.len()),
                limit: delegate_proto::api::MAX_EVENTS_PER_BATCH as u64,
            });
        }
        for (i, e) in batch.events.iter().enumerate() {
            if let delegate_proto::EventKind::Log(chunk) = &e.kind {
                let bytes = chunk
                    .bytes()
                    .map_err(|err| GuestError::BadRequest(format!("event {}: {err}", e.seq)))?;
                check_log_end(i, chunk.offset, bytes.len())?;
            }
        }
        let limits = EventLimits {
            max_log_bytes: self.shared.settings.max_log_bytes,
        };
        let id = job_id.to_string();
        let applied = self
            .shared
            .store
            .run(move |s| rules::apply_events(s, &id, &batch.events, limits, now_ms()))
            .await?;
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

    /// The file an artifact upload streams into, and the size cap.
    pub async fn guest_stage_artifacts(
        &self,
        job_id: &str,
    ) -> Result<(StagedArchive, u64), GuestError> {
        let id = job_id.to_string();
        let staged = self
            .shared
            .store
            .run(move |s| s.stage_artifacts(&id))
            .await?;
        Ok((staged, self.shared.settings.max_artifact_bytes))
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
        let entries = self
            .shared
            .store
            .run(move |store| {
                store
                    .commit_artifacts(staged, size, &digest, check)
                    .map_err(|e| match e {
                        ArtifactError::TooLarge { what, limit } => GuestError::TooLarge {
                            what: format!("the artifacts' {what}"),
                            limit,
                        },
                        ArtifactError::Unsafe { .. } | ArtifactError::Malformed(_) => {
                            GuestError::BadRequest(e.to_string())
                        }
                        ArtifactError::Store(e) => e.into(),
                    })
            })
            .await?;
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
            .await?;
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

/// The largest log offset the store keeps (SQLite integers are signed).
const MAX_LOG_END: u64 = i64::MAX as u64;

/// Refuses a log chunk that would end past [`MAX_LOG_END`] (or past
/// `u64::MAX`): no real log gets there, and the end must stay computable.
fn check_log_end(index: usize, offset: u64, len: usize) -> Result<(), GuestError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= MAX_LOG_END => Ok(()),
        _ => Err(GuestError::BadRequest(format!(
            "events[{index}].offset: {offset} plus the chunk's {len} bytes ends past \
             the largest log offset, {MAX_LOG_END}"
        ))),
    }
}
