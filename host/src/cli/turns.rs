//! `continue` and `release`: the `continue_job` and `release_job` tools
//! for a person. `continue --wait` watches the new turn like `submit
//! --wait`, running the engine here when no server runs.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::config::Settings;
use crate::jobs::JobManager;
use crate::mcp::turns::release_view;
use crate::store::Store;
use crate::views::turns::ContinueView;

use super::exit::{self, CliError};
use super::jobs::{SETTLE_LIMIT, engine_here, engine_running, finish};
use super::{OutputArgs, ids, out};

/// `continue ID TASK`.
#[derive(Debug, Args)]
pub struct ContinueArgs {
    /// A persistent job's id (or any of its turns'), or enough of its first
    /// characters to name one job.
    pub id: String,
    /// What the agent does in this turn (`-` reads it from stdin).
    pub task: String,
    /// A new Claude Code budget in US dollars for this turn, within
    /// DELEGATE_MAX_BUDGET_USD.
    #[arg(long, value_name = "USD")]
    pub max_budget_usd: Option<f64>,
    /// Wait for the turn to finish, showing progress, then print its
    /// result; runs the engine here when no server is running.
    #[arg(long)]
    pub wait: bool,
    /// How to print.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `continue ID TASK [--wait]`.
pub async fn continue_job(settings: Settings, a: ContinueArgs) -> Result<u8, CliError> {
    let task = read_task(&a.task)?;
    let store = Store::open(&settings.data_dir)?;
    let served = engine_running(&store)?;
    if !a.wait || served {
        let jobs = JobManager::connect(Arc::new(settings), store);
        let id = ids::resolve(&jobs, &a.id)?;
        let rec = jobs.continue_job(&id, &task, a.max_budget_usd).await?;
        announce(&ContinueView::of(&rec), a.output, a.wait)?;
        if !a.wait {
            if !served && !a.output.json && !a.output.quiet {
                out::note(
                    "note: no server is running, so the turn waits as pending until \
                     `delegate-host serve` runs (or use `continue --wait`)",
                );
            }
            return Ok(exit::OK);
        }
        return finish(&jobs, &rec.id, a.output, false).await;
    }
    drop(store);
    let engine = engine_here(settings).await?;
    let jobs = &engine.manager;
    let outcome = async {
        let id = ids::resolve(jobs, &a.id)?;
        let rec = jobs.continue_job(&id, &task, a.max_budget_usd).await?;
        announce(&ContinueView::of(&rec), a.output, true)?;
        let code = finish(jobs, &rec.id, a.output, true).await;
        if !jobs.settled(&rec.id, SETTLE_LIMIT).await {
            out::note(&format!("turn {} is still being cleaned up", rec.id));
        }
        code
    }
    .await;
    engine.stop().await;
    outcome
}

/// The new turn's id on stdout for scripts, unless a wait follows.
fn announce(view: &ContinueView, output: OutputArgs, waiting: bool) -> Result<(), CliError> {
    if output.quiet {
        return out::line(&view.job_id);
    }
    if output.json {
        return if waiting { Ok(()) } else { out::json(view) };
    }
    out::note(&format!(
        "turn {} of job {} submitted as job {} ({})",
        view.turn, view.session_id, view.job_id, view.status
    ));
    if waiting {
        Ok(())
    } else {
        out::line(&view.job_id)
    }
}

fn read_task(task: &str) -> Result<String, CliError> {
    if task != "-" {
        return Ok(task.to_string());
    }
    std::io::read_to_string(std::io::stdin()).map_err(|source| CliError::Read {
        path: PathBuf::from("-"),
        source,
    })
}

/// `release ID`.
pub async fn release(jobs: &JobManager, id: &str, output: OutputArgs) -> Result<u8, CliError> {
    let id = ids::resolve(jobs, id)?;
    let released = jobs.release_job(&id).await?;
    let view = release_view(&released);
    if output.quiet {
        out::line(&view.session_id)?;
    } else if output.json {
        out::json(&view)?;
    } else {
        out::line(&view.message)?;
        if !jobs.runs_engine() && !engine_running(jobs.store())? {
            out::note("note: no server is running; the next `delegate-host serve` destroys the VM");
        }
    }
    Ok(exit::OK)
}
