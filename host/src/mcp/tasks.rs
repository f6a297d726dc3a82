//! The MCP tasks extension (`io.modelcontextprotocol/tasks`) over jobs.
//!
//! A task is a view of a job, not a second thing to keep: the task id is the
//! job id, `tasks/get` reads the job from the store, `tasks/cancel` cancels
//! the job. So a task survives a restart of the host exactly as the job
//! does, and a client may mix task calls with the job tools.
//!
//! Mapping: live states are `working`; `success`, `failed` and `timeout`
//! are `completed` with the `get_job_result` answer as the tool result
//! (`isError: true` unless the job succeeded: the tool ran, the job did
//! not); `cancelled` is `cancelled`.

use delegate_proto::JobState;
use rmcp::model::{CallToolResult, DetailedTask, JsonObject, Task, TaskPayload, TaskStatus};

use crate::model::JobRecord;

use super::progress;
use crate::clock::rfc3339;
use crate::views::ResultView;

/// Suggested polling interval for `tasks/get`.
pub const POLL_INTERVAL_MS: u64 = 2_000;

/// The task's base fields for a job.
pub fn task(record: &JobRecord, retention_ms: Option<u64>) -> Task {
    let status = match record.state {
        JobState::Pending | JobState::Provisioning | JobState::Running => TaskStatus::Working,
        JobState::Success | JobState::Failed | JobState::Timeout => TaskStatus::Completed,
        JobState::Cancelled => TaskStatus::Cancelled,
    };
    let updated = [record.completed_at, record.last_event_at, record.started_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(record.created_at);
    let mut task = Task::new(
        record.id.clone(),
        status,
        rfc3339(record.created_at),
        rfc3339(updated),
    )
    .with_status_message(progress::describe(record))
    .with_poll_interval_ms(POLL_INTERVAL_MS);
    if let Some(ms) = retention_ms {
        // Finished jobs are pruned after the retention period, and so are
        // their tasks; measured from creation as the spec asks.
        task = task.with_ttl_ms(ms);
    }
    task
}

/// The task with its payload, for `tasks/get`.
pub fn detailed(record: &JobRecord, retention_ms: Option<u64>) -> DetailedTask {
    let base = task(record, retention_ms);
    let payload = match record.state {
        JobState::Pending | JobState::Provisioning | JobState::Running => TaskPayload::Working,
        JobState::Cancelled => TaskPayload::Cancelled,
        JobState::Success | JobState::Failed | JobState::Timeout => TaskPayload::Completed {
            result: completed_result(record),
        },
    };
    DetailedTask::new(base, payload)
}

fn completed_result(record: &JobRecord) -> JsonObject {
    let view = ResultView::of(record);
    let value = serde_json::to_value(&view).unwrap_or_default();
    let mut result = CallToolResult::structured(value);
    if record.state != JobState::Success {
        result.is_error = Some(true);
    }
    match serde_json::to_value(result) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => JsonObject::new(),
    }
}
