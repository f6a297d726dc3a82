//! Ending jobs: results from guests, cancels from other processes,
//! retention, counts for metrics.

use delegate_proto::outcome::ErrorKind;
use delegate_proto::{JobResult, JobState};
use rusqlite::{Transaction, params};

use super::jobs::{ResultApplied, transition_in};
use super::{Store, StoreError, remove_dir};
use super::{db, row};
use crate::jobs::model::{JobRecord, StoredResult, UnixMs};

impl Store {
    /// Cancels a job from a process that does not run the engine: the
    /// state becomes `cancelled` at once and the engine, which polls for
    /// the flag, destroys the VM. Returns the record and whether it changed.
    pub fn request_cancel(&self, id: &str, now: UnixMs) -> Result<(JobRecord, bool), StoreError> {
        let changed = self.write(|tx| {
            match transition_in(
                self,
                tx,
                id,
                JobState::Cancelled,
                Some(("cancelled by request", ErrorKind::Cancelled)),
                now,
            ) {
                Ok(()) => {}
                Err(StoreError::Transition { .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
            tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id])
                .map_err(|e| self.sqlite(e))?;
            Ok(true)
        })?;
        Ok((self.get_job(id)?, changed))
    }

    /// Ids flagged by [`Store::request_cancel`] since the last call; the
    /// flags are cleared.
    pub fn take_cancel_requests(&self) -> Result<Vec<String>, StoreError> {
        // Polled every second: look before taking the write lock.
        let any: bool = self.read(|conn| {
            db::query_one(
                conn,
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE cancel_requested = 1)",
                [],
                |r| r.get(0),
            )
            .map(Option::unwrap_or_default)
            .map_err(|e| self.sqlite(e))
        })?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE jobs SET cancel_requested = 0 WHERE cancel_requested = 1 RETURNING id",
                )
                .map_err(|e| self.sqlite(e))?;
            stmt.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.sqlite(e))
        })
    }

    /// Stores the guest's result. A running job becomes final with the
    /// result's state; a job that already ended keeps its state and takes
    /// the result only until `completed_at + grace_ms`.
    pub fn store_result(
        &self,
        id: &str,
        result: &JobResult,
        now: UnixMs,
        grace_ms: i64,
    ) -> Result<ResultApplied, StoreError> {
        let stored = StoredResult {
            exit_code: result.exit_code,
            signal: result.signal.clone(),
            duration_ms: result.duration_ms,
            output: result.output.clone(),
            agent_result: result.agent_result.clone(),
            error: result.error.clone(),
        };
        let json = serde_json::to_string(&stored).map_err(|e| StoreError::Decode {
            job_id: id.to_string(),
            field: "result",
            message: e.to_string(),
        })?;
        self.write(|tx| {
            let (state, completed_at, has_result) = db::query_one(
                tx,
                "SELECT state, completed_at, result IS NOT NULL FROM jobs WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                },
            )
            .map_err(|e| self.sqlite(e))?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let state = row::state(id, &state)?;
            if has_result {
                return Ok(ResultApplied::Duplicate(state));
            }
            let save = |tx: &Transaction<'_>| {
                tx.execute(
                    "UPDATE jobs SET result = ?2, result_at = ?3 WHERE id = ?1",
                    params![id, json, now],
                )
                .map_err(|e| self.sqlite(e))
            };
            if state.is_final() {
                if now <= completed_at.unwrap_or(now).saturating_add(grace_ms) {
                    save(tx)?;
                    return Ok(ResultApplied::Late(state));
                }
                return Ok(ResultApplied::Stale(state));
            }
            if state == JobState::Provisioning {
                transition_in(self, tx, id, JobState::Running, None, now)?;
            }
            let to = result.status.job_state();
            let reason = match to {
                JobState::Success => None,
                _ => Some((
                    result
                        .error
                        .as_deref()
                        .unwrap_or("the agent did not succeed"),
                    result.error_kind.unwrap_or(match to {
                        JobState::Timeout => ErrorKind::Timeout,
                        JobState::Cancelled => ErrorKind::Cancelled,
                        _ => ErrorKind::Exit,
                    }),
                )),
            };
            transition_in(self, tx, id, to, reason, now)?;
            save(tx)?;
            Ok(ResultApplied::Final(to))
        })
    }

    /// Deletes final jobs completed before `before` with their logs and
    /// artifacts. Jobs whose VM is still kept (persistent) stay. Returns
    /// the ids removed.
    pub fn prune_finished(&self, before: UnixMs) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = self.write(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM jobs WHERE state IN ('success','failed','timeout','cancelled') \
                     AND completed_at < ?1 AND (vm_id IS NULL OR vm_destroyed = 1) RETURNING id",
                )
                .map_err(|e| self.sqlite(e))?;
            let ids: Vec<String> = stmt
                .query_map([before], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.sqlite(e))?;
            for id in &ids {
                tx.execute("DELETE FROM events WHERE job_id = ?1", [id])
                    .map_err(|e| self.sqlite(e))?;
                tx.execute("DELETE FROM artifacts WHERE job_id = ?1", [id])
                    .map_err(|e| self.sqlite(e))?;
            }
            Ok(ids)
        })?;
        for id in &ids {
            remove_dir(&self.logs_dir(id))?;
            remove_dir(&self.artifacts_dir(id))?;
        }
        Ok(ids)
    }

    /// How many jobs are in each state (states with none are left out).
    pub fn count_by_state(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state")
                .map_err(|e| self.sqlite(e))?;
            let rows: Vec<(String, i64)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.sqlite(e))?;
            rows.into_iter()
                .map(|(s, n)| Ok((row::state("-", &s)?, n.max(0) as u64)))
                .collect()
        })
    }
}
