//! The tools' bodies: arguments in, job manager calls, views out.
//!
//! Every failure a client can act on (a bad argument, an unknown job, an
//! invalid manifest, a job not finished) is a tool error (`isError: true`)
//! whose text says what to do, so the model reads it; protocol errors are
//! kept for requests that cannot be routed at all.

use std::time::{Duration, Instant};

use delegate_proto::JobManifest;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde::Serialize;

use crate::jobs::{JobError, JobManager};
use crate::model::{CancelOutcome, JobRecord, LogSelector, LogSlice};

use super::args::{self, JobArgs, ListArgs, LogsArgs, SubmitArgs, WaitArgs};
use super::progress::ProgressReporter;
use crate::views::recent;
use crate::views::turns::SessionView;
use crate::views::{
    self, CancelView, ListView, LogsView, ResultView, StatusView, SubmitView, SummaryView, WaitView,
};

/// A tool call's outcome before it becomes a `CallToolResult`.
pub type ToolOutcome = Result<CallToolResult, String>;

/// Structured content plus the same JSON as text, for clients that read
/// only text.
pub fn structured<T: Serialize>(view: &T) -> ToolOutcome {
    let value = serde_json::to_value(view).map_err(|e| format!("internal error: {e}"))?;
    Ok(CallToolResult::structured(value))
}

/// [`structured`] for an answer that is already JSON text and value
/// (`list_jobs`, whose pages are built without copying every string).
pub fn structured_parts(text: String, value: serde_json::Value) -> ToolOutcome {
    let mut result = CallToolResult::structured(serde_json::Value::Null);
    result.content = vec![ContentBlock::text(text)];
    result.structured_content = Some(value);
    Ok(result)
}

/// A tool error the model can read.
pub fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

pub(super) fn job_error(e: JobError) -> String {
    match &e {
        JobError::Store(_) | JobError::Provider(_) | JobError::EngineStopped(_) => {
            tracing::warn!(error = %e, "tool call failed");
        }
        _ => {}
    }
    e.to_string()
}

/// Parses a manifest given as an object, or as a string holding JSON (some
/// clients stringify nested objects).
pub fn parse_manifest(value: serde_json::Value) -> Result<JobManifest, String> {
    let value = match value {
        serde_json::Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| format!("invalid manifest: $: the string is not JSON: {e}"))?,
        other => other,
    };
    JobManifest::from_value(value).map_err(|e| e.to_string())
}

/// `submit_job`: validates and stores the job; returns the record.
pub async fn submit(jobs: &JobManager, arguments: Option<JsonObject>) -> Result<JobRecord, String> {
    let a: SubmitArgs = args::parse(arguments)?;
    let manifest = parse_manifest(a.manifest)?;
    let record = jobs.submit(manifest).await.map_err(job_error)?;
    tracing::info!(job_id = %record.id, agent = %record.manifest.agent_type.as_str(), "job submitted");
    Ok(record)
}

/// `submit_job`'s plain answer.
pub fn submit_view(record: &JobRecord) -> ToolOutcome {
    structured(&SubmitView::of(record))
}

/// `get_job_status`.
pub fn status(jobs: &JobManager, arguments: Option<JsonObject>) -> ToolOutcome {
    let a: JobArgs = args::parse(arguments)?;
    let record = jobs.get(&a.job_id).map_err(job_error)?;
    structured(&status_view(jobs, &record))
}

/// The status of a record, with its recent output.
pub fn status_view(jobs: &JobManager, record: &JobRecord) -> StatusView {
    let mut view = StatusView::of(record, crate::clock::now_ms(), recent::output(jobs, record));
    view.egress = crate::egress::log::summary_of(jobs.store(), record);
    view.session = session_view(jobs, record);
    view.isolation.accelerator = jobs.accelerator_of(record).map(str::to_string);
    view
}

/// A persistent job's session for its status or listing line; none for
/// other jobs (or when the session cannot be read: the rest still shows).
pub fn session_view(jobs: &JobManager, record: &JobRecord) -> Option<SessionView> {
    if record.manifest.lifecycle() != delegate_proto::Lifecycle::Persistent {
        return None;
    }
    let (session, keep) = jobs.session_blocking(record).ok()?;
    Some(SessionView::of(record, &session, &keep))
}

/// `get_job_result`.
pub fn result(jobs: &JobManager, arguments: Option<JsonObject>) -> ToolOutcome {
    let a: JobArgs = args::parse(arguments)?;
    let record = jobs.get(&a.job_id).map_err(job_error)?;
    if !record.state.is_final() {
        return Err(not_finished(&record));
    }
    structured(&ResultView::of(&record).with_patch_text(jobs))
}

