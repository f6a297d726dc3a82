//! Mapping between `jobs` rows and [`JobRecord`]s: the one place that knows
//! how each column encodes its value.

use delegate_proto::JobState;
use delegate_proto::event::Phase;
use delegate_proto::outcome::ErrorKind;
use rusqlite::Row;
use serde::de::DeserializeOwned;

use super::StoreError;
use crate::model::{JobRecord, StoredResult, VmStart};
use crate::provider::{Isolation, VmRef};

/// The columns [`record`] reads, in order.
pub const RECORD_COLUMNS: &str = "id, state, manifest, phase, progress, message, error, \
    error_kind, created_at, started_at, completed_at, deadline_at, last_event_at, highest_seq, \
    vm_provider, vm_id, vm_node, isolation, vm_destroyed, result, session_id, turn, released_at, start_kind, start_ms, warnings";

/// A row of [`RECORD_COLUMNS`] before decoding, so decode errors can name
/// the job and column instead of surfacing as SQLite errors.
pub struct RawRecord {
    id: String,
    state: String,
    manifest: String,
    phase: Option<String>,
    progress: Option<f64>,
    message: Option<String>,
    error: Option<String>,
    error_kind: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    completed_at: Option<i64>,
    deadline_at: i64,
    last_event_at: Option<i64>,
    highest_seq: i64,
    vm_provider: Option<String>,
    vm_id: Option<String>,
    vm_node: Option<String>,
    isolation: String,
    vm_destroyed: bool,
    result: Option<String>,
    session_id: Option<String>,
    turn: i64,
    released_at: Option<i64>,
    start_kind: Option<String>,
    start_ms: Option<i64>,
    warnings: Option<String>,
}

/// Reads a row selected with [`RECORD_COLUMNS`].
pub fn raw(row: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: row.get(0)?,
        state: row.get(1)?,
        manifest: row.get(2)?,
        phase: row.get(3)?,
        progress: row.get(4)?,
        message: row.get(5)?,
        error: row.get(6)?,
        error_kind: row.get(7)?,
        created_at: row.get(8)?,
        started_at: row.get(9)?,
        completed_at: row.get(10)?,
        deadline_at: row.get(11)?,
        last_event_at: row.get(12)?,
        highest_seq: row.get(13)?,
        vm_provider: row.get(14)?,
        vm_id: row.get(15)?,
        vm_node: row.get(16)?,
        isolation: row.get(17)?,
        vm_destroyed: row.get(18)?,
        result: row.get(19)?,
        session_id: row.get(20)?,
        turn: row.get(21)?,
        released_at: row.get(22)?,
        start_kind: row.get(23)?,
        start_ms: row.get(24)?,
        warnings: row.get(25)?,
    })
}

/// Encodes a unit-like enum as its serde name (`"lost"`, `"running"`).
pub fn enum_text<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => other.map(|v| v.to_string()).unwrap_or_default(),
    }
}

fn decode_enum<T: DeserializeOwned>(
    job_id: &str,
    field: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|e| {
        StoreError::Decode {
            job_id: job_id.to_string(),
            field,
            message: e.to_string(),
        }
    })
}

fn decode_json<T: DeserializeOwned>(
    job_id: &str,
    field: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Decode {
        job_id: job_id.to_string(),
        field,
        message: e.to_string(),
    })
}

/// Parses a stored state.
pub fn state(job_id: &str, text: &str) -> Result<JobState, StoreError> {
    text.parse().map_err(|message| StoreError::Decode {
        job_id: job_id.to_string(),
        field: "state",
        message,
    })
}

impl RawRecord {
    /// Decodes into a record (artifacts are filled in by the caller).
    pub fn decode(self) -> Result<JobRecord, StoreError> {
        let id = self.id;
        let vm = match (self.vm_provider, self.vm_id) {
            (Some(provider), Some(vm_id)) => Some(VmRef {
                provider,
                id: vm_id,
                node: self.vm_node,
            }),
            _ => None,
        };
        Ok(JobRecord {
            state: state(&id, &self.state)?,
            manifest: decode_json(&id, "manifest", &self.manifest)?,
            phase: self
                .phase
                .as_deref()
                .map(|p| decode_enum::<Phase>(&id, "phase", p))
                .transpose()?,
            progress: self.progress,
            message: self.message,
            error: self.error,
            error_kind: self
                .error_kind
                .as_deref()
                .map(|k| decode_enum::<ErrorKind>(&id, "error_kind", k))
                .transpose()?,
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            deadline_at: self.deadline_at,
            last_event_at: self.last_event_at,
            highest_seq: self.highest_seq.max(0) as u64,
            vm,
            isolation: decode_enum::<Isolation>(&id, "isolation", &self.isolation)?,
            vm_destroyed: self.vm_destroyed,
            vm_start: match (self.start_kind.as_deref(), self.start_ms) {
                (Some(kind), Some(ms)) => Some(VmStart {
                    warm: kind == "warm",
                    ms: ms.max(0) as u64,
                }),
                _ => None,
            },
            result: self
                .result
                .as_deref()
                .map(|r| decode_json::<StoredResult>(&id, "result", r))
                .transpose()?,
            artifacts: Vec::new(),
            session_id: self.session_id,
            turn: self.turn.clamp(1, u32::MAX as i64) as u32,
            released_at: self.released_at,
            warnings: self
                .warnings
                .as_deref()
                .map(|w| decode_json::<Vec<String>>(&id, "warnings", w))
                .transpose()?
                .unwrap_or_default(),
            id,
        })
    }
}
