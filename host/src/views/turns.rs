//! What status, listings, `continue_job` and `release_job` say about a
//! persistent job's session: which turn a job is, whether its VM is kept
//! and until when.

use schemars::JsonSchema;
use serde::Serialize;

use crate::clock::rfc3339;
use crate::jobs::session::Keep;
use crate::model::JobRecord;

/// A persistent job's session, as a status or listing shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SessionView {
    /// The session's first job (turn 1, the submitted job).
    pub session_id: String,
    /// This job's turn: 1 for the submitted job, 2, 3, ... for follow-ups.
    pub turn: u32,
    /// How many turns the session has.
    pub turns: u32,
    /// Whether the session's VM is kept (continue_job can start a turn in
    /// it once no turn runs).
    pub vm_kept: bool,
    /// While kept and idle: when it is destroyed unless continued
    /// (DELEGATE_PERSISTENT_TTL after the last turn's end), RFC 3339.
    pub kept_until: Option<String>,
    /// Why it is not kept, or which turn is using it.
    pub note: String,
}

impl SessionView {
    /// The session of `rec`, from its jobs (first turn first) and keep.
    pub fn of(rec: &JobRecord, jobs: &[JobRecord], keep: &Keep) -> Self {
        let (vm_kept, kept_until, note) = match keep {
            Keep::Until(t) => (
                true,
                Some(rfc3339(*t)),
                "kept and idle: continue_job starts the next turn, release_job ends it now".into(),
            ),
            Keep::InUse { job_id, turn } => (
                true,
                None,
                format!("kept; turn {turn} (job {job_id}) is using it"),
            ),
            Keep::Gone(why) => (false, None, format!("not kept: {why}")),
            Keep::NotPersistent => (false, None, "not persistent".into()),
        };
        SessionView {
            session_id: rec.session().to_string(),
            turn: rec.turn,
            turns: jobs.last().map_or(1, |r| r.turn),
            vm_kept,
            kept_until,
            note,
        }
    }
}

/// `continue_job`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ContinueView {
    /// The new turn's own job id: follow it like any job.
    pub job_id: String,
    /// The session's first job.
    pub session_id: String,
    /// The turn's number.
    pub turn: u32,
    /// Its state (pending).
    #[schemars(schema_with = "super::status_schema")]
    pub status: delegate_proto::JobState,
    /// What to do next.
    pub next: String,
}

impl ContinueView {
    /// The answer for the new turn `rec`.
    pub fn of(rec: &JobRecord) -> Self {
        ContinueView {
            job_id: rec.id.clone(),
            session_id: rec.session().to_string(),
            turn: rec.turn,
            status: rec.state,
            next: format!(
                "turn {} runs in the same VM and workspace; wait_for_job with job_id {} and \
                 get_job_result for its result and patch (patch: against the repository's \
                 base; turn_patch: this turn's own change)",
                rec.turn, rec.id
            ),
        }
    }
}

/// `release_job`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReleaseView {
    /// The session's first job.
    pub session_id: String,
    /// Always true: a refusal is an error.
    pub released: bool,
    /// The turn that was running and was cancelled, if one was.
    pub cancelled_turn: Option<String>,
    /// For people.
    pub message: String,
}
