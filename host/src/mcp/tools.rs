//! The tool catalogue: names, descriptions, schemas and annotations.
//!
//! Built once per process and shared by every session. Each tool names the
//! input and output types in [`super::args`] and [`super::views`]; the
//! annotations say what a client may assume (read-only tools never change a
//! job; `cancel_job` is destructive but idempotent; `submit_job` starts
//! code that may reach the network).

use std::sync::{Arc, OnceLock};

use rmcp::model::{Tool, ToolAnnotations};

use super::args::{ContinueArgs, JobArgs, ListArgs, LogsArgs, SubmitArgs, WaitArgs};
use super::schema;
use crate::views::turns::{ContinueView, ReleaseView};
use crate::views::{CancelView, ListView, LogsView, ResultView, StatusView, SubmitView, WaitView};

/// Tool names, as clients call them.
pub mod name {
    /// Submit a job.
    pub const SUBMIT_JOB: &str = "submit_job";
    /// A job's status.
    pub const GET_JOB_STATUS: &str = "get_job_status";
    /// A final job's result.
    pub const GET_JOB_RESULT: &str = "get_job_result";
    /// Cancel a job.
    pub const CANCEL_JOB: &str = "cancel_job";
    /// List jobs.
    pub const LIST_JOBS: &str = "list_jobs";
    /// Wait for a job.
    pub const WAIT_FOR_JOB: &str = "wait_for_job";
    /// Read a job's log.
    pub const GET_JOB_LOGS: &str = "get_job_logs";
    /// A follow-up turn of a persistent job.
    pub const CONTINUE_JOB: &str = "continue_job";
    /// End a persistent job's kept VM.
    pub const RELEASE_JOB: &str = "release_job";
}

fn read_only(title: &str) -> ToolAnnotations {
    ToolAnnotations::with_title(title)
        .read_only(true)
        .destructive(false)
        .idempotent(true)
        .open_world(false)
}

