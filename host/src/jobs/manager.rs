//! The job manager: the API that MCP tools, the CLI and the callback API
//! call. It validates, persists through the store (the source of truth)
//! and hands work to the engine that runs beside it in the process that
//! holds `host.lock`: the scheduler, one driver per live job, and
//! housekeeping (see `engine`).
//!
//! Below it: `state` (what every part shares, the one `transition` and
//! `on_final`), `rules` (which state a job goes to), and `engine` (held
//! here when this process runs it; it never calls back into the facade).
//!
//! A manager made with [`JobManager::connect`] has no engine: it is what a
//! CLI uses while a server owns the data directory. It submits and cancels
//! through the store; the engine picks both up within about a second.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use delegate_proto::outcome::ErrorKind;
use delegate_proto::{JobManifest, JobState};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::change::{JobChange, JobChangeKind};
use super::engine::Engine;
use super::error::JobError;
use super::rules;
use super::state::Shared;
use super::token;
use crate::clock::now_ms;
use crate::config::{ProviderKind, Settings};
use crate::model::{CancelOutcome, JobRecord, JobSummary, LogSelector, LogSlice, Page};
use crate::provider::{Isolation, Provider};
use crate::store::{ArtifactRead, HostLock, NewJob, Store, StoreError};

/// Most summaries in one `list` page: the one page-size limit of the MCP
/// tool and the command line. A thousand summaries (about 250 KB of JSON)
/// list a busy host in one or two calls; with 200, a full listing of 1,001
/// jobs took six round trips (`cargo bench -p delegate-host --bench load`).
pub const MAX_LIST_LIMIT: usize = 1000;
/// Most log bytes in one `read_log` answer.
pub const MAX_LOG_READ: usize = 16 << 20;
/// How often a waiter re-reads the store, for changes made by another
/// process (the engine when this manager is a client).
const WAIT_POLL: Duration = Duration::from_millis(500);
/// How often [`JobManager::settled`] looks at the engine's drivers.
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// Handle to the job manager. Cheap to clone.
#[derive(Clone)]
pub struct JobManager {
    pub(super) shared: Arc<Shared>,
    /// The engine, in the process that holds `host.lock`; none in a client.
    engine: Option<Engine>,
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
        let mut shared = Shared::new(settings, store, provider.name(), provider.isolation(), 4096);
        shared.accelerator = provider.accelerator();
        let shared = Arc::new(shared);
        let engine = Engine::start(shared.clone(), provider, lock, shutdown).await?;
        Ok(JobManager {
            shared,
            engine: Some(engine),
        })
    }

    /// A manager without an engine, for a process that does not own the
    /// data directory (the CLI while a server runs). Submits wait as
    /// `pending` until the engine takes them; cancels are flagged for it.
    pub fn connect(settings: Arc<Settings>, store: Store) -> Self {
        let (name, isolation) = (settings.provider.as_str(), default_isolation(&settings));
        let accelerator = settings
            .qemu
            .as_ref()
            .and_then(crate::provider::qemu::known_accel)
            .map(|a| a.as_str());
        let mut shared = Shared::new(settings, store, name, isolation, 64);
        shared.accelerator = accelerator;
        JobManager {
            shared: Arc::new(shared),
            engine: None,
        }
    }

    /// Whether this manager runs the engine.
    pub fn runs_engine(&self) -> bool {
        self.engine.is_some()
    }

    /// Waits, up to `limit`, until this process's engine is done with the
    /// job: its driver has ended, so the VM is destroyed (or kept, for a
    /// persistent job). A one-shot engine (`submit --wait`) calls this
    /// before it stops, or a VM would outlive it until the next start's
    /// reconciliation. True when done; true at once without an engine.
    pub async fn settled(&self, job_id: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let running = self
                .engine
                .as_ref()
                .is_some_and(|_| self.shared.runs().contains_key(job_id));
            if !running {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// Waits until the engine's tasks have ended (after its shutdown token
    /// was cancelled), then releases `host.lock`. Jobs keep their state and
    /// VMs: the next start picks them up.
    pub async fn join(&self) {
        if let Some(engine) = &self.engine {
            engine.join().await;
        }
    }

    /// Validates and stores a new job; it starts when a slot is free. Its
    /// deadline is the queue's (`DELEGATE_QUEUE_TIMEOUT_SECONDS`) until it
    /// starts provisioning, when its own timeout begins to count.
    pub async fn submit(&self, manifest: JobManifest) -> Result<JobRecord, JobError> {
        manifest.validate()?;
        crate::egress::check_manifest(&self.shared.settings.egress, &manifest)?;
        let s = &self.shared.settings;
        check_memory(&manifest, s.max_memory)?;
        let manifest = super::intake::cap_budget(manifest, s.max_budget_usd)?;
        let id = uuid::Uuid::new_v4().to_string();
        // The repository is archived before the job exists, so a guest
        // never asks for an archive that is still being written.
        let repo = {
            let (settings, id, manifest) =
                (self.shared.settings.clone(), id.clone(), manifest.clone());
            self.shared
                .store
                .run(move |store| super::intake::prepare_repo(store, &settings, &id, &manifest))
                .await?
        };
        if let Some(prepared) = repo {
            let base = prepared.base_commit.clone();
            self.shared
                .store
                .run(move |store| store.commit_repo(prepared.staged, base.as_deref()))
                .await?;
        }
        let queue_timeout = s.queue_timeout.as_millis() as i64;
        let now = now_ms();
        let job = NewJob {
            id,
            manifest,
            token_hash: token::unusable_hash(),
            created_at: now,
            deadline_at: now.saturating_add(queue_timeout),
            isolation: self.shared.isolation,
        };
        let id = job.id.clone();
        let rec = match self.shared.store.run(move |s| s.insert_job(&job)).await {
            Ok(rec) => rec,
            Err(e) => {
                // No job row means retention would never remove the archive.
                let _ = self.shared.store.run(move |s| s.discard_repo(&id)).await;
                return Err(e.into());
            }
        };
        tracing::info!(job_id = %rec.id, agent = rec.manifest.agent_type.as_str(), "job submitted");
        self.shared.notify(&rec.id, JobChangeKind::State);
        self.shared.wake.notify_one();
        Ok(rec)
    }

    /// The job's record.
    pub fn get(&self, job_id: &str) -> Result<JobRecord, JobError> {
        check_job_id(job_id)?;
        self.shared.store.get_job(job_id).map_err(not_found)
    }

    /// [`JobManager::get`] for async code, off the runtime threads.
    pub(super) async fn get_async(&self, job_id: &str) -> Result<JobRecord, JobError> {
        check_job_id(job_id)?;
        let id = job_id.to_string();
        self.shared
            .store
            .run(move |s| s.get_job(&id))
            .await
            .map_err(not_found)
    }

    /// Cancels a job in any non-final state (provisioning included: the
    /// provisioning is abandoned and what it created destroyed); a final
    /// job is left as it is.
    pub async fn cancel(&self, job_id: &str) -> Result<CancelOutcome, JobError> {
        let rec = self.get_async(job_id).await?;
        if rec.state.is_final() {
            return Ok(CancelOutcome::AlreadyFinal(rec));
        }
        if self.engine.is_none() {
            // The engine runs elsewhere: flag the job for it.
            let id = job_id.to_string();
            let (rec, changed) = self
                .shared
                .store
                .run(move |s| rules::request_cancel(s, &id, now_ms()))
                .await
                .map_err(not_found)?;
            return Ok(if changed {
                CancelOutcome::Cancelled(rec)
            } else {
                CancelOutcome::AlreadyFinal(rec)
            });
        }
        let changed = self
            .shared
            .transition(
                job_id,
                JobState::Cancelled,
                Some(("cancelled by a client", ErrorKind::Cancelled)),
            )
            .await?;
        self.shared.stop_run(job_id);
        let rec = self.get_async(job_id).await?;
        Ok(if changed {
            CancelOutcome::Cancelled(rec)
        } else {
            CancelOutcome::AlreadyFinal(rec)
        })
    }

    /// Runs `f`, which uses this manager's sync API (`get`, `list`,
    /// `read_log`, ...: each reads the store and may block), off the
    /// runtime threads: how async code uses that API (see the store's
    /// module doc).
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&JobManager) -> T + Send + 'static,
    ) -> Result<T, JobError> {
        let m = self.clone();
        Ok(self
            .shared
            .store
            .run(move |_| Ok::<_, StoreError>(f(&m)))
            .await?)
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
        self.shared
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
        let mut changes = self.shared.subscribe();
        let mut rec = self.get_async(job_id).await?;
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
            let next = self.get_async(job_id).await?;
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
        self.shared
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
        self.shared
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
            .shared
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
        Ok(self.shared.store.archive_path(job_id))
    }

    /// Change notices for every job. Without an engine here they come
    /// from polling the store (`poll.rs`), started by the first subscriber.
    pub fn subscribe(&self) -> broadcast::Receiver<JobChange> {
        let rx = self.shared.subscribe();
        if self.engine.is_none() {
            super::poll::start(&self.shared);
        }
        rx
    }

    /// `local`, `proxmox` or `qemu`.
    pub fn provider_name(&self) -> &'static str {
        self.shared.provider_name
    }

    /// The accelerator of a job's VM: `kvm` or `tcg` for a job QEMU runs
    /// (as this process knows it), else none.
    pub fn accelerator_of(&self, record: &JobRecord) -> Option<&'static str> {
        let vm = record.vm.as_ref()?;
        (vm.provider == crate::provider::qemu::NAME)
            .then_some(self.shared.accelerator)
            .flatten()
    }

    /// The isolation jobs get.
    pub fn isolation(&self) -> Isolation {
        self.shared.isolation
    }

    /// The settings the manager runs with.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// The store underneath (for the callback API and tests).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// `/metrics` text.
    pub async fn render_metrics(&self) -> Result<String, JobError> {
        let counts = self.shared.store.run(|s| s.count_by_state()).await?;
        Ok(self.shared.metrics.render(&counts))
    }

    /// The warm pools' figures by class (filled in the process that runs
    /// the engine; empty elsewhere and without pools).
    pub fn pool_stats(&self) -> std::collections::BTreeMap<String, super::metrics::PoolClassStats> {
        self.shared.metrics.pool_stats()
    }

    /// Counts one callback request for `/metrics`.
    pub fn count_callback_request(&self, route: &'static str, status: u16) {
        self.shared.metrics.count_request(route, status);
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

/// Refuses a job that asks for more memory than the provider can give
/// (`DELEGATE_MAX_MEMORY`, or this machine's memory for local sandboxes),
/// when it is submitted rather than when provisioning fails.
fn check_memory(manifest: &JobManifest, max: Option<u64>) -> Result<(), JobError> {
    let asked = manifest.resources.as_ref().and_then(|r| r.memory_bytes());
    match (asked, max) {
        (Some(asked), Some(max)) if asked > max => {
            Err(JobError::InvalidManifest(delegate_proto::ManifestError {
                field: "resources.memory".into(),
                rule: format!(
                    "{} is more than this host's provider can give ({}, DELEGATE_MAX_MEMORY)",
                    delegate_proto::size::format_size(asked),
                    delegate_proto::size::format_size(max)
                ),
            }))
        }
        _ => Ok(()),
    }
}