/// The answer for a result asked of a live job: its state and what to do.
pub fn not_finished(record: &JobRecord) -> String {
    let mut detail = String::new();
    if let Some(phase) = record.phase {
        detail.push_str(&format!(", phase {}", phase.as_str()));
    }
    if let Some(p) = record.progress {
        detail.push_str(&format!(", {p:.0}%"));
    }
    format!(
        "job {} is not finished: its status is {}{detail}. Call wait_for_job to wait for it, \
         then get_job_result.",
        record.id, record.state
    )
}

/// `cancel_job`.
pub async fn cancel(jobs: &JobManager, arguments: Option<JsonObject>) -> ToolOutcome {
    let a: JobArgs = args::parse(arguments)?;
    let outcome = jobs.cancel(&a.job_id).await.map_err(job_error)?;
    structured(&cancel_view(&outcome))
}

/// What a cancel did, in the tool's words.
pub fn cancel_view(outcome: &CancelOutcome) -> CancelView {
    match outcome {
        CancelOutcome::Cancelled(r) => CancelView {
            job_id: r.id.clone(),
            status: r.state,
            cancelled: true,
            message: format!("job {} is cancelled; its VM is being destroyed", r.id),
        },
        CancelOutcome::AlreadyFinal(r) => CancelView {
            job_id: r.id.clone(),
            status: r.state,
            cancelled: false,
            message: format!(
                "job {} had already finished ({}); nothing was changed",
                r.id, r.state
            ),
        },
    }
}

/// `list_jobs`.
pub fn list(jobs: &JobManager, arguments: Option<JsonObject>) -> ToolOutcome {
    let a: ListArgs = args::parse(arguments)?;
    let status = a.status()?;
    let limit = a.limit()?;
    let page = jobs
        .list(status, limit, a.cursor.as_deref())
        .map_err(job_error)?;
    let view = list_view(jobs, page);
    let text = serde_json::to_string(&view).map_err(|e| format!("internal error: {e}"))?;
    structured_parts(text, view.into_json())
}

/// A page of jobs as `list_jobs` shows it (also `list --json`): persistent
/// jobs and their turns say whether their VM is kept and until when.
pub fn list_view(
    jobs: &JobManager,
    page: crate::model::Page<crate::model::JobSummary>,
) -> ListView {
    let items = page
        .items
        .into_iter()
        .map(|s| {
            let persistent = s.persistent;
            let id = s.job_id.clone();
            let mut view = SummaryView::from(s);
            if persistent {
                view.session = jobs.get(&id).ok().and_then(|r| session_view(jobs, &r));
            }
            view
        })
        .collect();
    ListView {
        jobs: items,
        next_cursor: page.next_cursor,
    }
}

/// `wait_for_job`: waits within the server's cap, reporting changes.
pub async fn wait(
    jobs: &JobManager,
    arguments: Option<JsonObject>,
    progress: Option<ProgressReporter>,
    cancelled: tokio_util::sync::CancellationToken,
) -> ToolOutcome {
    let a: WaitArgs = args::parse(arguments)?;
    let settings = jobs.settings();
    let requested = a
        .timeout_seconds
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(settings.wait_default);
    let limit = requested.min(settings.wait_max);
    let start = Instant::now();
    let id = a.job_id.clone();
    let first = jobs
        .blocking(move |j| j.get(&id))
        .await
        .and_then(|r| r)
        .map_err(job_error)?;
    if let Some(p) = &progress {
        p.report(&first);
    }
    let record = if first.state.is_final() || limit.is_zero() {
        Ok(first)
    } else {
        let waiting = jobs.wait(&a.job_id, limit, |r| {
            if let Some(p) = &progress {
                p.report(r);
            }
        });
        tokio::select! {
            r = waiting => r.map_err(job_error),
            _ = cancelled.cancelled() => Err("the wait was cancelled by the client".into()),
        }
    };
    if let Some(p) = progress {
        if let Ok(r) = &record {
            p.report(r);
        }
        p.finish().await;
    }
    let record = record?;
    let finished = record.state.is_final();
    let job = jobs
        .blocking(move |j| status_view(j, &record))
        .await
        .map_err(job_error)?;
    structured(&WaitView {
        job,
        waited_seconds: (start.elapsed().as_millis() as f64) / 1000.0,
        wait_timed_out: !finished,
    })
}

