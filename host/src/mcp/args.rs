//! What the tools take: their arguments, with the schemas clients see, and
//! the one parser that turns a `tools/call`'s arguments into them with an
//! error naming the offending field.

use delegate_proto::{JobState, LogStream};
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::model::LogSelector;

/// `list_jobs` answers at most this many jobs per page: the manager's limit,
/// the same for the command line.
pub const MAX_LIST_LIMIT: u32 = crate::jobs::manager::MAX_LIST_LIMIT as u32;
/// `list_jobs`' page size when none is given.
pub const DEFAULT_LIST_LIMIT: u32 = 20;
/// `get_job_logs` reads at most this many bytes per call.
pub const MAX_LOG_READ: u32 = 1 << 20;
/// `get_job_logs`' read size when none is given.
pub const DEFAULT_LOG_READ: u32 = 64 * 1024;

fn manifest_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let value = super::manifest_schema::manifest();
    // The hand-written schema is an object literal; the conversion cannot fail.
    schemars::Schema::try_from(value).unwrap_or_default()
}

fn status_filter_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    schemars::json_schema!({
        "type": "string",
        "enum": names
    })
}

fn stream_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["combined", "stdout", "stderr"],
        "default": "combined"
    })
}

/// `submit_job`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitArgs {
    /// The job manifest (camelCase fields, as the original delegation server's).
    #[schemars(schema_with = "manifest_schema")]
    pub manifest: serde_json::Value,
}

/// Tools that take only a job id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobArgs {
    /// The job_id submit_job returned.
    pub job_id: String,
}

/// `continue_job`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContinueArgs {
    /// A persistent job's id (the submitted job or any of its turns).
    pub job_id: String,
    /// What the agent is to do in this turn. A claude job resumes its
    /// Claude Code session, so "now fix the failing test" is enough.
    pub task: String,
    /// A new Claude Code budget in US dollars for this turn (agent.maxBudgetUsd),
    /// within the host's ceiling; the previous turn's when absent.
    #[serde(
        default,
        alias = "maxBudgetUsd",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub max_budget_usd: Option<f64>,
}

/// `wait_for_job`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// The job_id submit_job returned.
    pub job_id: String,
    /// How long to wait at most; the server's default when absent, and capped
    /// below clients' tool-call timeouts. Call again to keep waiting.
    #[schemars(range(min = 0))]
    pub timeout_seconds: Option<u32>,
}

/// `list_jobs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only jobs in this state.
    // `default` keeps the field optional in the schema; `skip_serializing_if`
    // keeps schemars from publishing `"default": null` on a string enum,
    // which strict validators reject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "status_filter_schema")]
    pub status: Option<String>,
    /// Page size (default 20, at most 1000).
    #[schemars(range(min = 1, max = MAX_LIST_LIMIT))]
    pub limit: Option<u32>,
    /// next_cursor from the previous page.
    pub cursor: Option<String>,
}

impl ListArgs {
    /// The state filter, refusing unknown names.
    pub fn status(&self) -> Result<Option<JobState>, String> {
        self.status.as_deref().map(str::parse).transpose()
    }

    /// The page size within bounds.
    pub fn limit(&self) -> Result<usize, String> {
        match self.limit {
            None => Ok(DEFAULT_LIST_LIMIT as usize),
            Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n as usize),
            Some(n) => Err(format!(
                "limit: must be between 1 and {MAX_LIST_LIMIT}, got {n}"
            )),
        }
    }
}

/// `get_job_logs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    /// The job_id submit_job returned.
    pub job_id: String,
    /// combined: both streams in arrival order (cursor counts bytes of that
    /// file); stdout or stderr: one stream (cursor is its byte offset).
    // Absent means combined; see `ListArgs::status` for the attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "stream_schema")]
    pub stream: Option<String>,
    /// Byte offset to read from: 0, or next_cursor from the previous call.
    pub cursor: Option<u64>,
    /// At most this many bytes (default 65536, at most 1048576).
    #[schemars(range(min = 1, max = 1048576))]
    pub max_bytes: Option<u32>,
}

