//! The job commands: submit, status, result, logs, cancel, list.
//!
//! Each is the MCP tool of the same name for a person: the same manager
//! calls and the same views, printed as text (or as the tool's JSON with
//! `--json`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use delegate_proto::{JobManifest, JobState, LogStream};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::{Engine, EngineError, start_engine};
use crate::jobs::{JobError, JobManager};
use crate::mcp::args::MAX_LOG_READ;
use crate::mcp::calls::{cancel_view, list_view, logs_view, status_view};
use crate::model::{CancelOutcome, JobRecord, LogSelector};
use crate::store::{Store, StoreError};
use crate::views::{ResultView, SubmitView};

use super::exit::{self, CliError};
use super::wait::{self, WaitEnd, Watch};
use super::{OutputArgs, StreamArg, ids, manifest, out, render};

/// Bytes per log read.
const LOG_CHUNK: usize = 1 << 20;

/// A manager without an engine, on the configured data directory.
pub fn connect(settings: Arc<Settings>) -> Result<JobManager, CliError> {
    let store = Store::open(&settings.data_dir)?;
    Ok(JobManager::connect(settings, store))
}

/// Whether an engine (a `serve`) owns the data directory right now.
pub(super) fn engine_running(store: &Store) -> Result<bool, CliError> {
    match store.lock_engine() {
        Ok(lock) => {
            drop(lock);
            Ok(false)
        }
        Err(StoreError::Locked { .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// `submit MANIFEST [--wait]`.
pub async fn submit(
    settings: Settings,
    manifest: &Path,
    wait: bool,
    output: OutputArgs,
) -> Result<u8, CliError> {
    let manifest = manifest::read(manifest)?;
    let store = Store::open(&settings.data_dir)?;
    let served = engine_running(&store)?;
    let data_dir = settings.data_dir.clone();
    if !wait || served {
        let jobs = JobManager::connect(Arc::new(settings), store);
        let record = jobs.submit(manifest).await?;
        print_submitted(&record, output, wait, &jobs)?;
        if !wait {
            if !served && !output.json && !output.quiet {
                out::note(&format!(
                    "note: no server owns {} right now, so the job waits as pending until \
                     `delegate-host serve` runs (or use `submit --wait` to run it here)",
                    data_dir.display()
                ));
            }
            return Ok(exit::OK);
        }
        return finish(&jobs, &record.id, output, false).await;
    }
    drop(store);
    let engine = engine_here(settings).await?;
    let outcome = run_here(&engine.manager, manifest, output).await;
    engine.stop().await;
    outcome
}

/// Starts an engine in this process for `submit --wait`. When the callback
/// port is taken (a server of another data directory, say) and the URL is
/// derived from it, any free port does for a one-shot local run.
pub(super) async fn engine_here(mut settings: Settings) -> Result<Engine, CliError> {
    // A one-shot run serves no /metrics: a server may hold that address.
    settings.metrics_bind = None;
    // Nor fills a warm pool it would destroy when its one job ends (idle
    // VMs a server kept stay for that server).
    settings.pool.clear();
    let retry = settings.callback_url_derived.then(|| {
        let mut s = settings.clone();
        s.callback_bind.set_port(0);
        s
    });
    match start_engine(settings, CancellationToken::new()).await {
        Err(EngineError::Bind { source, addr })
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            let Some(settings) = retry else {
                return Err(EngineError::Bind { source, addr }.into());
            };
            tracing::info!(%addr, "callback port taken; using a free one for this run");
            Ok(start_engine(settings, CancellationToken::new()).await?)
        }
        other => Ok(other?),
    }
}

/// How long `submit --wait` waits for its engine to destroy the job's VM.
pub(super) const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// Submits and waits with an engine in this process.
async fn run_here(
    jobs: &JobManager,
    manifest: JobManifest,
    output: OutputArgs,
) -> Result<u8, CliError> {
    let record = jobs.submit(manifest).await?;
    print_submitted(&record, output, true, jobs)?;
    let code = finish(jobs, &record.id, output, true).await;
    // The engine stops with this command: let it destroy the job's VM first.
    if !jobs.settled(&record.id, SETTLE_LIMIT).await {
        out::note(&format!(
            "job {}'s VM is still being destroyed; the next `delegate-host serve` finishes it",
            record.id
        ));
    }
    code
}

/// Announces the job: its id on stdout for scripts (`id=$(delegate-host
/// submit m.json)`), unless a wait follows and the result will be printed
/// (with `--quiet`, the id is all that is ever printed).
fn print_submitted(
    record: &JobRecord,
    output: OutputArgs,
    waiting: bool,
    jobs: &JobManager,
) -> Result<(), CliError> {
    if output.quiet {
        return out::line(&record.id);
    }
    if output.json {
        // With --wait, the result is the one JSON document printed.
        return if waiting {
            Ok(())
        } else {
            out::json(&SubmitView::of(record))
        };
    }
    out::note(&format!("job {} submitted ({})", record.id, record.state));
    // Which provider runs it, and when the host picked it, why.
    let settings = jobs.settings();
    match &settings.provider_pick {
        Some(why) => out::note(&format!("provider: {why} (DELEGATE_PROVIDER=auto)")),
        None => out::note(&format!("provider: {}", settings.provider.as_str())),
    }
    if waiting {
        Ok(())
    } else {
        out::line(&record.id)
    }
}

/// Waits with a progress display and the job's output live on stdout,
/// then prints the result. With the engine here, Ctrl-C cancels the job
/// (nothing would run it otherwise); with a server, Ctrl-C only stops
/// watching.
pub(super) async fn finish(
    jobs: &JobManager,
    job_id: &str,
    output: OutputArgs,
    engine_here: bool,
) -> Result<u8, CliError> {
    // With --json the result is the one document on stdout; with -q, the id.
    let live = !output.quiet && !output.json;
    let watch = Watch {
        progress: !output.quiet,
        output: live.then_some(LogSelector::Combined),
        needs_engine: false,
    };
    let record = match wait::until_final(jobs, job_id, watch).await? {
        WaitEnd::Final(r) => r,
        WaitEnd::Interrupted(r) if engine_here => {
            out::note(&format!("interrupted: cancelling job {}", r.id));
            jobs.cancel(&r.id).await?;
            let watch = Watch {
                output: None,
                ..watch
            };
            match wait::until_final(jobs, job_id, watch).await? {
                WaitEnd::Final(r) | WaitEnd::Interrupted(r) | WaitEnd::Undriven(r) => r,
            }
        }
        WaitEnd::Interrupted(r) | WaitEnd::Undriven(r) => {
            out::note(&format!(
                "stopped watching; job {} goes on ({}). Wait again with `delegate-host wait {}`",
                r.id, r.state, r.id
            ));
            return Ok(exit::CANCELLED);
        }
    };
    if !output.quiet {
        print_result(jobs, &record, output.json, live)?;
    }
    Ok(exit::for_state(record.state))
}

/// Prints a final job's result; after its output was shown live, without
/// the output tails again and with how it ended as the last line.
fn print_result(
    jobs: &JobManager,
    record: &JobRecord,
    json: bool,
    output_shown: bool,
) -> Result<(), CliError> {
    let view = ResultView::of(record);
    if json {
        return out::json(&view);
    }
    let archive = jobs.artifact_archive(&record.id).ok().flatten();
    if output_shown {
        out::text(&render::result_after_output(&view, archive.as_deref()))
    } else {
        out::text(&render::result(&view, archive.as_deref()))
    }
}

/// `wait ID`: the progress of `submit --wait` for a job already submitted.
pub async fn wait(jobs: &JobManager, id: &str, output: OutputArgs) -> Result<u8, CliError> {
    let id = ids::resolve(jobs, id)?;
    let record = jobs.get(&id)?;
    if !record.state.is_final() && !output.quiet && !engine_running(jobs.store())? {
        out::note(&format!(
            "note: no server owns {} right now; job {id} stays {} until `delegate-host serve` runs",
            jobs.store().data_dir().display(),
            record.state
        ));
    }
    let code = finish(jobs, &id, output, false).await?;
    if output.quiet {
        out::line(&id)?;
    }
    Ok(code)
}

/// `status ID`.
pub fn status(jobs: &JobManager, id: &str, output: OutputArgs) -> Result<u8, CliError> {
    let id = ids::resolve(jobs, id)?;
    let record = jobs.get(&id)?;
    if output.quiet {
        out::line(&record.id)?;
        return Ok(exit::OK);
    }
    let view = status_view(jobs, &record);
    if output.json {
        out::json(&view)?;
    } else {
        let mut text = render::status(&view, Utc::now());
        if !record.state.is_final() && !wait::driven(jobs)? {
            text.push_str(&format!(
                "{:<11} not running: no server owns {}, so the job stays {} until \
                 `delegate-host serve` runs\n",
                "engine",
                jobs.store().data_dir().display(),
                record.state
            ));
        }
        out::text(&text)?;
    }
    Ok(exit::OK)
}

/// `result ID`.
pub fn result(jobs: &JobManager, id: &str, output: OutputArgs) -> Result<u8, CliError> {
    let id = ids::resolve(jobs, id)?;
    let record = jobs.get(&id)?;
    if !record.state.is_final() {
        return Err(CliError::NotFinished {
            id,
            state: record.state,
        });
    }
    if output.quiet {
        out::line(&record.id)?;
    } else {
        print_result(jobs, &record, output.json, false)?;
    }
    Ok(exit::for_state(record.state))
}

/// `logs ID [--follow] [--stream S] [--json]`: the bytes as they are, to
/// stdout; with `--json`, the log so far as `get_job_logs` answers it.
pub async fn logs(
    jobs: &JobManager,
    id: &str,
    follow: bool,
    stream: StreamArg,
    json: bool,
) -> Result<u8, CliError> {
    let which = match stream {
        StreamArg::Combined => LogSelector::Combined,
        StreamArg::Stdout => LogSelector::Stream(LogStream::Stdout),
        StreamArg::Stderr => LogSelector::Stream(LogStream::Stderr),
    };
    let id = ids::resolve(jobs, id)?;
    let record = jobs.get(&id)?;
    if json {
        let slice = jobs.read_log(&id, which, 0, MAX_LOG_READ as usize)?;
        out::json(&logs_view(&record, which, 0, slice))?;
        return Ok(exit::OK);
    }
    if follow {
        return follow_log(jobs, &record, which).await;
    }
    let mut cursor = 0;
    loop {
        let slice = jobs.read_log(&id, which, cursor, LOG_CHUNK)?;
        if !slice.data.is_empty() {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&slice.data)
                .and_then(|()| stdout.flush())
                .map_err(CliError::Output)?;
        }
        cursor = slice.next_cursor;
        if slice.complete || slice.data.is_empty() {
            break;
        }
    }
    Ok(exit::OK)
}

/// `logs --follow`: the log as it grows, with the progress display on
/// stderr and a last line there saying how the job ended. A job no engine
/// runs would never end: that is said instead of waiting forever.
async fn follow_log(
    jobs: &JobManager,
    record: &JobRecord,
    which: LogSelector,
) -> Result<u8, CliError> {
    let watch = Watch {
        progress: true,
        output: Some(which),
        needs_engine: true,
    };
    let undriven = |r: &JobRecord| {
        format!(
            "job {} is {} and no server owns {}, so nothing runs it; \
             `delegate-host serve` picks it up",
            r.id,
            r.state,
            jobs.store().data_dir().display()
        )
    };
    match wait::until_final(jobs, &record.id, watch).await? {
        WaitEnd::Final(r) => {
            out::note(&render::ended(&ResultView::of(&r)));
            Ok(exit::for_state(r.state))
        }
        WaitEnd::Interrupted(_) => Ok(exit::CANCELLED),
        WaitEnd::Undriven(r) => {
            out::note(&undriven(&r));
            Ok(exit::NOT_FINISHED)
        }
    }
}

/// `cancel ID`.
pub async fn cancel(jobs: &JobManager, id: &str, output: OutputArgs) -> Result<u8, CliError> {
    let id = ids::resolve(jobs, id)?;
    let outcome = jobs.cancel(&id).await?;
    let view = cancel_view(&outcome);
    if output.quiet {
        out::line(&id)?;
    } else if output.json {
        out::json(&view)?;
    } else {
        out::line(&view.message)?;
    }
    if let CancelOutcome::Cancelled(_) = outcome
        && !output.quiet
        && !output.json
        && !jobs.runs_engine()
        && !engine_running(jobs.store())?
    {
        out::note("note: no server is running; the cancel is recorded and the job will not start");
    }
    Ok(exit::OK)
}

/// `list [--status S] [--limit N] [--cursor C]`.
pub fn list(
    jobs: &JobManager,
    status: Option<JobState>,
    limit: usize,
    cursor: Option<&str>,
    output: OutputArgs,
) -> Result<u8, CliError> {
    let page = jobs
        .list(status, limit, cursor)
        .map_err(|e| match (e, cursor) {
            // The manager words a bad cursor for MCP clients.
            (JobError::InvalidArgument { .. }, Some(c)) => CliError::Usage(format!(
                "--cursor {c:?} is not one that `delegate-host list` printed"
            )),
            (e, _) => e.into(),
        })?;
    let view = list_view(jobs, page);
    if output.quiet {
        let ids: String = view
            .jobs
            .iter()
            .map(|j| format!("{}\n", j.job_id))
            .collect();
        out::text(&ids)?;
    } else if output.json {
        out::json(&view)?;
    } else {
        out::text(&render::list(&view, Utc::now()))?;
        if let Some(c) = &view.next_cursor {
            out::note(&format!("more: --cursor {c}"));
        }
        let waiting = view.jobs.iter().filter(|j| !j.status.is_final()).count();
        if waiting > 0 && !wait::driven(jobs)? {
            out::note(&format!(
                "note: no engine is running (no server owns {}): {waiting} unfinished \
                 job(s) here wait for `delegate-host serve`",
                jobs.store().data_dir().display()
            ));
        }
    }
    Ok(exit::OK)
}
