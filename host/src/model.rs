//! The host's own view of a job, as the store keeps it and the job manager
//! hands it to the MCP layer and the CLI. It sits below both `store` and
//! `jobs`, so the store never reaches up into the job manager for its types.

use delegate_proto::event::Phase;
use delegate_proto::outcome::{AgentResult, ArtifactEntry, ErrorKind, OutputTails};
use delegate_proto::{JobManifest, JobState, LogStream};
use serde::{Deserialize, Serialize};

use crate::provider::{Isolation, VmRef};

pub use crate::clock::UnixMs;

/// Everything the host knows about one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The job id (a UUID).
    pub id: String,
    /// The state, only ever changed through `JobState::transition`.
    pub state: JobState,
    /// The manifest as submitted. Secrets included: never show it without
    /// [`JobManifest::redacted`].
    pub manifest: JobManifest,
    /// The guest's current phase.
    pub phase: Option<Phase>,
    /// Percent done, when known.
    pub progress: Option<f64>,
    /// The latest status line.
    pub message: Option<String>,
    /// Why the job failed, timed out or was cancelled.
    pub error: Option<String>,
    /// The same, for programs.
    pub error_kind: Option<ErrorKind>,
    /// When the job was submitted.
    pub created_at: UnixMs,
    /// When provisioning began.
    pub started_at: Option<UnixMs>,
    /// When the job became final.
    pub completed_at: Option<UnixMs>,
    /// When the job must be final: while pending the queue's deadline,
    /// from provisioning on its own (provisioning start + timeout).
    pub deadline_at: UnixMs,
    /// When the last event arrived from the guest.
    pub last_event_at: Option<UnixMs>,
    /// Highest event sequence stored.
    pub highest_seq: u64,
    /// The VM, once the provider created one.
    pub vm: Option<VmRef>,
    /// The isolation the provider gives.
    pub isolation: Isolation,
    /// Whether the VM has been destroyed.
    pub vm_destroyed: bool,
    /// How the VM was started and how long it took, once it was.
    pub vm_start: Option<VmStart>,
    /// The guest's result, once it arrived.
    pub result: Option<StoredResult>,
    /// Stored artifacts.
    pub artifacts: Vec<ArtifactEntry>,
    /// For a follow-up turn: the session's first job, whose VM it runs in.
    pub session_id: Option<String>,
    /// The turn's number: 1 for a submitted job, 2, 3, ... for follow-ups.
    pub turn: u32,
    /// For a persistent job's first turn: when its kept VM was released.
    pub released_at: Option<UnixMs>,
    /// What the provider could not do for the job's VM that the host's
    /// settings ask for (egress not enforced, say), for its status.
    pub warnings: Vec<String>,
}

impl JobRecord {
    /// The id of the session this job belongs to: its first job's.
    pub fn session(&self) -> &str {
        self.session_id.as_deref().unwrap_or(&self.id)
    }
}

#[cfg(test)]
impl JobRecord {
    /// Job `id` in `state` running `manifest` and nothing else known yet,
    /// for unit tests to fill in what they test.
    pub(crate) fn blank(id: &str, state: JobState, manifest: JobManifest) -> Self {
        JobRecord {
            id: id.into(),
            state,
            manifest,
            phase: None,
            progress: None,
            message: None,
            error: None,
            error_kind: None,
            created_at: 0,
            started_at: None,
            completed_at: None,
            deadline_at: 0,
            last_event_at: None,
            highest_seq: 0,
            vm: None,
            isolation: Isolation::Vm,
            vm_destroyed: false,
            vm_start: None,
            result: None,
            artifacts: Vec::new(),
            session_id: None,
            turn: 1,
            released_at: None,
            warnings: Vec::new(),
        }
    }
}

/// How a job's VM came to be, for its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmStart {
    /// Taken from a warm pool (`true`) or cloned and booted for the job.
    pub warm: bool,
    /// From provisioning start until the guest had its bootstrap.
    pub ms: u64,
}

/// Where a pool VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolVmState {
    /// Being cloned, configured or booted.
    Starting,
    /// Booted, its guest waiting for a bootstrap: may be claimed.
    Ready,
    /// Taken by a job (recorded before its bootstrap is delivered); never
    /// offered again.
    Claimed,
}

impl PoolVmState {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolVmState::Starting => "starting",
            PoolVmState::Ready => "ready",
            PoolVmState::Claimed => "claimed",
        }
    }
}

/// A pool VM as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolVm {
    /// The VM.
    pub vm: VmRef,
    /// Its class (`TEMPLATE:SIZE`).
    pub class: String,
    /// The template's version it was cloned from (provider's words).
    pub template_version: String,
    /// Where it is.
    pub state: PoolVmState,
    /// The job that claimed it.
    pub job_id: Option<String>,
    /// When its clone was started.
    pub created_at: UnixMs,
    /// When it became ready.
    pub ready_at: Option<UnixMs>,
}

/// The guest's result as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    /// Exit code, when the agent exited.
    pub exit_code: Option<i32>,
    /// Signal that ended the agent.
    pub signal: Option<String>,
    /// Agent run time.
    pub duration_ms: u64,
    /// Output tails.
    pub output: OutputTails,
    /// The agent's structured result.
    pub agent_result: Option<AgentResult>,
    /// The guest's error text.
    pub error: Option<String>,
    /// The patch the guest made, when it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<delegate_proto::PatchSummary>,
    /// A follow-up turn's own change, against the previous turn's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_patch: Option<delegate_proto::PatchSummary>,
}

/// One line of `list_jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job id.
    pub job_id: String,
    /// The state.
    pub status: JobState,
    /// Agent type.
    pub agent_type: String,
    /// The first line of the task, shortened.
    pub task: String,
    /// Submission time, RFC 3339.
    pub created_at: String,
    /// Completion time, RFC 3339.
    pub completed_at: Option<String>,
    /// Whether the job was submitted persistent (its VM may be kept).
    pub persistent: bool,
    /// For a follow-up turn: the session's first job.
    pub session_id: Option<String>,
    /// The turn's number (1 for a submitted job).
    pub turn: u32,
}

/// A page of results and the cursor for the next one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass back to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Which log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSelector {
    /// Both streams, interleaved in arrival order.
    Combined,
    /// One stream, with the guest's byte offsets.
    Stream(LogStream),
}

/// Bytes read from a log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogSlice {
    /// The bytes from the cursor.
    pub data: Vec<u8>,
    /// The offset of `data`'s first byte.
    pub start: u64,
    /// Where to read next.
    pub next_cursor: u64,
    /// True when the job is final and everything has been read.
    pub complete: bool,
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The job was running (or queued) and is now cancelled.
    Cancelled(JobRecord),
    /// The job was already final; nothing changed.
    AlreadyFinal(JobRecord),
}
