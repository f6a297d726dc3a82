//! What the callback API asks of the manager on a guest's behalf: checking
//! its token, handing out its job, and taking its events, artifacts and
//! result. Every operation re-reads the store, so a late call after a
//! cancel or a timeout finds the job final and changes nothing.

use delegate_proto::api::{ArtifactsAck, JobSpec, PROTOCOL_VERSION, ResultAck};
use delegate_proto::{EventBatch, EventsAck, JobResult, JobState};

use super::change::JobChangeKind;
use super::clock::now_ms;
use super::manager::JobManager;
use super::token;
use crate::store::{
    ArchiveCheck, ArtifactError, EventLimits, ResultApplied, StagedArchive, StoreError,
};

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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, GuestError> + Send + 'static,
) -> Result<T, GuestError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GuestError::Internal(format!("store task failed: {e}")))?
}

impl JobManager {
    /// Checks a guest's bearer token for `job_id`. Valid only for its own
    /// job, and only until the job is final and its result stored, or the
    /// grace after a cancel or timeout has passed.
    pub fn authorize_guest(&self, job_id: &str, token: Option<&str>) -> Result<(), GuestError> {
        let token = token.ok_or(GuestError::Unauthorized)?;
        if !delegate_proto::api::is_valid_job_id(job_id) {
            return Err(GuestError::Unauthorized);
        }
        let view = self.inner.store.auth_view(job_id)?;
        if !token::matches(token, &view.token_hash) {
            return Err(GuestError::Unauthorized);
        }
        if view.state.is_final() {
            let grace = self.inner.settings.cancel_grace.as_millis() as i64;
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
        let rec = self.inner.store.get_job(job_id)?;
        if rec.state.is_final() {
            return Err(GuestError::Final(rec.state));
        }
        if rec.state == JobState::Provisioning {
            self.inner.transition(job_id, JobState::Running, None)?;
        }
        self.inner.store.touch(job_id, now_ms())?;
        let s = &self.inner.settings;
        let remaining_ms = (rec.deadline_at - now_ms()).max(1000);
        Ok(JobSpec {
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
        for e in &batch.events {
            if let delegate_proto::EventKind::Log(chunk) = &e.kind {
                chunk
                    .bytes()
                    .map_err(|err| GuestError::BadRequest(format!("event {}: {err}", e.seq)))?;
            }
        }
        let store = self.inner.store.clone();
        let limits = EventLimits {
            max_log_bytes: self.inner.settings.max_log_bytes,
        };
        let id = job_id.to_string();
        let applied =
            blocking(move || Ok(store.apply_events(&id, &batch.events, limits, now_ms())?)).await?;
        self.inner.metrics.count_events(applied.applied);
        if applied.state_changed {
            self.inner.notify(job_id, JobChangeKind::State);
        }
        if applied.progress_changed {
            self.inner.notify(job_id, JobChangeKind::Progress);
        }
        if applied.log_changed {
            self.inner.notify(job_id, JobChangeKind::Log);
        }
        Ok(EventsAck {
            highest_seq: applied.highest_seq,
            cancel: applied.state.is_some_and(|s| s.is_final()),
        })
    }

    /// The file an artifact upload streams into, and the size cap.
    pub fn guest_stage_artifacts(&self, job_id: &str) -> Result<(StagedArchive, u64), GuestError> {
        Ok((
            self.inner.store.stage_artifacts(job_id)?,
            self.inner.settings.max_artifact_bytes,
        ))
    }

    /// `PUT artifacts`, once the upload is complete: inspects and keeps it.
    pub async fn guest_commit_artifacts(
        &self,
        job_id: &str,
        staged: StagedArchive,
        size: u64,
        sha256: String,
    ) -> Result<ArtifactsAck, GuestError> {
        let store = self.inner.store.clone();
        let cap = self.inner.settings.max_artifact_bytes;
        let check = ArchiveCheck {
            max_uncompressed: cap,
            max_entries: MAX_ARTIFACT_ENTRIES,
        };
        let digest = sha256.clone();
        let entries = blocking(move || {
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
        self.inner.notify(job_id, JobChangeKind::Artifacts);
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
        let store = self.inner.store.clone();
        let grace = self.inner.settings.cancel_grace.as_millis() as i64;
        let id = job_id.to_string();
        let applied =
            blocking(move || Ok(store.store_result(&id, &result, now_ms(), grace)?)).await?;
        let state = match applied {
            ResultApplied::Final(state) => {
                if let Ok(rec) = self.inner.store.get_job(job_id)
                    && let Some(started) = rec.started_at
                {
                    self.inner
                        .metrics
                        .observe_run((now_ms() - started).max(0) as f64 / 1000.0);
                }
                tracing::info!(job_id, %state, "result stored; job is final");
                self.inner.notify(job_id, JobChangeKind::State);
                self.inner.notify(job_id, JobChangeKind::Result);
                self.inner.poke(job_id);
                state
            }
            ResultApplied::Late(state) => {
                tracing::info!(job_id, %state, "late result stored; state unchanged");
                self.inner.notify(job_id, JobChangeKind::Result);
                self.inner.poke(job_id);
                state
            }
            ResultApplied::Duplicate(state) | ResultApplied::Stale(state) => state,
        };
        Ok(ResultAck { state })
    }
}
