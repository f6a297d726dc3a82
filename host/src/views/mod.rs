//! What the MCP tools answer and the CLI prints: snake_case views of the
//! host's job records, shared by both so that a person and an agent see the
//! same fields (`--json` prints exactly a tool's answer).
//!
//! These types are the tools' output schemas. They are built from
//! [`JobRecord`]s and never from the raw manifest, so a secret cannot reach
//! a client through them: the only manifest text shown (`task`) comes from
//! the redacted copy.

use delegate_proto::outcome::OutputTail;
use delegate_proto::{JobState, LogStream};
use schemars::JsonSchema;
use serde::Serialize;

use crate::clock::rfc3339;
use crate::model::{JobRecord, JobSummary, UnixMs};
use crate::provider::Isolation;

pub mod patch;
pub mod recent;
pub mod resources;
pub mod turns;

/// How many characters of the task a status or listing shows.
const TASK_PREVIEW_CHARS: usize = 200;

/// A job state as a JSON Schema string enum with proto's names.
fn status_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    schemars::json_schema!({
        "type": "string",
        "enum": names,
        "description": "pending, provisioning and running are live; success, failed, timeout and cancelled are final."
    })
}

/// `submit_job`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SubmitView {
    /// The handle for every other tool.
    pub job_id: String,
    /// The state right after submission (normally `pending`).
    #[schemars(schema_with = "status_schema")]
    pub status: JobState,
    /// Submission time, RFC 3339.
    pub created_at: String,
    /// What to do next.
    pub next: String,
}

impl SubmitView {
    /// The view of a freshly submitted job.
    pub fn of(record: &JobRecord) -> Self {
        SubmitView {
            job_id: record.id.clone(),
            status: record.state,
            created_at: rfc3339(record.created_at),
            next: format!(
                "call wait_for_job or get_job_status with job_id {}, then get_job_result",
                record.id
            ),
        }
    }
}

/// The VM that serves a job.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct VmView {
    /// `local`, `proxmox` or `qemu`.
    pub provider: String,
    /// The provider's id for it (VMID, pid, name).
    pub id: String,
    /// Its node, for clustered providers.
    pub node: Option<String>,
    /// Whether it has been destroyed.
    pub destroyed: bool,
    /// `warm` when it came ready from a warm pool, `cold` when it was
    /// cloned and booted for the job; absent until the guest has its
    /// bootstrap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Seconds from provisioning start until the guest had its bootstrap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_seconds: Option<f64>,
}

/// The wall between the job and the host.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IsolationView {
    /// `vm`, `process_sandbox` or `none`.
    pub kind: String,
    /// In words.
    pub description: String,
    /// For a VM QEMU runs on this machine: `kvm` (hardware
    /// virtualization) or `tcg` (emulation, much slower).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<String>,
}

impl IsolationView {
    fn of(isolation: Isolation) -> Self {
        let kind = match isolation {
            Isolation::Vm => "vm",
            Isolation::ProcessSandbox => "process_sandbox",
            Isolation::None => "none",
        };
        IsolationView {
            kind: kind.to_string(),
            description: isolation.describe().to_string(),
            accelerator: None,
        }
    }
}

/// The last lines of both output streams.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct RecentOutput {
    /// Last lines of stdout.
    pub stdout: String,
    /// Last lines of stderr.
    pub stderr: String,
}

