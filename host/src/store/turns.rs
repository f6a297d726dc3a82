//! Follow-up turns of persistent jobs: a turn's row (a job of its own that
//! shares its session's token and VM), the jobs of one session, the
//! release of a session's kept VM, and the sessions whose kept VM is due
//! to end. Which turn may start and when a VM ends are decided in
//! `jobs::turns`; these are the primitives.

use delegate_proto::JobManifest;
use rusqlite::{ErrorCode, params};

use super::{Store, StoreError};
use crate::model::{JobRecord, UnixMs};

/// A follow-up turn as the job layer creates it.
#[derive(Debug, Clone)]
pub struct NewTurn {
    /// The turn's own job id.
    pub id: String,
    /// The session's first job (its token and VM are the turn's).
    pub session_id: String,
    /// The turn's number: one more than the session's last.
    pub turn: u32,
    /// The turn's manifest (the session's, with this turn's task).
    pub manifest: JobManifest,
    /// Submission time.
    pub created_at: UnixMs,
    /// created_at + the queue timeout, as for any new job.
    pub deadline_at: UnixMs,
}

impl Store {
    /// Inserts a `pending` turn with its session's token hash and isolation.
    /// Refused with [`StoreError::TurnTaken`] when the session already has
    /// a turn of that number (two continues at once: one wins).
    pub fn insert_turn(&self, t: &NewTurn) -> Result<JobRecord, StoreError> {
        let manifest = serde_json::to_string(&t.manifest).map_err(|e| StoreError::Decode {
            job_id: t.id.clone(),
            field: "manifest",
            message: e.to_string(),
        })?;
        let task = super::jobs::summary(&t.manifest.redacted().task);
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO jobs (id, state, manifest, agent_type, task_summary, persistent, \
                 token_hash, isolation, created_at, deadline_at, session_id, turn) \
                 SELECT ?1, 'pending', ?2, ?3, ?4, 1, token_hash, isolation, ?5, ?6, id, ?7 \
                 FROM jobs WHERE id = ?8 AND session_id IS NULL",
                params![
                    t.id,
                    manifest,
                    t.manifest.agent_type.as_str(),
                    task,
                    t.created_at,
                    t.deadline_at,
                    t.turn,
                    t.session_id,
                ],
            );
            match inserted {
                Ok(0) => Err(StoreError::NotFound(t.session_id.clone())),
                Ok(_) => Ok(()),
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                    Err(StoreError::TurnTaken {
                        session_id: t.session_id.clone(),
                        turn: t.turn,
                    })
                }
                Err(e) => Err(self.sqlite(e)),
            }
        })?;
        self.get_job(&t.id)
    }

    /// The session's jobs, first turn first.
    pub fn session_jobs(&self, session_id: &str) -> Result<Vec<JobRecord>, StoreError> {
        let ids: Vec<String> = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM jobs WHERE id = ?1 OR session_id = ?1 ORDER BY turn",
                )
                .map_err(|e| self.sqlite(e))?;
            stmt.query_map([session_id], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.sqlite(e))
        })?;
        if ids.is_empty() {
            return Err(StoreError::NotFound(session_id.to_string()));
        }
        ids.iter().map(|id| self.get_job(id)).collect()
    }

    /// Marks the session's kept VM released (the first release counts).
    pub fn release_session(&self, session_id: &str, now: UnixMs) -> Result<(), StoreError> {
        self.update(
            session_id,
            "UPDATE jobs SET released_at = coalesce(released_at, ?2) \
             WHERE id = ?1 AND session_id IS NULL",
            params![session_id, now],
        )
    }

    /// First jobs of sessions whose VM is still up, and which no turn uses,
    /// that were released or last ended at or before `idle_since`: the
    /// kept VMs due to be destroyed.
    pub fn kept_vms_due(&self, idle_since: UnixMs) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT j.id FROM jobs j \
                     WHERE j.persistent = 1 AND j.vm_destroyed = 0 AND j.session_id IS NULL \
                     AND j.vm_id IS NOT NULL \
                     AND j.state IN ('success','failed','timeout','cancelled') \
                     AND NOT EXISTS (SELECT 1 FROM jobs t WHERE t.session_id = j.id \
                                     AND t.state IN ('pending','provisioning','running')) \
                     AND (j.released_at IS NOT NULL OR max(coalesce(j.completed_at, 0), \
                          coalesce((SELECT max(t.completed_at) FROM jobs t \
                                    WHERE t.session_id = j.id), 0)) <= ?1) \
                     ORDER BY j.seq",
                )
                .map_err(|e| self.sqlite(e))?;
            stmt.query_map([idle_since], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.sqlite(e))
        })
    }
}
