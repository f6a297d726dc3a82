//! Job rows: creation, reads, listing, the job-scoped write transaction
//! ([`JobTx`]) that state changes, results and cancel flags go through, and
//! VM bookkeeping. The store never decides which state a job goes to.

use delegate_proto::outcome::ErrorKind;
use delegate_proto::{JobManifest, JobState};
use rusqlite::{Transaction, params};

use super::db;
use super::row::{self, RECORD_COLUMNS, enum_text};
use super::{Store, StoreError};
use crate::clock::rfc3339;
use crate::model::{JobRecord, JobSummary, Page, StoredResult, UnixMs};
use crate::provider::{Isolation, VmRef};

/// A job as the manager creates it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The id.
    pub id: String,
    /// The validated manifest.
    pub manifest: JobManifest,
    /// SHA-256 of the job's callback token.
    pub token_hash: [u8; 32],
    /// Submission time.
    pub created_at: UnixMs,
    /// created_at + the queue timeout (the engine sets the job's own
    /// deadline when it starts provisioning).
    pub deadline_at: UnixMs,
    /// The provider's isolation.
    pub isolation: Isolation,
}

/// What the callback API needs to decide whether a token is still good.
#[derive(Debug, Clone)]
pub struct AuthView {
    /// SHA-256 of the job's token.
    pub token_hash: [u8; 32],
    /// The state.
    pub state: JobState,
    /// When it became final.
    pub completed_at: Option<UnixMs>,
    /// Whether the guest's result is stored.
    pub has_result: bool,
}

/// The longest task summary in listings, in characters.
const SUMMARY_CHARS: usize = 100;

pub(super) fn summary(task: &str) -> String {
    let line = task
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() <= SUMMARY_CHARS {
        line.to_string()
    } else {
        let cut: String = line.chars().take(SUMMARY_CHARS - 1).collect();
        format!("{cut}…")
    }
}

fn manifest_json(job_id: &str, m: &JobManifest) -> Result<String, StoreError> {
    serde_json::to_string(m).map_err(|e| StoreError::Decode {
        job_id: job_id.to_string(),
        field: "manifest",
        message: e.to_string(),
    })
}