/// `get_job_status`'s answer (and the core of `wait_for_job`'s).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StatusView {
    /// The job id.
    pub job_id: String,
    /// The state.
    #[schemars(schema_with = "status_schema")]
    pub status: JobState,
    /// True when the state is final.
    pub finished: bool,
    /// The guest's phase: preparing, unpacking, running, collecting, uploading, done.
    pub phase: Option<String>,
    /// Percent done, when the agent says.
    pub progress: Option<f64>,
    /// The latest status line.
    pub message: Option<String>,
    /// Why the job failed, timed out or was cancelled.
    pub error: Option<String>,
    /// The same as a word for programs (exit, lost, provision, timeout, ...).
    pub error_kind: Option<String>,
    /// claude, script or custom.
    pub agent_type: String,
    /// The start of the task.
    pub task: String,
    /// Submission time, RFC 3339.
    pub created_at: String,
    /// When provisioning began.
    pub started_at: Option<String>,
    /// When the job became final.
    pub completed_at: Option<String>,
    /// When the job is ended if still unfinished: while pending, the end of
    /// the queue timeout; from provisioning on, the end of its own timeout.
    pub deadline_at: String,
    /// Seconds since the guest was last heard from (running jobs).
    pub heartbeat_age_seconds: Option<f64>,
    /// The VM, once there is one.
    pub vm: Option<VmView>,
    /// What isolates the job.
    pub isolation: IsolationView,
    /// What the host could not do for the job's VM that its settings ask
    /// for, such as enforcing egress (a Proxmox token without the firewall
    /// privilege under `DELEGATE_PROXMOX_FIREWALL=auto`); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The last lines of output, when there is any.
    pub recent_output: Option<RecentOutput>,
    /// Connections through the egress gateway, for a job with a network
    /// policy or any connection logged (`delegate-host egress JOB` has them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::egress::log::EgressSummary>,
    /// For a persistent job and its follow-up turns: the turn and whether
    /// the session's VM is kept, until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<turns::SessionView>,
}

impl StatusView {
    /// The status of `record` at time `now`, with `recent` output if known.
    pub fn of(record: &JobRecord, now: UnixMs, recent: Option<RecentOutput>) -> Self {
        let heartbeat_age_seconds = match (record.state, record.last_event_at) {
            (JobState::Running, Some(at)) => Some(seconds(now.saturating_sub(at))),
            _ => None,
        };
        let secrets = record.manifest.secret_values();
        let clean = |t: &str| scrub(t, &secrets);
        StatusView {
            job_id: record.id.clone(),
            status: record.state,
            finished: record.state.is_final(),
            phase: record.phase.map(|p| p.as_str().to_string()),
            progress: record.progress,
            message: record.message.as_deref().map(clean),
            error: record.error.as_deref().map(clean),
            error_kind: record.error_kind.map(error_kind_name),
            agent_type: record.manifest.agent_type.as_str().to_string(),
            task: task_preview(&clean(&record.manifest.redacted().task)),
            created_at: rfc3339(record.created_at),
            started_at: record.started_at.map(rfc3339),
            completed_at: record.completed_at.map(rfc3339),
            deadline_at: rfc3339(record.deadline_at),
            heartbeat_age_seconds,
            vm: record.vm.as_ref().map(|vm| VmView {
                provider: vm.provider.clone(),
                id: vm.id.clone(),
                node: vm.node.clone(),
                destroyed: record.vm_destroyed,
                start: record
                    .vm_start
                    .map(|s| if s.warm { "warm" } else { "cold" }.to_string()),
                start_seconds: record.vm_start.map(|s| s.ms as f64 / 1000.0),
            }),
            isolation: IsolationView::of(record.isolation),
            warnings: record.warnings.iter().map(|w| clean(w)).collect(),
            recent_output: recent
                .filter(|r| !r.stdout.is_empty() || !r.stderr.is_empty())
                .map(|r| RecentOutput {
                    stdout: clean(&r.stdout),
                    stderr: clean(&r.stderr),
                }),
            egress: None,
            session: None,
        }
    }
}

/// `wait_for_job`'s answer: the status, and how the wait ended.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WaitView {
    /// The job's status when the wait ended.
    #[serde(flatten)]
    pub job: StatusView,
    /// How long the call waited.
    pub waited_seconds: f64,
    /// True when the wait ended before the job did; call again to go on waiting.
    pub wait_timed_out: bool,
}

/// The end of one output stream, as the guest kept it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TailView {
    /// The last bytes, as UTF-8 (invalid sequences replaced).
    pub text: String,
    /// True when earlier output was cut off (read all of it with get_job_logs).
    pub truncated: bool,
    /// How many bytes the stream had in all.
    pub total_bytes: u64,
}

