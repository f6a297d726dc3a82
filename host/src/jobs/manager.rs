//! The job manager: the API that MCP tools, the CLI and the callback API
//! call. It validates, persists through the store (the source of truth)
//! and hands work to the engine that runs beside it in the process that
//! holds `host.lock`: the scheduler, one driver per live job, and
//! housekeeping (see `scheduler`, `driver`, `recovery`).
//!
//! A manager made with [`JobManager::connect`] has no engine: it is what a
//! CLI uses while a server owns the data directory. It submits and cancels
//! through the store; the engine picks both up within about a second.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use delegate_proto::outcome::ErrorKind;
use delegate_proto::{JobManifest, JobState};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::change::{JobChange, JobChangeKind};
use super::clock::now_ms;
use super::error::JobError;
use super::metrics::Metrics;
use super::model::{CancelOutcome, JobRecord, JobSummary, LogSelector, LogSlice, Page};
use super::token;
use crate::config::{ProviderKind, Settings};
use crate::provider::{Isolation, Provider};
use crate::store::{ArtifactRead, HostLock, NewJob, Store, StoreError};

/// Most summaries in one `list` page: the one page-size limit of the MCP
/// tool and the command line (a page an agent can read whole).
pub const MAX_LIST_LIMIT: usize = 200;
/// Most log bytes in one `read_log` answer.
pub const MAX_LOG_READ: usize = 16 << 20;
/// How often a waiter re-reads the store, for changes made by another
/// process (the engine when this manager is a client).
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Handle to the job manager. Cheap to clone.
#[derive(Clone)]
pub struct JobManager {
    pub(super) inner: Arc<Shared>,
}

/// State shared by the API, the engine tasks and the callback API.
pub(super) struct Shared {
    pub(super) settings: Arc<Settings>,
    pub(super) store: Store,
    pub(super) provider: Option<Arc<dyn Provider>>,
    provider_name: &'static str,
    isolation: Isolation,
    changes: broadcast::Sender<JobChange>,
    pub(super) metrics: Metrics,
    pub(super) core: Option<Core>,
}

/// The engine's own state; only in the process that holds `host.lock`.
pub(super) struct Core {
    /// Jobs with a driver in this process: each holds a VM slot.
    pub(super) runs: Mutex<HashMap<String, Run>>,
    /// Wakes the scheduler (a job was submitted or a slot freed).
    pub(super) wake: Notify,
    pub(super) shutdown: CancellationToken,
    pub(super) tracker: TaskTracker,
    lock: Mutex<Option<HostLock>>,
}

/// A job's driver, as the rest of the engine sees it.
pub(super) struct Run {
    /// Cancelled to abandon provisioning (cancel, shutdown).
    pub(super) stop: CancellationToken,
    /// Poked whenever the job's state or result changed.
    pub(super) changed: Arc<Notify>,
    /// True while the provider is provisioning the job's VM.
    pub(super) provisioning: bool,
}