fn build() -> Vec<Tool> {
    vec![
        Tool::new(
            name::SUBMIT_JOB,
            "Run a job in a fresh, isolated VM (or the local sandbox) and return its job_id at once. \
             The job runs in the background: follow it with wait_for_job or get_job_status, read its \
             output with get_job_logs, and collect output and artifacts with get_job_result. \
             agentType claude runs Claude Code on the task; script runs the task (or agent.command) \
             with bash; custom runs agent.command with agent.args. Put input files in files \
             (base64) and list what to bring back in artifacts (globs). The job's timeout counts \
             from when it starts provisioning (provisioning included); time spent pending for a \
             free VM slot is covered by the server's separate queue timeout instead. The job reaches no \
             network unless network.allow lists destinations (hosts, *.domains, host:port, or the \
             host's @presets). Do not put API keys in env: a claude job uses the host's Anthropic \
             credential without seeing it, and secretEnv maps a variable to a secret the host \
             holds by name ({\"GITHUB_TOKEN\": \"github\"}).",
            schema::input::<SubmitArgs>(),
        )
        .with_title("Submit a job")
        .with_raw_output_schema(schema::output::<SubmitView>())
        .with_annotations(
            ToolAnnotations::with_title("Submit a job")
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(true),
        ),
        Tool::new(
            name::GET_JOB_STATUS,
            "A job's state (pending, provisioning, running, success, failed, timeout, cancelled), \
             phase, progress, message, error, timestamps, heartbeat age, VM and isolation, \
             warnings (such as egress not enforced on its VM), the last lines of its output, and egress counts with the last denied destinations (add \
             those to network.allow if the job needs them). Returns at once.",
            schema::input::<JobArgs>(),
        )
        .with_title("Get job status")
        .with_raw_output_schema(schema::output::<StatusView>())
        .with_annotations(read_only("Get job status")),
        Tool::new(
            name::GET_JOB_RESULT,
            "The outcome of a finished job (success, failed, timeout or cancelled): exit code, \
             error, the ends of stdout and stderr (marked when truncated), artifacts with size, \
             sha256 and the resource URI to read each, duration, and the agent's structured result. \
             For a job still running it answers that the job is not finished, with its state.",
            schema::input::<JobArgs>(),
        )
        .with_title("Get job result")
        .with_raw_output_schema(schema::output::<ResultView>())
        .with_annotations(read_only("Get job result")),
        Tool::new(
            name::CANCEL_JOB,
            "Cancel a job in any state that is not final (pending, provisioning or running): its \
             VM is destroyed and the job ends cancelled. A job already final is left as it is.",
            schema::input::<JobArgs>(),
        )
        .with_title("Cancel a job")
        .with_raw_output_schema(schema::output::<CancelView>())
        .with_annotations(
            ToolAnnotations::with_title("Cancel a job")
                .read_only(false)
                .destructive(true)
                .idempotent(true)
                .open_world(false),
        ),
        Tool::new(
            name::LIST_JOBS,
            "Jobs newest first, optionally only those in one state, a page at a time: pass \
             next_cursor back as cursor for the next page.",
            schema::input::<ListArgs>(),
        )
        .with_title("List jobs")
        .with_raw_output_schema(schema::output::<ListView>())
        .with_annotations(read_only("List jobs")),
        Tool::new(
            name::WAIT_FOR_JOB,
            "Wait until a job is final or timeout_seconds pass (capped well under tool-call \
             timeouts), sending progress notifications meanwhile, then return its status either \
             way. When wait_timed_out is true, call again to keep waiting.",
            schema::input::<WaitArgs>(),
        )
        .with_title("Wait for a job")
        .with_raw_output_schema(schema::output::<WaitView>())
        .with_annotations(read_only("Wait for a job")),
        Tool::new(
            name::GET_JOB_LOGS,
            "Read a job's output log from a byte cursor: returns the bytes and next_cursor to \
             continue from, so a client that reconnects resumes where it stopped. The log fills \
             while the job runs when its statusMode is streaming, and at the end otherwise.",
            schema::input::<LogsArgs>(),
        )
        .with_title("Read job logs")
        .with_raw_output_schema(schema::output::<LogsView>())
        .with_annotations(read_only("Read job logs")),
        Tool::new(
            name::CONTINUE_JOB,
            "Start a follow-up turn of a finished job submitted with \"lifecycle\": \"persistent\",              in the same VM and workspace (files and repository as the last turn left them), while              its VM is kept (get_job_status and list_jobs show session.vm_kept and kept_until).              A claude job resumes the same Claude Code session, so the task can refer to the              earlier turns (\"now fix the failing test\"). The turn is a job of its own: follow              its job_id with wait_for_job and get_job_result; its patch is against the              repository's base (all turns together), its turn_patch is its own change.              max_budget_usd raises a claude job's budget within the host's ceiling. Refused for              a job that is not persistent, whose VM was released or expired, or while a turn              still runs.",
            schema::input::<ContinueArgs>(),
        )
        .with_title("Continue a persistent job")
        .with_raw_output_schema(schema::output::<ContinueView>())
        .with_annotations(
            ToolAnnotations::with_title("Continue a persistent job")
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(true),
        ),
        Tool::new(
            name::RELEASE_JOB,
            "Destroy a persistent job's kept VM now, instead of when its idle time-to-live runs              out (a turn still running in it is cancelled). Its results, logs and patches stay;              it can no longer be continued.",
            schema::input::<JobArgs>(),
        )
        .with_title("Release a persistent job's VM")
        .with_raw_output_schema(schema::output::<ReleaseView>())
        .with_annotations(
            ToolAnnotations::with_title("Release a persistent job's VM")
                .read_only(false)
                .destructive(true)
                .idempotent(false)
                .open_world(false),
        ),
    ]
}

/// Every tool, built once.
pub fn all() -> Arc<Vec<Tool>> {
    static TOOLS: OnceLock<Arc<Vec<Tool>>> = OnceLock::new();
    TOOLS.get_or_init(|| Arc::new(build())).clone()
}

/// One tool by name.
pub fn get(name: &str) -> Option<Tool> {
    all().iter().find(|t| t.name == name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_object_schemas_without_rust_number_formats() {
        let tools = all();
        assert_eq!(tools.len(), 9);
        for tool in tools.iter() {
            let output = tool.output_schema.as_ref().expect("output schema");
            for (which, s) in [("input", &tool.input_schema), ("output", output)] {
                assert_eq!(
                    s.get("type").and_then(|t| t.as_str()),
                    Some("object"),
                    "{} {which}",
                    tool.name
                );
                let bad: Vec<_> = schema::formats(s)
                    .into_iter()
                    .filter(|f| f.starts_with("int") || f.starts_with("uint") || f == "double")
                    .collect();
                assert!(bad.is_empty(), "{} {which}: {bad:?}", tool.name);
            }
            let a = tool.annotations.as_ref().expect("annotations");
            assert!(a.read_only_hint.is_some() && a.open_world_hint.is_some());
        }
    }

    #[test]
    fn output_schemas_use_snake_case_and_proto_state_names() {
        let status = get(name::GET_JOB_STATUS).unwrap();
        let out = status.output_schema.unwrap();
        let props = out["properties"].as_object().unwrap();
        for key in [
            "job_id",
            "created_at",
            "heartbeat_age_seconds",
            "recent_output",
        ] {
            assert!(props.contains_key(key), "missing {key}");
        }
        let states = props["status"]["enum"].as_array().unwrap();
        assert!(states.iter().any(|s| s == "provisioning"));
        assert!(states.iter().any(|s| s == "cancelled"));
    }
}