impl TailView {
    fn of(t: &OutputTail, secrets: &[&str]) -> Self {
        TailView {
            text: scrub(&t.text, secrets),
            truncated: t.truncated,
            total_bytes: t.total_bytes,
        }
    }
}

/// Both output tails.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OutputView {
    /// Standard output.
    pub stdout: TailView,
    /// Standard error.
    pub stderr: TailView,
}

/// One collected artifact and where to read it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ArtifactView {
    /// Path relative to the workspace.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// The MCP resource to read it with (resources/read).
    pub uri: String,
    /// Its type as the resource reports it.
    pub mime_type: String,
}

/// `get_job_result`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ResultView {
    /// The job id.
    pub job_id: String,
    /// The final state.
    #[schemars(schema_with = "status_schema")]
    pub status: JobState,
    /// The agent's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the agent, when one did.
    pub signal: Option<String>,
    /// Why the job did not succeed.
    pub error: Option<String>,
    /// The same as a word for programs.
    pub error_kind: Option<String>,
    /// The ends of stdout and stderr; absent when the guest sent no result
    /// (a job cancelled or lost before it ran).
    pub output: Option<OutputView>,
    /// Collected files.
    pub artifacts: Vec<ArtifactView>,
    /// How to fetch artifacts.
    pub artifacts_hint: String,
    /// Run time of the agent (or of the whole job when the agent never reported).
    pub duration_seconds: Option<f64>,
    /// The agent's structured result (Claude Code: result text, turns, cost, usage, session id).
    pub agent_result: Option<serde_json::Value>,
    /// The job's changes to the repository it was given, when it was given one.
    pub patch: Option<patch::PatchView>,
    /// For a follow-up turn of a persistent job: its own change, against
    /// the workspace as the previous turn left it (`patch` is against the
    /// repository's base, all turns together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_patch: Option<patch::PatchView>,
    /// Submission time, RFC 3339.
    pub created_at: String,
    /// When the job became final.
    pub completed_at: Option<String>,
}

impl ResultView {
    /// The result of a final job.
    pub fn of(record: &JobRecord) -> Self {
        let result = record.result.as_ref();
        let duration_seconds = match result {
            Some(r) => Some(seconds(r.duration_ms as i64)),
            None => match (record.started_at, record.completed_at) {
                (Some(s), Some(e)) => Some(seconds(e.saturating_sub(s))),
                _ => None,
            },
        };
        let artifacts: Vec<ArtifactView> = record
            .artifacts
            .iter()
            .map(|a| ArtifactView {
                path: a.path.clone(),
                size: a.size,
                sha256: a.sha256.clone(),
                uri: resources::artifact_uri(&record.id, &a.path),
                mime_type: resources::mime_type(&a.path).to_string(),
            })
            .collect();
        let artifacts_hint = if artifacts.is_empty() {
            "no artifacts were collected (list files to keep in the manifest's artifacts globs)"
                .to_string()
        } else {
            "read an artifact with resources/read on its uri (text, or a base64 blob for binary types)"
                .to_string()
        };
        // The agent's error text and output can echo secrets the job was
        // given. The guest redacts them before they leave the VM; the host
        // scrubs again, so a guest that did not cannot leak them here.
        let secrets = record.manifest.secret_values();
        ResultView {
            job_id: record.id.clone(),
            status: record.state,
            exit_code: result.and_then(|r| r.exit_code),
            signal: result.and_then(|r| r.signal.clone()),
            error: record
                .error
                .clone()
                .or_else(|| result.and_then(|r| r.error.clone()))
                .map(|e| scrub(&e, &secrets)),
            error_kind: record.error_kind.map(error_kind_name),
            output: result.map(|r| OutputView {
                stdout: TailView::of(&r.output.stdout, &secrets),
                stderr: TailView::of(&r.output.stderr, &secrets),
            }),
            artifacts,
            artifacts_hint,
            duration_seconds,
            agent_result: result
                .and_then(|r| r.agent_result.as_ref())
                .and_then(|a| serde_json::to_value(a).ok())
                .map(|mut v| {
                    scrub_value(&mut v, &secrets);
                    v
                }),
            patch: patch::PatchView::of(record),
            turn_patch: patch::PatchView::of_turn(record),
            created_at: rfc3339(record.created_at),
            completed_at: record.completed_at.map(rfc3339),
        }
    }

