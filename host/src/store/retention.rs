//! After jobs end: the cancel flags other processes leave for the engine,
//! retention, counts for metrics.

use delegate_proto::JobState;

use super::{Store, StoreError, remove_dir};
use super::{db, row};
use crate::model::UnixMs;

impl Store {
    /// Ids flagged by [`JobTx::flag_cancel`](super::JobTx::flag_cancel)
    /// since the last call; the flags are cleared.
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

    /// Deletes final jobs completed before `before` with their logs and
    /// artifacts. Jobs whose VM is still kept (persistent) stay, and so do
    /// the follow-up turns of such a job (the next turn resumes from them).
    /// Returns the ids removed.
    pub fn prune_finished(&self, before: UnixMs) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = self.write(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM jobs WHERE state IN ('success','failed','timeout','cancelled') \
                     AND completed_at < ?1 AND (vm_id IS NULL OR vm_destroyed = 1) \
                     AND NOT EXISTS (SELECT 1 FROM jobs s WHERE s.id = jobs.session_id \
                                     AND s.vm_id IS NOT NULL AND s.vm_destroyed = 0) \
                     RETURNING id",
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