impl Core {
    pub(super) fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Run>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Shared {
    pub(super) fn notify(&self, job_id: &str, kind: JobChangeKind) {
        let _ = self.changes.send(JobChange {
            job_id: job_id.to_string(),
            kind,
        });
    }

    /// Pokes the job's driver, if it has one here.
    pub(super) fn poke(&self, job_id: &str) {
        if let Some(core) = &self.core
            && let Some(run) = core.runs().get(job_id)
        {
            run.changed.notify_one();
        }
    }

    /// Stops the job's provisioning, if it is under way here.
    pub(super) fn stop_run(&self, job_id: &str) {
        if let Some(core) = &self.core
            && let Some(run) = core.runs().get(job_id)
        {
            run.stop.cancel();
            run.changed.notify_one();
        }
    }

    pub(super) fn wake_scheduler(&self) {
        if let Some(core) = &self.core {
            core.wake.notify_one();
        }
    }

    /// Moves a job to a final (or next) state; a refusal because the job
    /// is already final is not an error. Returns whether it changed.
    pub(super) fn transition(
        &self,
        job_id: &str,
        to: JobState,
        reason: Option<(&str, ErrorKind)>,
    ) -> Result<bool, StoreError> {
        match self.store.transition(job_id, to, reason, now_ms()) {
            Ok(rec) => {
                if rec.state.is_final() {
                    if let Some(started) = rec.started_at {
                        self.metrics
                            .observe_run((now_ms() - started).max(0) as f64 / 1000.0);
                    }
                    tracing::info!(job_id, state = %rec.state, reason = ?reason.map(|r| r.0), "job is final");
                }
                self.notify(job_id, JobChangeKind::State);
                self.poke(job_id);
                Ok(true)
            }
            Err(StoreError::Transition { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn default_isolation(settings: &Settings) -> Isolation {
    match settings.provider {
        ProviderKind::Local if settings.local_unsandboxed => Isolation::None,
        ProviderKind::Local => Isolation::ProcessSandbox,
        _ => Isolation::Vm,
    }
}

impl JobManager {
    /// Opens the engine: takes `host.lock`, recovers after a restart,
    /// reconciles provider VMs, spawns the scheduler and the
    /// lease/timeout/cleanup/retention tasks, all stopped by `shutdown`.
    pub async fn start(
        settings: Arc<Settings>,
        store: Store,
        provider: Arc<dyn Provider>,
        shutdown: CancellationToken,
    ) -> Result<Self, JobError> {
        let lock = store.lock_engine()?;
        Self::start_locked(settings, store, lock, provider, shutdown).await
    }

    /// [`JobManager::start`] with `host.lock` already taken.
    pub async fn start_locked(
        settings: Arc<Settings>,
        store: Store,
        lock: HostLock,
        provider: Arc<dyn Provider>,
        shutdown: CancellationToken,
    ) -> Result<Self, JobError> {
        let (changes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            provider_name: provider.name(),
            isolation: provider.isolation(),
            settings,
            store,
            provider: Some(provider),
            changes,
            metrics: Metrics::default(),
            core: Some(Core {
                runs: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                shutdown,
                tracker: TaskTracker::new(),
                lock: Mutex::new(Some(lock)),
            }),
        });
        super::recovery::recover(&shared).await?;
        super::scheduler::spawn(&shared);
        Ok(JobManager { inner: shared })
    }

    /// A manager without an engine, for a process that does not own the
    /// data directory (the CLI while a server runs). Submits wait as
    /// `pending` until the engine takes them; cancels are flagged for it.
    pub fn connect(settings: Arc<Settings>, store: Store) -> Self {
        let (changes, _) = broadcast::channel(64);
        JobManager {
            inner: Arc::new(Shared {
                provider_name: settings.provider.as_str(),
                isolation: default_isolation(&settings),
                settings,
                store,
                provider: None,
                changes,
                metrics: Metrics::default(),
                core: None,
            }),
        }
    }

    /// Whether this manager runs the engine.
    pub fn runs_engine(&self) -> bool {
        self.inner.core.is_some()
    }

    /// Waits until the engine's tasks have ended (after its shutdown token
    /// was cancelled), then releases `host.lock`. Jobs keep their state and
    /// VMs: the next start picks them up.
    pub async fn join(&self) {
        if let Some(core) = &self.inner.core {
            core.tracker.close();
            core.tracker.wait().await;
            core.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// Validates and stores a new job; it starts when a slot is free.
    pub async fn submit(&self, manifest: JobManifest) -> Result<JobRecord, JobError> {
        manifest.validate()?;
        let s = &self.inner.settings;
        let timeout = manifest.timeout_or(s.default_timeout.as_secs());
        let now = now_ms();
        let job = NewJob {
            id: uuid::Uuid::new_v4().to_string(),
            manifest,
            token_hash: token::unusable_hash(),
            created_at: now,
            deadline_at: now.saturating_add((timeout as i64).saturating_mul(1000)),
            isolation: self.inner.isolation,
        };
        let store = self.inner.store.clone();
        let rec = tokio::task::spawn_blocking(move || store.insert_job(&job))
            .await
            .map_err(|_| JobError::EngineStopped("the store task failed"))??;
        tracing::info!(job_id = %rec.id, agent = rec.manifest.agent_type.as_str(), "job submitted");
        self.inner.notify(&rec.id, JobChangeKind::State);
        self.inner.wake_scheduler();
        Ok(rec)
    }

    /// The job's record.
    pub fn get(&self, job_id: &str) -> Result<JobRecord, JobError> {
        check_job_id(job_id)?;
        self.inner.store.get_job(job_id).map_err(not_found)
    }

    /// Cancels a job in any non-final state (provisioning included: the
    /// provisioning is abandoned and what it created destroyed); a final
    /// job is left as it is.
    pub async fn cancel(&self, job_id: &str) -> Result<CancelOutcome, JobError> {
        let rec = self.get(job_id)?;
        if rec.state.is_final() {
            return Ok(CancelOutcome::AlreadyFinal(rec));
        }
        if self.inner.core.is_none() {
            let (rec, changed) = self
                .inner
                .store
                .request_cancel(job_id, now_ms())
                .map_err(not_found)?;
            return Ok(if changed {
                CancelOutcome::Cancelled(rec)
            } else {
                CancelOutcome::AlreadyFinal(rec)
            });
        }
        let changed = self.inner.transition(
            job_id,
            JobState::Cancelled,
            Some(("cancelled by a client", ErrorKind::Cancelled)),
        )?;
        self.inner.stop_run(job_id);
        let rec = self.get(job_id)?;
        Ok(if changed {
            CancelOutcome::Cancelled(rec)
        } else {
            CancelOutcome::AlreadyFinal(rec)
        })
    }

    /// Job summaries, newest first, `limit` (1..=[`MAX_LIST_LIMIT`]) per page.
    pub fn list(
        &self,
        status: Option<JobState>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<JobSummary>, JobError> {
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(JobError::InvalidArgument {
                what: format!("limit must be 1..={MAX_LIST_LIMIT}, got {limit}"),
            });
        }
        self.inner
            .store
            .list_jobs(status, limit, cursor)
            .map_err(|e| match e {
                StoreError::BadCursor(c) => JobError::InvalidArgument {
                    what: format!("cursor {c:?} is not one that list_jobs returned"),
                },
                e => e.into(),
            })
    }

    /// Returns when the job is final or `timeout` passed (the record either
    /// way); calls `on_change` whenever the record changed.
    pub async fn wait(
        &self,
        job_id: &str,
        timeout: Duration,
        mut on_change: impl FnMut(&JobRecord) + Send,
    ) -> Result<JobRecord, JobError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.changes.subscribe();
        let mut rec = self.get(job_id)?;
        while !rec.state.is_final() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep(WAIT_POLL) => {}
                msg = changes.recv() => match msg {
                    Ok(c) if c.job_id != job_id => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(deadline).await;
                    }
                },
            }
            let next = self.get(job_id)?;
            if next != rec {
                on_change(&next);
                rec = next;
            }
        }
        Ok(rec)
    }

    /// Log bytes from `cursor`, at most `max_bytes` (up to 16 MiB).
    pub fn read_log(
        &self,
        job_id: &str,
        which: LogSelector,
        cursor: u64,
        max_bytes: usize,
    ) -> Result<LogSlice, JobError> {
        check_job_id(job_id)?;
        if max_bytes == 0 {
            return Err(JobError::InvalidArgument {
                what: "max_bytes must be at least 1".into(),
            });
        }
        self.inner
            .store
            .read_log(job_id, which, cursor, max_bytes.min(MAX_LOG_READ))
            .map_err(not_found)?
            .ok_or_else(|| JobError::InvalidArgument {
                what: format!("cursor {cursor} is past the end of the log"),
            })
    }

    /// The last `max_bytes` (up to 16 MiB) of each log in `which`, for a
    /// job's recent output.
    pub fn read_log_tails<const N: usize>(
        &self,
        job_id: &str,
        which: [LogSelector; N],
        max_bytes: usize,
    ) -> Result<[LogSlice; N], JobError> {
        check_job_id(job_id)?;
        self.inner
            .store
            .read_log_tails(job_id, which, max_bytes.min(MAX_LOG_READ))
            .map_err(not_found)
    }

    /// One file from the job's artifacts; `TooLarge` beyond `max_bytes`.
    pub fn read_artifact(
        &self,
        job_id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, JobError> {
        self.get(job_id)?;
        match self
            .inner
            .store
            .read_artifact(job_id, path, max_bytes)
            .map_err(not_found)?
        {
            ArtifactRead::Found(data) => Ok(data),
            ArtifactRead::Missing => Err(JobError::InvalidArgument {
                what: format!("job {job_id} has no artifact {path:?}"),
            }),
            ArtifactRead::TooLarge(size) => Err(JobError::TooLarge {
                what: format!("artifact {path:?} ({size} bytes)"),
                limit: max_bytes,
            }),
        }
    }

    /// The stored artifact archive (tar.gz), if the job uploaded one.
    pub fn artifact_archive(&self, job_id: &str) -> Result<Option<PathBuf>, JobError> {
        self.get(job_id)?;
        Ok(self.inner.store.archive_path(job_id))
    }

    /// Change notices for every job.
    pub fn subscribe(&self) -> broadcast::Receiver<JobChange> {
        self.inner.changes.subscribe()
    }

    /// `local`, `proxmox` or `qemu`.
    pub fn provider_name(&self) -> &'static str {
        self.inner.provider_name
    }

    /// The isolation jobs get.
    pub fn isolation(&self) -> Isolation {
        self.inner.isolation
    }

    /// The settings the manager runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The store underneath (for the callback API and tests).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// `/metrics` text.
    pub fn render_metrics(&self) -> Result<String, JobError> {
        let counts = self.inner.store.count_by_state()?;
        Ok(self.inner.metrics.render(&counts))
    }

    /// Counts one callback request for `/metrics`.
    pub fn count_callback_request(&self, route: &'static str, status: u16) {
        self.inner.metrics.count_request(route, status);
    }
}

fn not_found(e: StoreError) -> JobError {
    match e {
        StoreError::NotFound(id) => JobError::NotFound(id),
        e => e.into(),
    }
}

/// Ids that cannot be a job's are unknown without asking the store.
fn check_job_id(job_id: &str) -> Result<(), JobError> {
    if delegate_proto::api::is_valid_job_id(job_id) {
        Ok(())
    } else {
        Err(JobError::NotFound(job_id.to_string()))
    }
}
