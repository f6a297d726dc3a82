//! How a job ended: the guest's result, sent once to `POST result` and
//! printed as the last line in standalone mode.

use serde::{Deserialize, Serialize};

use crate::JobState;

/// The final status as the guest reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// The agent succeeded.
    Success,
    /// The agent failed or could not run.
    Failed,
    /// The job hit its timeout.
    Timeout,
    /// The job was cancelled.
    Cancelled,
}

impl ResultStatus {
    /// The job state this result puts a job in.
    pub fn job_state(self) -> JobState {
        match self {
            ResultStatus::Success => JobState::Success,
            ResultStatus::Failed => JobState::Failed,
            ResultStatus::Timeout => JobState::Timeout,
            ResultStatus::Cancelled => JobState::Cancelled,
        }
    }

    /// The exit status `delegate-guest run` ends with.
    pub fn exit_code(self) -> i32 {
        match self {
            ResultStatus::Success => 0,
            ResultStatus::Failed => 1,
            ResultStatus::Timeout => 124,
            ResultStatus::Cancelled => 130,
        }
    }
}

/// What kind of failure ended a job, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The manifest broke a rule.
    InvalidManifest,
    /// Input files could not be written.
    Unpack,
    /// The agent's program could not be started (missing binary, ...).
    Spawn,
    /// The agent needs credentials that were not given.
    Credentials,
    /// The agent exited non-zero or was killed by a signal.
    Exit,
    /// The agent reported an error (e.g. Claude's `is_error`).
    Agent,
    /// Claude Code ended without a result event.
    NoResult,
    /// The job ran past its timeout.
    Timeout,
    /// The job was cancelled.
    Cancelled,
    /// Artifacts could not be collected (e.g. over the size cap).
    Artifacts,
    /// The repository could not be delivered into the workspace.
    Repo,
    /// The patch could not be made or uploaded.
    Patch,
    /// The agent stopped at its spending cap (`agent.maxBudgetUsd`).
    Budget,
    /// The host lost the guest (heartbeat lease expired, VM died).
    Lost,
    /// The VM could not be provisioned.
    Provision,
    /// Anything else inside the runner.
    Internal,
}

/// The outcome of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Final status.
    pub status: ResultStatus,
    /// The agent's exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended the agent (`SIGKILL`, ...), when one did.
    #[serde(default)]
    pub signal: Option<String>,
    /// From the agent's start to the result, in milliseconds.
    pub duration_ms: u64,
    /// Bounded tails of stdout and stderr.
    pub output: OutputTails,
    /// Collected artifacts.
    #[serde(default)]
    pub artifacts: Vec<ArtifactEntry>,
    /// Why the job did not succeed, for people.
    #[serde(default)]
    pub error: Option<String>,
    /// Why the job did not succeed, for programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// The agent's structured result (Claude Code's `result` event).
    #[serde(default)]
    pub agent_result: Option<AgentResult>,
    /// The patch of the job's changes to its repository, when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<crate::repo::PatchSummary>,
    /// For a follow-up turn: the patch of this turn's own change, against
    /// the workspace as the previous turn left it (`patch` is against the
    /// base, all turns together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_patch: Option<crate::repo::PatchSummary>,
}

/// The ends of both output streams.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputTails {
    /// Tail of stdout.
    pub stdout: OutputTail,
    /// Tail of stderr.
    pub stderr: OutputTail,
}

/// The end of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputTail {
    /// The last bytes, decoded lossily as UTF-8.
    pub text: String,
    /// True when earlier output was cut off.
    pub truncated: bool,
    /// How many bytes the stream had in all.
    pub total_bytes: u64,
}

/// One collected file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    /// Path relative to the workspace.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

/// Claude Code's final `result` event, as the guest read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentResult {
    /// The final answer text.
    #[serde(default)]
    pub result: Option<String>,
    /// Claude Code's verdict; this, not `subtype`, decides success.
    pub is_error: bool,
    /// `success`, `error_max_turns`, `error_during_execution`, ...
    #[serde(default)]
    pub subtype: Option<String>,
    /// Why the conversation ended, when Claude Code says.
    #[serde(default)]
    pub terminal_reason: Option<String>,
    /// Number of turns taken.
    #[serde(default)]
    pub num_turns: Option<u64>,
    /// Cost in US dollars.
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    /// Token usage, as Claude Code reports it.
    #[serde(default)]
    pub usage: Option<serde_json::Value>,
    /// Per-model usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_usage: Option<serde_json::Value>,
    /// Session id, for `claude --resume`.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Tool uses that were refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_denials: Option<serde_json::Value>,
    /// Errors Claude Code listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<serde_json::Value>,
    /// Claude Code's own duration figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// The result as the last line of `delegate-guest run`'s stdout:
/// the result's fields plus `"type":"result"`.
#[derive(Debug, Serialize)]
pub struct ResultLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    result: &'a JobResult,
}

impl<'a> ResultLine<'a> {
    /// Wraps a result for printing.
    pub fn new(result: &'a JobResult) -> Self {
        ResultLine {
            kind: "result",
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_round_trips_and_prints_type() {
        let r = JobResult {
            status: ResultStatus::Timeout,
            exit_code: None,
            signal: Some("SIGKILL".into()),
            duration_ms: 1500,
            output: OutputTails {
                stdout: OutputTail {
                    text: "tail".into(),
                    truncated: true,
                    total_bytes: 1 << 30,
                },
                stderr: OutputTail::default(),
            },
            artifacts: vec![ArtifactEntry {
                path: "out/a.txt".into(),
                size: 3,
                sha256: "ab".repeat(32),
            }],
            error: Some("timed out after 1s".into()),
            error_kind: Some(ErrorKind::Timeout),
            agent_result: None,
            patch: None,
            turn_patch: None,
        };
        let line = serde_json::to_value(ResultLine::new(&r)).unwrap();
        assert_eq!(line["type"], "result");
        assert_eq!(line["status"], "timeout");
        assert_eq!(line["exit_code"], serde_json::Value::Null);
        assert_eq!(line["agent_result"], serde_json::Value::Null);
        let back: JobResult = serde_json::from_value(line).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.status.exit_code(), 124);
        assert_eq!(back.status.job_state(), JobState::Timeout);
    }
}