    /// Adds the patch's text when it is small (reads the store).
    pub fn with_patch_text(mut self, jobs: &crate::jobs::JobManager) -> Self {
        self.patch = self.patch.take().map(|p| p.inline(jobs, &self.job_id));
        self.turn_patch = self
            .turn_patch
            .take()
            .map(|p| p.inline_turn(jobs, &self.job_id));
        self
    }
}

/// `cancel_job`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CancelView {
    /// The job id.
    pub job_id: String,
    /// The state after the call.
    #[schemars(schema_with = "status_schema")]
    pub status: JobState,
    /// True when this call cancelled the job; false when it was already final.
    pub cancelled: bool,
    /// What happened, in words.
    pub message: String,
}

/// One line of `list_jobs`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SummaryView {
    /// The job id.
    pub job_id: String,
    /// The state.
    #[schemars(schema_with = "status_schema")]
    pub status: JobState,
    /// claude, script or custom.
    pub agent_type: String,
    /// The start of the task.
    pub task: String,
    /// Submission time, RFC 3339.
    pub created_at: String,
    /// Completion time, RFC 3339.
    pub completed_at: Option<String>,
    /// For a persistent job and its turns: the turn, and whether the
    /// session's VM is kept and until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<turns::SessionView>,
}

impl From<JobSummary> for SummaryView {
    fn from(s: JobSummary) -> Self {
        SummaryView {
            job_id: s.job_id,
            status: s.status,
            agent_type: s.agent_type,
            task: s.task,
            created_at: s.created_at,
            completed_at: s.completed_at,
            session: None,
        }
    }
}

/// `list_jobs`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ListView {
    /// Jobs, newest first.
    pub jobs: Vec<SummaryView>,
    /// Pass as cursor to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl SummaryView {
    /// The same JSON as `serde_json::to_value(&self)`, with the strings
    /// moved into it rather than copied: a full page is a thousand
    /// summaries, the largest answer the server builds, and the copies
    /// were a third of its allocations.
    pub fn into_json(self) -> serde_json::Value {
        use serde_json::Value;
        let status = Value::String(self.status.as_str().into());
        let completed_at = self.completed_at.map_or(Value::Null, Value::String);
        // Strings, numbers and booleans only: it cannot fail.
        let session = self
            .session
            .map(|s| serde_json::to_value(s).unwrap_or(Value::Null));
        // In key order: a map collected from sorted keys is built in one
        // pass, where inserting searches the map for every key.
        let fields = [
            ("agent_type", Some(Value::String(self.agent_type))),
            ("completed_at", Some(completed_at)),
            ("created_at", Some(Value::String(self.created_at))),
            ("job_id", Some(Value::String(self.job_id))),
            ("session", session),
            ("status", Some(status)),
            ("task", Some(Value::String(self.task))),
        ];
        Value::Object(
            fields
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect(),
        )
    }
}

impl ListView {
    /// The same JSON as `serde_json::to_value(&self)`, built by moving
    /// (see [`SummaryView::into_json`]).
    pub fn into_json(self) -> serde_json::Value {
        use serde_json::Value;
        let jobs = self.jobs.into_iter().map(SummaryView::into_json).collect();
        let mut m = serde_json::Map::new();
        m.insert("jobs".into(), Value::Array(jobs));
        m.insert(
            "next_cursor".into(),
            self.next_cursor.map_or(Value::Null, Value::String),
        );
        Value::Object(m)
    }
}

