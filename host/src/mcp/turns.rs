//! The follow-up turn tools: `continue_job` (a new turn in a persistent
//! job's kept VM) and `release_job` (end the kept VM now).

use rmcp::model::JsonObject;

use super::args::{self, ContinueArgs, JobArgs};
use super::calls::{ToolOutcome, job_error, structured};
use crate::jobs::JobManager;
use crate::views::turns::{ContinueView, ReleaseView};

/// `continue_job`.
pub async fn continue_job(jobs: &JobManager, arguments: Option<JsonObject>) -> ToolOutcome {
    let a: ContinueArgs = args::parse(arguments)?;
    let rec = jobs
        .continue_job(&a.job_id, &a.task, a.max_budget_usd)
        .await
        .map_err(job_error)?;
    structured(&ContinueView::of(&rec))
}

/// `release_job`.
pub async fn release_job(jobs: &JobManager, arguments: Option<JsonObject>) -> ToolOutcome {
    let a: JobArgs = args::parse(arguments)?;
    let released = jobs.release_job(&a.job_id).await.map_err(job_error)?;
    structured(&release_view(&released))
}

/// What a release did, in the tool's words (also `release --json`).
pub fn release_view(r: &crate::jobs::Released) -> ReleaseView {
    let message = match &r.cancelled_turn {
        Some(turn) => format!(
            "the VM of job {} is being destroyed; its running turn (job {turn}) was cancelled",
            r.session_id
        ),
        None => format!("the VM of job {} is being destroyed", r.session_id),
    };
    ReleaseView {
        session_id: r.session_id.clone(),
        released: true,
        cancelled_turn: r.cancelled_turn.clone(),
        message,
    }
}
