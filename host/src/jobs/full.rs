//! A full data directory: the job whose data could not be stored fails at
//! once with that reason (its VM is then destroyed by its driver), rather
//! than running on while nothing it sends is kept. Other jobs go on until
//! one of their own writes fails.
//!
//! Recording the failure needs a little room itself, so the store's space
//! reserve is given up first; the record is retried with the host's retry
//! policy, never in a tight loop.

use std::sync::Arc;
use std::time::Duration;

use delegate_proto::JobState;
use delegate_proto::outcome::ErrorKind;

use super::state::Shared;
use crate::retry::RetryPolicy;
use crate::store::StoreError;

/// Recording a job's end when the store fails: 5 attempts, waiting about
/// 0.5, 1, 2 and 4 s (a full disk may free up; a busy one passes).
pub(super) const RECORD_RETRY: RetryPolicy =
    RetryPolicy::new(5, Duration::from_millis(500), Duration::from_secs(4));

/// The opening words of the reason a job fails with on a full disk.
pub const DATA_DIR_FULL: &str = "the host's data directory is full";

impl Shared {
    /// The reason for a job stopped by a full data directory, with the
    /// space as the store sees it now.
    pub(super) fn full_reason(&self) -> String {
        let dir = self.store.data_dir().display().to_string();
        match self.store.disk_space() {
            Ok(space) => format!("{DATA_DIR_FULL} ({dir}: {space}); the job was stopped"),
            Err(_) => format!("{DATA_DIR_FULL} ({dir}); the job was stopped"),
        }
    }

    /// Gives up the space reserve when `e` says the disk is full.
    pub(super) fn on_store_error(&self, e: &StoreError) {
        if e.is_full() {
            self.store.release_reserve();
        }
    }

    /// Fails `job_id` because its data could not be stored: the disk is
    /// full. Returns whether the failure is on record.
    pub(super) async fn fail_full(self: &Arc<Self>, job_id: &str) -> bool {
        let why = self.full_reason();
        tracing::error!(job_id, reason = %why, "stopping the job");
        self.record_end(job_id, JobState::Failed, &why, ErrorKind::Internal)
            .await
    }

    /// Moves a job to a final state, retrying while the store fails (with
    /// the reserve given up when the disk is full). Returns whether it is
    /// on record; the last failure is logged once.
    pub(super) async fn record_end(
        self: &Arc<Self>,
        job_id: &str,
        to: JobState,
        why: &str,
        kind: ErrorKind,
    ) -> bool {
        let shared = self.clone();
        let recorded = RECORD_RETRY
            .run(
                "recording the job's end",
                |_: &StoreError| true,
                || {
                    let shared = shared.clone();
                    async move {
                        let out = shared.transition(job_id, to, Some((why, kind))).await;
                        if let Err(e) = &out {
                            shared.on_store_error(e);
                        }
                        out
                    }
                },
            )
            .await;
        match recorded {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(job_id, error = %e, "cannot record the job's end");
                false
            }
        }
    }
}
