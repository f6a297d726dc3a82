//! Applying a batch of guest events: de-duplicated by sequence number,
//! logs appended to their files, phase and progress on the job row, all in
//! one transaction.

use delegate_proto::JobState;
use delegate_proto::event::{Event, EventKind, LogStream};
use rusqlite::params;

use super::jobs::JobTx;
use super::{Store, StoreError, logs, make_private_dir};
use super::{db, row};
use crate::model::{LogSelector, LogSlice, UnixMs};

/// Limits applied while storing events: every byte and row a guest can
/// make the store keep is under one of them (the job layer decides them).
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Most bytes kept per job and stream.
    pub max_log_bytes: u64,
    /// Most phase, progress and dropped events kept per job; beyond it
    /// they still update the job row, and the log says so once.
    pub max_event_rows: u64,
    /// Most bytes of the host's own notes in a job's combined log (gap
    /// markers, dropped events, limit notices); one closing note may pass
    /// it by a line.
    pub max_note_bytes: u64,
}

/// The host's own lines in a job's combined log, within their budget. How
/// many bytes are notes follows from the committed lengths (combined minus
/// both streams), so the budget holds across batches and restarts.
struct Notes {
    used: u64,
    budget: u64,
}

impl Notes {
    /// Appends `text` while the budget is not spent; the note that spends
    /// it is followed by one closing note.
    fn add(&mut self, combined: &mut Vec<u8>, text: &str) {
        if self.used >= self.budget {
            return;
        }
        combined.extend_from_slice(text.as_bytes());
        self.used += text.len() as u64;
        if self.used >= self.budget {
            let closing = format!(
                "\n[delegate: the host's notes in this log passed {} bytes; \
                 further notes are not stored]\n",
                self.budget
            );
            combined.extend_from_slice(closing.as_bytes());
            self.used += closing.len() as u64;
        }
    }
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventsApplied {
    /// The highest sequence held after the batch (events are taken only
    /// in order, so everything up to it is held).
    pub highest_seq: u64,
    /// The job's state after the batch.
    pub state: Option<JobState>,
    /// The state changed (set by the job layer's `then`).
    pub state_changed: bool,
    /// Phase, progress or message changed.
    pub progress_changed: bool,
    /// Log bytes were added.
    pub log_changed: bool,
    /// Events applied (not duplicates).
    pub applied: usize,
}

struct LogState {
    stdout_bytes: u64,
    stderr_bytes: u64,
    combined_bytes: u64,
    stdout_end: u64,
    stderr_end: u64,
    truncated: bool,
}

impl Store {
    /// Applies the events of one batch that follow the highest sequence
    /// held, in order, stopping at the first gap. Duplicates change nothing
    /// but still count as a sign of life. `then` runs last, in the same
    /// transaction, with what the batch did: the job layer's say on the
    /// job's state (it may change it and `out.state` with it).
    pub fn apply_events(
        &self,
        id: &str,
        events: &[Event],
        limits: EventLimits,
        now: UnixMs,
        mut then: impl FnMut(&JobTx<'_>, &mut EventsApplied) -> Result<(), StoreError>,
    ) -> Result<EventsApplied, StoreError> {
        let dir = self.logs_dir(id);
        self.write(|tx| {
            let row = db::query_one(tx,
                    "SELECT state, highest_seq, stdout_bytes, stderr_bytes, combined_bytes, \
                     stdout_guest_end, stderr_guest_end, log_truncated FROM jobs WHERE id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            LogState {
                                stdout_bytes: r.get::<_, i64>(2)? as u64,
                                stderr_bytes: r.get::<_, i64>(3)? as u64,
                                combined_bytes: r.get::<_, i64>(4)? as u64,
                                stdout_end: r.get::<_, i64>(5)? as u64,
                                stderr_end: r.get::<_, i64>(6)? as u64,
                                truncated: r.get(7)?,
                            },
                        ))
                    },
                )
                .map_err(|e| self.sqlite(e))?
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let (state_text, highest, mut logs_state) = row;
            let state = row::state(id, &state_text)?;
            let mut notes = Notes {
                used: logs_state
                    .combined_bytes
                    .saturating_sub(logs_state.stdout_bytes + logs_state.stderr_bytes),
                budget: limits.max_note_bytes,
            };
            let mut rows: u64 = db::query_one(
                tx,
                "SELECT count(*) FROM events WHERE job_id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| self.sqlite(e))?
            .unwrap_or(0)
            .max(0) as u64;
            let mut out = EventsApplied {
                highest_seq: highest.max(0) as u64,
                ..Default::default()
            };
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            let mut combined = Vec::new();
            let mut phase = None;
            let mut progress = None;
            let mut message = None;
            for event in events {
                if event.seq <= out.highest_seq {
                    continue;
                }
                if event.seq != out.highest_seq + 1 {
                    break;
                }
                out.highest_seq = event.seq;
                out.applied += 1;
                match &event.kind {
                    EventKind::Log(chunk) => {
                        let Ok(bytes) = chunk.bytes() else {
                            continue;
                        };
                        let (buf, end, kept) = match chunk.stream {
                            LogStream::Stdout => (
                                &mut stdout,
                                &mut logs_state.stdout_end,
                                logs_state.stdout_bytes,
                            ),
                            LogStream::Stderr => (
                                &mut stderr,
                                &mut logs_state.stderr_end,
                                logs_state.stderr_bytes,
                            ),
                        };
                        // The job layer refuses such chunks with a 400; the
                        // store still never overflows on one.
                        let Some(chunk_end) = chunk.offset.checked_add(bytes.len() as u64)
                        else {
                            continue;
                        };
                        if chunk_end <= *end {
                            continue;
                        }
                        if chunk.offset > *end {
                            let gap = format!(
                                "\n[delegate: {} bytes of {} were lost]\n",
                                chunk.offset - *end,
                                chunk.stream.as_str()
                            );
                            notes.add(&mut combined, &gap);
                        }
                        let skip = end.saturating_sub(chunk.offset) as usize;
                        *end = chunk_end;
                        let room = limits
                            .max_log_bytes
                            .saturating_sub(kept + buf.len() as u64)
                            as usize;
                        let new = &bytes[skip..];
                        let take = new.len().min(room);
                        buf.extend_from_slice(&new[..take]);
                        combined.extend_from_slice(&new[..take]);
                        if take < new.len() && !logs_state.truncated {
                            logs_state.truncated = true;
                            let note = format!(
                                "\n[delegate: {} passed the log limit of {} bytes; \
                                 the rest is not stored]\n",
                                chunk.stream.as_str(),
                                limits.max_log_bytes
                            );
                            notes.add(&mut combined, &note);
                        }
                    }
                    EventKind::Phase { phase: p, message: m } => {
                        phase = Some(*p);
                        if m.is_some() {
                            message = m.clone();
                        }
                        self.keep_event(tx, id, event, &mut rows, limits, &mut notes, &mut combined)?;
                    }
                    EventKind::Progress { percent, message: m } => {
                        if percent.is_some() {
                            progress = *percent;
                        }
                        message = Some(m.clone());
                        self.keep_event(tx, id, event, &mut rows, limits, &mut notes, &mut combined)?;
                    }
                    EventKind::Dropped { first_seq, last_seq, reason } => {
                        let note = format!(
                            "\n[delegate: the guest dropped events {first_seq}..={last_seq}: {reason}]\n"
                        );
                        notes.add(&mut combined, &note);
                        self.keep_event(tx, id, event, &mut rows, limits, &mut notes, &mut combined)?;
                    }
                    EventKind::Heartbeat { .. } => {}
                }
            }
            if !stdout.is_empty() || !stderr.is_empty() || !combined.is_empty() {
                make_private_dir(&dir)?;
                logs_state.stdout_bytes = logs::append(
                    &dir.join("stdout.log"),
                    logs_state.stdout_bytes,
                    &stdout,
                )?;
                logs_state.stderr_bytes = logs::append(
                    &dir.join("stderr.log"),
                    logs_state.stderr_bytes,
                    &stderr,
                )?;
                logs_state.combined_bytes = logs::append(
                    &dir.join("combined.log"),
                    logs_state.combined_bytes,
                    &combined,
                )?;
                out.log_changed = true;
            }
            out.progress_changed = phase.is_some() || progress.is_some() || message.is_some();
            tx.execute(
                "UPDATE jobs SET highest_seq = ?2, last_event_at = ?3, \
                 stdout_bytes = ?4, stderr_bytes = ?5, combined_bytes = ?6, \
                 stdout_guest_end = ?7, stderr_guest_end = ?8, log_truncated = ?9, \
                 phase = coalesce(?10, phase), progress = coalesce(?11, progress), \
                 message = coalesce(?12, message) WHERE id = ?1",
                params![
                    id,
                    out.highest_seq as i64,
                    now,
                    logs_state.stdout_bytes as i64,
                    logs_state.stderr_bytes as i64,
                    logs_state.combined_bytes as i64,
                    logs_state.stdout_end as i64,
                    logs_state.stderr_end as i64,
                    logs_state.truncated,
                    phase.map(|p| p.as_str()),
                    progress,
                    message,
                ],
            )
            .map_err(|e| self.sqlite(e))?;
            out.state = Some(state);
            then(&JobTx { store: self, tx, id, now }, &mut out)?;
            Ok(out)
        })
    }

    /// Stores `event` as one of the job's history rows while there is room
    /// (`rows` counts them); the row that fills the room is followed by a
    /// note in the log.
    #[allow(clippy::too_many_arguments)]
    fn keep_event(
        &self,
        tx: &rusqlite::Transaction<'_>,
        id: &str,
        event: &Event,
        rows: &mut u64,
        limits: EventLimits,
        notes: &mut Notes,
        combined: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        if *rows >= limits.max_event_rows {
            return Ok(());
        }
        self.insert_event(tx, id, event)?;
        *rows += 1;
        if *rows == limits.max_event_rows {
            let note = format!(
                "\n[delegate: the job's history reached {} phase, progress and dropped \
                 events; later ones update its status but are not kept]\n",
                limits.max_event_rows
            );
            notes.add(combined, &note);
        }
        Ok(())
    }

    fn insert_event(
        &self,
        tx: &rusqlite::Transaction<'_>,
        id: &str,
        event: &Event,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(&event.kind).unwrap_or_default();
        let kind = match &event.kind {
            EventKind::Phase { .. } => "phase",
            EventKind::Progress { .. } => "progress",
            EventKind::Log(_) => "log",
            EventKind::Heartbeat { .. } => "heartbeat",
            EventKind::Dropped { .. } => "dropped",
        };
        tx.prepare_cached(
            "INSERT OR IGNORE INTO events (job_id, seq, time_ms, kind, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![id, event.seq as i64, event.time_ms as i64, kind, body]))
        .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// Reads a job's log from a byte cursor; `None` when the cursor is past
    /// the end.
    pub fn read_log(
        &self,
        id: &str,
        which: LogSelector,
        cursor: u64,
        max_bytes: usize,
    ) -> Result<Option<LogSlice>, StoreError> {
        let [slice] = self.read_logs(id, [(which, LogStart::Cursor(cursor))], max_bytes)?;
        Ok(slice)
    }

    /// The last `max_bytes` of each of a job's logs in `which` (its recent
    /// output), in that order, read against one committed state.
    pub fn read_log_tails<const N: usize>(
        &self,
        id: &str,
        which: [LogSelector; N],
        max_bytes: usize,
    ) -> Result<[LogSlice; N], StoreError> {
        let slices = self.read_logs(id, which.map(|w| (w, LogStart::Tail)), max_bytes)?;
        // A tail always starts inside its log, so every read has a slice.
        Ok(slices.map(Option::unwrap_or_default))
    }

    /// Reads each `(log, start)`: one look at the committed lengths, then
    /// the files (none for an empty log). `None` where a cursor is past the
    /// committed end.
    fn read_logs<const N: usize>(
        &self,
        id: &str,
        reads: [(LogSelector, LogStart); N],
        max_bytes: usize,
    ) -> Result<[Option<LogSlice>; N], StoreError> {
        let (lengths, state) = self.read(|conn| {
            db::query_one(
                conn,
                "SELECT stdout_bytes, stderr_bytes, combined_bytes, state FROM jobs WHERE id = ?1",
                [id],
                |r| {
                    let len = |i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
                    Ok(([len(0)?, len(1)?, len(2)?], r.get::<_, String>(3)?))
                },
            )
            .map_err(|e| self.sqlite(e))?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
        })?;
        let state = row::state(id, &state)?;
        let dir = self.logs_dir(id);
        let mut out = [const { None }; N];
        for (slot, (which, start)) in out.iter_mut().zip(reads) {
            let (len, file) = match which {
                LogSelector::Stream(LogStream::Stdout) => (lengths[0], "stdout.log"),
                LogSelector::Stream(LogStream::Stderr) => (lengths[1], "stderr.log"),
                LogSelector::Combined => (lengths[2], "combined.log"),
            };
            let cursor = match start {
                LogStart::Cursor(c) if c > len => continue,
                LogStart::Cursor(c) => c,
                LogStart::Tail => len.saturating_sub(max_bytes as u64),
            };
            let data = logs::read(&dir.join(file), cursor, len, max_bytes)?;
            let next_cursor = cursor + data.len() as u64;
            *slot = Some(LogSlice {
                data,
                start: cursor,
                next_cursor,
                complete: state.is_final() && next_cursor >= len,
            });
        }
        Ok(out)
    }

    /// Events of kind phase, progress and dropped stored for a job, oldest
    /// first, as `(seq, kind, json body)`.
    pub fn stored_events(&self, id: &str) -> Result<Vec<(u64, String, String)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT seq, kind, body FROM events WHERE job_id = ?1 ORDER BY seq")
                .map_err(|e| self.sqlite(e))?;
            stmt.query_map([id], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sqlite(e))
        })
    }
}

/// Where a log read starts.
#[derive(Clone, Copy)]
enum LogStart {
    /// A cursor a previous read returned (or 0).
    Cursor(u64),
    /// `max_bytes` before the committed end.
    Tail,
}