/// `get_job_logs`.
pub fn logs(jobs: &JobManager, arguments: Option<JsonObject>) -> ToolOutcome {
    let a: LogsArgs = args::parse(arguments)?;
    let which = a.selector()?;
    let max = a.max_bytes()?;
    let cursor = a.cursor.unwrap_or(0);
    let record = jobs.get(&a.job_id).map_err(job_error)?;
    let slice = jobs
        .read_log(&a.job_id, which, cursor, max)
        .map_err(job_error)?;
    structured(&logs_view(&record, which, cursor, slice))
}

/// What `get_job_logs` answers for one read (also `logs --json`).
pub fn logs_view(record: &JobRecord, which: LogSelector, cursor: u64, slice: LogSlice) -> LogsView {
    let decoded = decode_log(slice.data, slice.complete);
    let stream = match which {
        LogSelector::Combined => None,
        LogSelector::Stream(s) => Some(s),
    };
    // Trimmed bytes of a split character are read again next time.
    let next_cursor = slice.next_cursor - decoded.held_back as u64;
    LogsView {
        job_id: record.id.clone(),
        stream: views::stream_name(stream).to_string(),
        cursor,
        next_cursor,
        bytes: decoded.bytes as u64,
        encoding: decoded.encoding.to_string(),
        data: decoded.data,
        complete: slice.complete && decoded.held_back == 0,
        status: record.state,
    }
}

/// Log bytes made fit for JSON.
#[derive(Debug, PartialEq)]
pub struct DecodedLog {
    /// `utf-8` or `base64`.
    pub encoding: &'static str,
    /// The text, or the bytes in base64.
    pub data: String,
    /// How many bytes `data` stands for.
    pub bytes: usize,
    /// Bytes at the end left for the next read (a character cut in two).
    pub held_back: usize,
}

/// UTF-8 text when the bytes are text, base64 otherwise. A character split
/// by the read size is held back for the next read rather than mangled,
/// unless the log is complete (then it is what it is).
pub fn decode_log(data: Vec<u8>, complete: bool) -> DecodedLog {
    use base64::Engine as _;
    match String::from_utf8(data) {
        Ok(text) => DecodedLog {
            encoding: "utf-8",
            bytes: text.len(),
            data: text,
            held_back: 0,
        },
        Err(e) => {
            let utf8 = e.utf8_error();
            let data = e.into_bytes();
            // `error_len() == None` means the input ended inside a character.
            if utf8.error_len().is_none() && !complete && utf8.valid_up_to() > 0 {
                let valid = utf8.valid_up_to();
                let held_back = data.len() - valid;
                let text = String::from_utf8_lossy(&data[..valid]).into_owned();
                return DecodedLog {
                    encoding: "utf-8",
                    bytes: valid,
                    data: text,
                    held_back,
                };
            }
            DecodedLog {
                encoding: "base64",
                bytes: data.len(),
                data: base64::engine::general_purpose::STANDARD.encode(&data),
                held_back: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_logs_stay_text_and_split_characters_wait() {
        let d = decode_log(b"hello\n".to_vec(), false);
        assert_eq!(
            (d.encoding, d.data.as_str(), d.held_back),
            ("utf-8", "hello\n", 0)
        );
        // "é" is two bytes; the read ended after the first.
        let d = decode_log(vec![b'a', 0xC3], false);
        assert_eq!(
            (d.encoding, d.data.as_str(), d.bytes, d.held_back),
            ("utf-8", "a", 1, 1)
        );
        // At the end of a complete log there is nothing to wait for.
        let d = decode_log(vec![b'a', 0xC3], true);
        assert_eq!(d.encoding, "base64");
    }

    #[test]
    fn binary_logs_are_base64() {
        let d = decode_log(vec![0xFF, 0x00, 0x41], false);
        assert_eq!(
            (d.encoding, d.data.as_str(), d.bytes),
            ("base64", "/wBB", 3)
        );
    }

    #[test]
    fn manifest_may_come_as_a_json_string() {
        let m = parse_manifest(serde_json::json!(
            "{\"task\":\"echo hi\",\"agentType\":\"script\"}"
        ))
        .unwrap();
        assert_eq!(m.task, "echo hi");
        let e = parse_manifest(serde_json::json!({"task": "x", "agentType": "robot"})).unwrap_err();
        assert!(e.contains("agentType"), "{e}");
        let e = parse_manifest(serde_json::json!({"agentType": "script", "task": ""})).unwrap_err();
        assert!(e.contains("task"), "{e}");
    }
}