impl Store {
    /// Inserts a new `pending` job.
    pub fn insert_job(&self, job: &NewJob) -> Result<JobRecord, StoreError> {
        let manifest = manifest_json(&job.id, &job.manifest)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO jobs (id, state, manifest, agent_type, task_summary, persistent, \
                 token_hash, isolation, created_at, deadline_at) \
                 VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    job.id,
                    manifest,
                    job.manifest.agent_type.as_str(),
                    // Listings show it and it outlives the clear manifest.
                    summary(&job.manifest.redacted().task),
                    job.manifest.lifecycle() == delegate_proto::Lifecycle::Persistent,
                    &job.token_hash[..],
                    enum_text(&job.isolation),
                    job.created_at,
                    job.deadline_at,
                ],
            )
            .map_err(|e| self.sqlite(e))?;
            Ok(())
        })?;
        self.get_job(&job.id)
    }

    /// The job's record, artifacts included.
    pub fn get_job(&self, id: &str) -> Result<JobRecord, StoreError> {
        self.read(|conn| {
            // One snapshot for the row and its artifacts (and one read lock).
            let snapshot = conn.unchecked_transaction().map_err(|e| self.sqlite(e))?;
            let conn: &rusqlite::Connection = &snapshot;
            let raw = db::query_one(
                conn,
                &format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                row::raw,
            )
            .map_err(|e| self.sqlite(e))?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let mut record = raw.decode()?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT path, size, sha256 FROM artifacts WHERE job_id = ?1 ORDER BY path",
                )
                .map_err(|e| self.sqlite(e))?;
            record.artifacts = stmt
                .query_map([id], |r| {
                    Ok(delegate_proto::ArtifactEntry {
                        path: r.get(0)?,
                        size: r.get::<_, i64>(1)?.max(0) as u64,
                        sha256: r.get(2)?,
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| self.sqlite(e))?;
            drop(stmt);
            snapshot.finish().map_err(|e| self.sqlite(e))?;
            Ok(record)
        })
    }

    /// Summaries, newest first. The cursor is the one a previous page
    /// returned.
    pub fn list_jobs(
        &self,
        status: Option<JobState>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<JobSummary>, StoreError> {
        let before: Option<i64> = match cursor {
            None => None,
            Some(c) => Some(
                c.strip_prefix('c')
                    .and_then(|n| n.parse::<i64>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| StoreError::BadCursor(c.to_string()))?,
            ),
        };
        let limit = limit.clamp(1, 10_000);
        self.read(|conn| {
            // Two statements rather than `?1 IS NULL OR ...`, so each can use
            // its index (the primary key, or `jobs_by_state`).
            let sql = if status.is_some() {
                "SELECT seq, id, state, agent_type, task_summary, created_at, completed_at, \
                 persistent, session_id, turn FROM jobs WHERE state = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            } else {
                "SELECT seq, id, state, agent_type, task_summary, created_at, completed_at, \
                 persistent, session_id, turn FROM jobs WHERE ?1 IS NULL AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            };
            let mut stmt = conn.prepare_cached(sql).map_err(|e| self.sqlite(e))?;
            let rows = stmt
                .query_map(
                    params![
                        status.map(|s| s.as_str()),
                        before.unwrap_or(i64::MAX),
                        (limit + 1) as i64
                    ],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            // Parsed from the row's text: no string per row.
                            r.get_ref(2)?
                                .as_str()
                                .map_err(|e| {
                                    rusqlite::Error::FromSqlConversionFailure(
                                        2,
                                        rusqlite::types::Type::Text,
                                        Box::new(e),
                                    )
                                })?
                                .parse::<JobState>(),
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, Option<i64>>(6)?,
                            (
                                r.get::<_, bool>(7)?,
                                r.get::<_, Option<String>>(8)?,
                                r.get::<_, i64>(9)?,
                            ),
                        ))
                    },
                )
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| self.sqlite(e))?;
            let more = rows.len() > limit;
            let mut items = Vec::with_capacity(rows.len().min(limit));
            let mut last_seq = None;
            for (seq, id, state, agent_type, task, created, completed, (persistent, session_id, turn)) in
                rows.into_iter().take(limit)
            {
                last_seq = Some(seq);
                items.push(JobSummary {
                    status: state.map_err(|message| StoreError::Decode {
                        job_id: id.clone(),
                        field: "state",
                        message,
                    })?,
                    job_id: id,
                    agent_type,
                    task,
                    created_at: rfc3339(created),
                    completed_at: completed.map(rfc3339),
                    persistent,
                    session_id,
                    turn: turn.clamp(1, u32::MAX as i64) as u32,
                });
            }
            Ok(Page {
                items,
                next_cursor: if more {
                    last_seq.map(|s| format!("c{s}"))
                } else {
                    None
                },
            })
        })
    }

    /// Runs `f` on the job's row inside one write transaction: the job
    /// layer reads the row through [`JobTx`], decides, and makes its changes
    /// through it, so nothing can change the row between the decision and
    /// the write. `f` may run more than once (see `write`); an error from it
    /// rolls everything back.
    pub fn with_job<T>(
        &self,
        id: &str,
        now: UnixMs,
        mut f: impl FnMut(&JobTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write(|tx| {
            f(&JobTx {
                store: self,
                tx,
                id,
                now,
            })
        })
    }

    /// Records the VM a provider created for the job.
    pub fn set_vm(&self, id: &str, vm: &VmRef, isolation: Isolation) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE jobs SET vm_provider = ?2, vm_id = ?3, vm_node = ?4, isolation = ?5, \
             vm_destroyed = 0 WHERE id = ?1",
            params![id, vm.provider, vm.id, vm.node, enum_text(&isolation)],
        )
    }

    /// Records what the provider could not do for the job's VM.
    pub fn set_warnings(&self, id: &str, warnings: &[String]) -> Result<(), StoreError> {
        let text = (!warnings.is_empty())
            .then(|| serde_json::to_string(warnings))
            .transpose()
            .map_err(|e| StoreError::Decode {
                job_id: id.to_string(),
                field: "warnings",
                message: e.to_string(),
            })?;
        self.update(
            id,
            "UPDATE jobs SET warnings = ?2 WHERE id = ?1",
            params![id, text],
        )
    }

    /// Records that provisioning finished (the guest has its bootstrap).
    pub fn mark_provisioned(&self, id: &str, now: UnixMs) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE jobs SET provisioned_at = ?2 WHERE id = ?1",
            params![id, now],
        )
    }

    /// Forgets a VM whose provisioning was abandoned, so it is provisioned
    /// afresh (after the caller destroyed it).
    pub fn clear_vm(&self, id: &str) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE jobs SET vm_provider = NULL, vm_id = NULL, vm_node = NULL, \
             provisioned_at = NULL, vm_destroyed = 0 WHERE id = ?1",
            params![id],
        )
    }

    /// Records that the job's VM is gone.
    pub fn mark_vm_destroyed(&self, id: &str) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE jobs SET vm_destroyed = 1 WHERE id = ?1",
            params![id],
        )
    }

    /// Replaces the job's token hash (a new token for each provisioning).
    pub fn set_token_hash(&self, id: &str, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE jobs SET token_hash = ?2 WHERE id = ?1",
            params![id, &hash[..]],
        )
    }

    /// Records a sign of life from the guest.
    pub fn touch(&self, id: &str, now: UnixMs) -> Result<(), StoreError> {
        self.update(
            id,
            "UPDATE jobs SET last_event_at = ?2 WHERE id = ?1",
            params![id, now],
        )
    }

    /// Ids of `pending` jobs whose deadline has passed.
    pub fn pending_past_deadline(&self, now: UnixMs) -> Result<Vec<String>, StoreError> {
        self.ids(
            "SELECT id FROM jobs WHERE state = 'pending' AND deadline_at <= ?1 ORDER BY seq",
            params![now],
        )
    }

    /// Whether provisioning finished for the job.
    pub fn is_provisioned(&self, id: &str) -> Result<bool, StoreError> {
        self.read(|conn| {
            db::query_one(
                conn,
                "SELECT provisioned_at IS NOT NULL FROM jobs WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(|e| self.sqlite(e))?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
        })
    }

    pub(super) fn update(
        &self,
        id: &str,
        sql: &str,
        params: impl rusqlite::Params + Clone,
    ) -> Result<(), StoreError> {
        let n = self.write(|tx| tx.execute(sql, params.clone()).map_err(|e| self.sqlite(e)))?;
        if n == 0 {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// What deciding on a callback token needs.
    pub fn auth_view(&self, id: &str) -> Result<AuthView, StoreError> {
        self.read(|conn| {
            let (hash, state, completed_at, has_result) = db::query_one(
                conn,
                "SELECT token_hash, state, completed_at, result IS NOT NULL \
                     FROM jobs WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                },
            )
            .map_err(|e| self.sqlite(e))?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let token_hash: [u8; 32] = hash.try_into().map_err(|_| StoreError::Decode {
                job_id: id.to_string(),
                field: "token_hash",
                message: "not 32 bytes".into(),
            })?;
            Ok(AuthView {
                token_hash,
                state: row::state(id, &state)?,
                completed_at,
                has_result,
            })
        })
    }

    /// Ids of `pending` jobs, oldest first.
    pub fn pending_ids(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.ids(
            "SELECT id FROM jobs WHERE state = 'pending' ORDER BY seq LIMIT ?1",
            params![limit as i64],
        )
    }

    /// Ids of jobs in any of `states`, oldest first.
    pub fn ids_in_states(&self, states: &[JobState]) -> Result<Vec<String>, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        self.ids(
            "SELECT id FROM jobs WHERE state IN (SELECT value FROM json_each(?1)) ORDER BY seq",
            params![serde_json::Value::from(names).to_string()],
        )
    }

    /// Ids of final jobs whose VM was created and not destroyed, except
    /// persistent jobs that ran and were neither cancelled nor lost (their
    /// VMs are kept on purpose).
    pub fn final_ids_with_vm(&self) -> Result<Vec<String>, StoreError> {
        self.ids(
            "SELECT id FROM jobs WHERE state IN ('success','failed','timeout','cancelled') \
             AND vm_id IS NOT NULL AND vm_destroyed = 0 \
             AND NOT (persistent = 1 AND provisioned_at IS NOT NULL AND state <> 'cancelled' \
                      AND coalesce(error_kind, '') <> 'lost') \
             ORDER BY seq",
            [],
        )
    }

    fn ids(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(sql).map_err(|e| self.sqlite(e))?;
            stmt.query_map(params, |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.sqlite(e))
        })
    }
}