impl LogsArgs {
    /// The log to read, refusing unknown names.
    pub fn selector(&self) -> Result<LogSelector, String> {
        match self.stream.as_deref() {
            None | Some("combined") => Ok(LogSelector::Combined),
            Some("stdout") => Ok(LogSelector::Stream(LogStream::Stdout)),
            Some("stderr") => Ok(LogSelector::Stream(LogStream::Stderr)),
            Some(other) => Err(format!(
                "stream: unknown log stream {other:?}; expected combined, stdout or stderr"
            )),
        }
    }

    /// The read size within bounds.
    pub fn max_bytes(&self) -> Result<usize, String> {
        match self.max_bytes {
            None => Ok(DEFAULT_LOG_READ as usize),
            Some(n) if (1..=MAX_LOG_READ).contains(&n) => Ok(n as usize),
            Some(n) => Err(format!(
                "max_bytes: must be between 1 and {MAX_LOG_READ}, got {n}"
            )),
        }
    }
}

/// Parses a tool's arguments; the error names the field, e.g.
/// `job_id: missing field` or `limit: invalid type: string "x", expected u32`.
pub fn parse<T: DeserializeOwned>(arguments: Option<JsonObject>) -> Result<T, String> {
    let value = serde_json::Value::Object(arguments.unwrap_or_default());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path.is_empty() || path == "." {
            format!("invalid arguments: {inner}")
        } else {
            format!("invalid arguments: {path}: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(v: serde_json::Value) -> Option<JsonObject> {
        v.as_object().cloned()
    }

    #[test]
    fn argument_errors_name_the_field() {
        let e = parse::<JobArgs>(object(json!({}))).unwrap_err();
        assert!(e.contains("job_id"), "{e}");
        let e = parse::<ListArgs>(object(json!({"limit": "many"}))).unwrap_err();
        assert!(e.starts_with("invalid arguments: limit:"), "{e}");
        let e = parse::<JobArgs>(object(json!({"job_id": "x", "jobid": "y"}))).unwrap_err();
        assert!(e.contains("jobid"), "{e}");
    }

    #[test]
    fn only_the_job_id_is_required() {
        let list = super::super::schema::input::<ListArgs>();
        assert!(
            list.get("required")
                .is_none_or(|r| r.as_array().unwrap().is_empty())
        );
        let logs = super::super::schema::input::<LogsArgs>();
        assert_eq!(logs["required"], json!(["job_id"]));
        let wait = super::super::schema::input::<WaitArgs>();
        assert_eq!(wait["required"], json!(["job_id"]));
    }

    #[test]
    fn the_page_size_limit_is_the_managers_and_published() {
        let list = super::super::schema::input::<ListArgs>();
        let limit = &list["properties"]["limit"];
        assert_eq!(
            limit["maximum"],
            json!(crate::jobs::manager::MAX_LIST_LIMIT)
        );
        let said = format!("at most {MAX_LIST_LIMIT}");
        assert!(limit["description"].as_str().unwrap().contains(&said));
    }

    #[test]
    fn unknown_status_and_stream_are_errors() {
        let a: ListArgs = parse(object(json!({"status": "done"}))).unwrap();
        assert!(a.status().unwrap_err().contains("pending"));
        let a: ListArgs = parse(object(json!({"status": "timeout"}))).unwrap();
        assert_eq!(a.status().unwrap(), Some(JobState::Timeout));
        let a: LogsArgs = parse(object(json!({"job_id": "x", "stream": "both"}))).unwrap();
        assert!(a.selector().unwrap_err().contains("combined"));
        let a: LogsArgs = parse(object(json!({"job_id": "x", "max_bytes": 0}))).unwrap();
        assert!(a.max_bytes().is_err());
    }
}