/// `get_job_logs`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogsView {
    /// The job id.
    pub job_id: String,
    /// combined, stdout or stderr.
    pub stream: String,
    /// The cursor this read started at.
    pub cursor: u64,
    /// Pass as cursor to read on from here.
    pub next_cursor: u64,
    /// How many bytes `data` holds.
    pub bytes: u64,
    /// `utf-8` (data is the text) or `base64` (the bytes were not UTF-8).
    pub encoding: String,
    /// The log bytes.
    pub data: String,
    /// True when the job is final and everything has been read.
    pub complete: bool,
    /// The job's state.
    #[schemars(schema_with = "status_schema")]
    pub status: JobState,
}

/// The name of a log stream selector, as tools take and give it.
pub fn stream_name(stream: Option<LogStream>) -> &'static str {
    match stream {
        None => "combined",
        Some(s) => s.as_str(),
    }
}

/// The wire name of an error kind.
pub fn error_kind_name(kind: delegate_proto::outcome::ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// `text` with every secret value replaced by `***`.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    delegate_proto::manifest::scrub_secrets(text, secrets)
}

/// [`scrub`] on every string inside a JSON value.
fn scrub_value(value: &mut serde_json::Value, secrets: &[&str]) {
    match value {
        serde_json::Value::String(s) => *s = scrub(s, secrets),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| scrub_value(v, secrets)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| scrub_value(v, secrets)),
        _ => {}
    }
}

/// The first line of a task, shortened for listings.
pub fn task_preview(task: &str) -> String {
    let first = task.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut out: String = first.chars().take(TASK_PREVIEW_CHARS).collect();
    if first.chars().count() > TASK_PREVIEW_CHARS || task.trim().lines().count() > 1 {
        out.push('…');
    }
    out
}

fn seconds(ms: i64) -> f64 {
    (ms.max(0) as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_moved_into_json_is_what_serde_writes() {
        let summary = |n: u32, session: bool| SummaryView {
            job_id: format!("job-{n}"),
            status: if n.is_multiple_of(2) {
                JobState::Success
            } else {
                JobState::Running
            },
            agent_type: "script".into(),
            task: "echo \"hi\"\n…".into(),
            created_at: rfc3339(1_700_000_000_000),
            completed_at: (n.is_multiple_of(2)).then(|| rfc3339(1_700_000_001_000)),
            session: session.then(|| turns::SessionView {
                session_id: "job-1".into(),
                turn: n,
                turns: 3,
                vm_kept: true,
                kept_until: None,
                note: "kept".into(),
            }),
        };
        for cursor in [None, Some("c12".to_string())] {
            let view = ListView {
                jobs: vec![summary(1, false), summary(2, true), summary(3, true)],
                next_cursor: cursor,
            };
            let expected = serde_json::to_value(&view).unwrap();
            assert_eq!(view.into_json(), expected);
        }
    }

    #[test]
    fn task_preview_takes_first_line() {
        assert_eq!(task_preview("echo hi"), "echo hi");
        assert_eq!(task_preview("\n  \nfirst\nsecond"), "first…");
        let long = "x".repeat(500);
        assert_eq!(task_preview(&long).chars().count(), TASK_PREVIEW_CHARS + 1);
    }

    #[test]
    fn secrets_are_scrubbed_from_text_and_json() {
        assert_eq!(
            scrub("key=abc123 and abc123", &["abc123"]),
            "key=*** and ***"
        );
        assert_eq!(scrub("nothing", &["", "zzz"]), "nothing");
        let mut v = serde_json::json!({"result": "the key is abc123", "n": [1, "abc123"]});
        scrub_value(&mut v, &["abc123"]);
        assert_eq!(
            v,
            serde_json::json!({"result": "the key is ***", "n": [1, "***"]})
        );
    }

    #[test]
    fn error_kinds_use_wire_names() {
        use delegate_proto::outcome::ErrorKind;
        assert_eq!(error_kind_name(ErrorKind::NoResult), "no_result");
        assert_eq!(error_kind_name(ErrorKind::Lost), "lost");
    }
}