/// A job's row as a state decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateView {
    /// The state.
    pub state: JobState,
    /// When it became final.
    pub completed_at: Option<UnixMs>,
    /// Whether the guest's result is stored.
    pub has_result: bool,
}

/// One job's row inside a write transaction ([`Store::with_job`]). It
/// offers primitives only: which state a job goes to is decided by the
/// caller (the job layer, through `JobState::transition`).
pub struct JobTx<'a> {
    pub(super) store: &'a Store,
    pub(super) tx: &'a Transaction<'a>,
    pub(super) id: &'a str,
    pub(super) now: UnixMs,
}

impl JobTx<'_> {
    /// The job's id.
    pub fn id(&self) -> &str {
        self.id
    }

    /// The row's state, completion time and whether a result is stored.
    pub fn view(&self) -> Result<StateView, StoreError> {
        let (state, completed_at, has_result) = db::query_one(
            self.tx,
            "SELECT state, completed_at, result IS NOT NULL FROM jobs WHERE id = ?1",
            [self.id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            },
        )
        .map_err(|e| self.store.sqlite(e))?
        .ok_or_else(|| StoreError::NotFound(self.id.to_string()))?;
        Ok(StateView {
            state: row::state(self.id, &state)?,
            completed_at,
            has_result,
        })
    }

    /// Compare-and-set: moves the row from `from` to `to` and stamps the
    /// step's time (`started_at`, `running_at`, `completed_at`); records
    /// why when a reason is given. A row no longer in `from` is
    /// [`StoreError::StateMoved`] and changes nothing.
    pub fn set_state(
        &self,
        from: JobState,
        to: JobState,
        reason: Option<(&str, ErrorKind)>,
    ) -> Result<(), StoreError> {
        let sqlite = |e| self.store.sqlite(e);
        let manifest: String = db::query_one(
            self.tx,
            "SELECT manifest FROM jobs WHERE id = ?1",
            [self.id],
            |r| r.get(0),
        )
        .map_err(sqlite)?
        .ok_or_else(|| StoreError::NotFound(self.id.to_string()))?;
        // Once a job is over nobody needs its secrets: keep only the
        // redacted manifest at rest.
        let manifest = if to.is_final() {
            let m: JobManifest =
                serde_json::from_str(&manifest).map_err(|e| StoreError::Decode {
                    job_id: self.id.to_string(),
                    field: "manifest",
                    message: e.to_string(),
                })?;
            manifest_json(self.id, &m.redacted())?
        } else {
            manifest
        };
        let changed = self
            .tx
            .execute(
                "UPDATE jobs SET state = ?2, manifest = ?3, \
                 started_at = CASE WHEN ?2 = 'provisioning' THEN coalesce(started_at, ?4) ELSE started_at END, \
                 running_at = CASE WHEN ?2 = 'running' THEN coalesce(running_at, ?4) ELSE running_at END, \
                 completed_at = CASE WHEN ?5 THEN ?4 ELSE completed_at END, \
                 error = coalesce(?6, error), error_kind = coalesce(?7, error_kind) \
                 WHERE id = ?1 AND state = ?8",
                params![
                    self.id,
                    to.as_str(),
                    manifest,
                    self.now,
                    to.is_final(),
                    reason.map(|r| r.0),
                    reason.map(|r| enum_text(&r.1)),
                    from.as_str(),
                ],
            )
            .map_err(sqlite)?;
        if changed == 0 {
            return Err(StoreError::StateMoved {
                job_id: self.id.to_string(),
                expected: from,
            });
        }
        Ok(())
    }

    /// Stores the guest's result (the caller decided it is taken).
    pub fn save_result(&self, result: &StoredResult) -> Result<(), StoreError> {
        let json = serde_json::to_string(result).map_err(|e| StoreError::Decode {
            job_id: self.id.to_string(),
            field: "result",
            message: e.to_string(),
        })?;
        self.tx
            .execute(
                "UPDATE jobs SET result = ?2, result_at = ?3 WHERE id = ?1",
                params![self.id, json, self.now],
            )
            .map_err(|e| self.store.sqlite(e))?;
        Ok(())
    }

    /// Sets the job's deadline (unix ms): the queue's while it is pending,
    /// its own timeout's from provisioning on.
    pub fn set_deadline(&self, at: UnixMs) -> Result<(), StoreError> {
        self.tx
            .execute(
                "UPDATE jobs SET deadline_at = ?2 WHERE id = ?1",
                rusqlite::params![self.id, at],
            )
            .map_err(|e| self.store.sqlite(e))?;
        Ok(())
    }

    /// Flags the job for the engine's cancel poll
    /// ([`Store::take_cancel_requests`]).
    pub fn flag_cancel(&self) -> Result<(), StoreError> {
        self.tx
            .execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
                [self.id],
            )
            .map_err(|e| self.store.sqlite(e))?;
        Ok(())
    }
}
