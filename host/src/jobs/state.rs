//! The bottom of the job layer: the state every part of it shares (the
//! manager facade, the engine, the callback side) and the one way a job's
//! state changes from here ([`Shared::transition`]) with the one piece of
//! work done when a job becomes final ([`Shared::on_final`]).
//!
//! It serves a process with an engine and one without alike: without an
//! engine no driver is ever registered in `runs`, so poking one is a no-op.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use delegate_proto::JobState;
use delegate_proto::outcome::ErrorKind;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::change::{JobChange, JobChangeKind};
use super::control::{ControlWaiters, MAX_CONTROL_WAITERS};
use super::metrics::Metrics;
use super::rules;
use crate::clock::now_ms;
use crate::config::Settings;
use crate::model::JobRecord;
use crate::provider::Isolation;
use crate::store::{Store, StoreError};

/// State shared by the manager, the engine's tasks and the callback API.
pub(super) struct Shared {
    pub(super) settings: Arc<Settings>,
    pub(super) store: Store,
    pub(super) provider_name: &'static str,
    pub(super) isolation: Isolation,
    /// `kvm` or `tcg` for a provider that runs VMs under QEMU (as far as
    /// this process knows it), said in every status of its jobs.
    pub(super) accelerator: Option<&'static str>,
    changes: broadcast::Sender<JobChange>,
    pub(super) metrics: Metrics,
    /// Jobs with a driver in this process: each holds a VM slot.
    runs: Mutex<HashMap<String, Run>>,
    /// Wakes the scheduler (a job was submitted or a slot freed).
    pub(super) wake: Notify,
    /// Guests' held control requests (`GET control`).
    pub(super) control: ControlWaiters,
    /// Whether the store poller of a manager without an engine runs
    /// (`poll.rs`).
    poller: AtomicBool,
}

/// A job's driver, as the rest of the process sees it.
pub(super) struct Run {
    /// Cancelled to abandon provisioning (cancel, shutdown).
    pub(super) stop: CancellationToken,
    /// Poked whenever the job's state or result changed.
    pub(super) changed: Arc<Notify>,
    /// True while the provider is provisioning the job's VM.
    pub(super) provisioning: bool,
}

impl Shared {
    pub(super) fn new(
        settings: Arc<Settings>,
        store: Store,
        provider_name: &'static str,
        isolation: Isolation,
        change_capacity: usize,
    ) -> Shared {
        Shared {
            settings,
            store,
            provider_name,
            isolation,
            accelerator: None,
            changes: broadcast::channel(change_capacity).0,
            metrics: Metrics::default(),
            runs: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            control: ControlWaiters::new(MAX_CONTROL_WAITERS),
            poller: AtomicBool::new(false),
        }
    }

    /// The drivers of this process.
    pub(super) fn runs(&self) -> MutexGuard<'_, HashMap<String, Run>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<JobChange> {
        self.changes.subscribe()
    }

    /// Whether anyone listens for change notices.
    pub(super) fn has_listeners(&self) -> bool {
        self.changes.receiver_count() > 0
    }

    /// True if the store poller was already started; marks it started.
    pub(super) fn poller_started(&self) -> bool {
        self.poller.swap(true, Ordering::AcqRel)
    }

    pub(super) fn notify(&self, job_id: &str, kind: JobChangeKind) {
        let _ = self.changes.send(JobChange {
            job_id: job_id.to_string(),
            kind,
        });
    }

    /// Pokes the job's driver, if it has one here.
    pub(super) fn poke(&self, job_id: &str) {
        if let Some(run) = self.runs().get(job_id) {
            run.changed.notify_one();
        }
    }

    /// Stops the job's provisioning, if it is under way here.
    pub(super) fn stop_run(&self, job_id: &str) {
        if let Some(run) = self.runs().get(job_id) {
            run.stop.cancel();
            run.changed.notify_one();
        }
    }

    /// Moves a job to `to` (through [`rules::transition`]); a refusal
    /// because the job is already final is not an error. Returns whether it
    /// changed.
    pub(super) async fn transition(
        self: &Arc<Self>,
        job_id: &str,
        to: JobState,
        reason: Option<(&str, ErrorKind)>,
    ) -> Result<bool, StoreError> {
        let (shared, id) = (self.clone(), job_id.to_string());
        let reason = reason.map(|(why, kind)| (why.to_string(), kind));
        self.store
            .run(move |_| {
                let reason = reason.as_ref().map(|(why, kind)| (why.as_str(), *kind));
                shared.transition_blocking(&id, to, reason)
            })
            .await
    }

    /// [`Shared::transition`] for code already off the runtime threads
    /// (inside [`Store::run`]).
    pub(super) fn transition_blocking(
        &self,
        job_id: &str,
        to: JobState,
        reason: Option<(&str, ErrorKind)>,
    ) -> Result<bool, StoreError> {
        match rules::transition(&self.store, job_id, to, reason, now_ms()) {
            Ok(rec) => {
                if rec.state.is_final() {
                    self.on_final(&rec, reason.map(|r| r.0));
                } else {
                    self.notify(job_id, JobChangeKind::State);
                    self.poke(job_id);
                }
                Ok(true)
            }
            Err(StoreError::Transition { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves a pending job to `provisioning` with its own deadline
    /// ([`rules::start_provisioning`]). Returns whether it changed: false
    /// when the job ended while it waited.
    pub(super) async fn start_provisioning(
        self: &Arc<Self>,
        job_id: &str,
    ) -> Result<bool, StoreError> {
        let (shared, id) = (self.clone(), job_id.to_string());
        self.store
            .run(move |store| {
                let rec = store.get_job(&id)?;
                let timeout_secs = rec
                    .manifest
                    .timeout_or(shared.settings.default_timeout.as_secs());
                let timeout_ms = (timeout_secs as i64).saturating_mul(1000);
                match rules::start_provisioning(store, &id, timeout_ms, now_ms()) {
                    Ok(_) => {
                        shared.notify(&id, JobChangeKind::State);
                        shared.poke(&id);
                        Ok(true)
                    }
                    Err(StoreError::Transition { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// What follows a job becoming final, whoever ended it: its run time
    /// for `/metrics`, the log line, the change notice, and its driver
    /// woken to clean up.
    pub(super) fn on_final(&self, rec: &JobRecord, why: Option<&str>) {
        if let Some(started) = rec.started_at {
            self.metrics
                .observe_run((now_ms() - started).max(0) as f64 / 1000.0);
        }
        tracing::info!(job_id = %rec.id, state = %rec.state, reason = ?why, "job is final");
        self.notify(&rec.id, JobChangeKind::State);
        self.poke(&rec.id);
    }
}
