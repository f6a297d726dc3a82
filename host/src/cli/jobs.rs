//! The job commands: submit, status, result, logs, cancel, list.
//!
//! Each is the MCP tool of the same name for a person: the same manager
//! calls and the same views, printed as text (or as the tool's JSON with
//! `--json`).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use delegate_proto::{JobManifest, JobState, LogStream};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::{Engine, EngineError, start_engine};
use crate::jobs::{JobError, JobManager};
use crate::mcp::calls::{cancel_view, status_view};
use crate::mcp::views::{ListView, ResultView, SubmitView, SummaryView};
use crate::model::{CancelOutcome, JobRecord, LogSelector};
use crate::store::{Store, StoreError};

use super::StreamArg;
use super::exit::{self, CliError};
use super::render;
use super::wait::{self, WaitEnd};

/// How often `logs --follow` looks for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(300);
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

fn read_manifest(path: &Path) -> Result<JobManifest, CliError> {
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    read.map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    JobManifest::from_json(&bytes).map_err(|e| CliError::Job(JobError::InvalidManifest(e)))
}

/// `submit MANIFEST [--wait]`.
pub async fn submit(
    settings: Settings,
    manifest: &Path,
    wait: bool,
    json: bool,
) -> Result<u8, CliError> {
    let manifest = read_manifest(manifest)?;
    let store = Store::open(&settings.data_dir)?;
    let served = engine_running(&store)?;
    let data_dir = settings.data_dir.clone();
    if !wait || served {
        let jobs = JobManager::connect(Arc::new(settings), store);
        let record = jobs.submit(manifest).await?;
        print_submitted(&record, json, wait);
        if !wait {
            if !served && !json {
                eprintln!(
                    "note: no server owns {} right now, so the job waits as pending until \
                     `delegate-host serve` runs (or use `submit --wait` to run it here)",
                    data_dir.display()
                );
            }
            return Ok(exit::OK);
        }
        return finish(&jobs, &record.id, json, false).await;
    }
    drop(store);
    let engine = engine_here(settings).await?;
    let outcome = run_here(&engine.manager, manifest, json).await;
    engine.stop().await;
    outcome
}

/// Starts an engine in this process for `submit --wait`. When the callback
/// port is taken (a server of another data directory, say) and the URL is
/// derived from it, any free port does for a one-shot local run.
async fn engine_here(settings: Settings) -> Result<Engine, CliError> {
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

/// Submits and waits with an engine in this process.
async fn run_here(jobs: &JobManager, manifest: JobManifest, json: bool) -> Result<u8, CliError> {
    let record = jobs.submit(manifest).await?;
    print_submitted(&record, json, true);
    finish(jobs, &record.id, json, true).await
}

/// Announces the job: its id on stdout for scripts (`id=$(delegate-host
/// submit m.json)`), unless a wait follows and the result will be printed.
fn print_submitted(record: &JobRecord, json: bool, waiting: bool) {
    if json {
        render::json(&SubmitView::of(record));
    } else {
        eprintln!("job {} submitted ({})", record.id, record.state);
        if !waiting {
            println!("{}", record.id);
        }
    }
}

/// Waits with a progress display, then prints the result. With the engine
/// here, Ctrl-C cancels the job (nothing would run it otherwise); with a
/// server, Ctrl-C only stops watching.
async fn finish(
    jobs: &JobManager,
    job_id: &str,
    json: bool,
    engine_here: bool,
) -> Result<u8, CliError> {
    let record = match wait::until_final(jobs, job_id).await? {
        WaitEnd::Final(r) => r,
        WaitEnd::Interrupted(r) if engine_here => {
            eprintln!("interrupted: cancelling job {}", r.id);
            jobs.cancel(&r.id).await?;
            match wait::until_final(jobs, job_id).await? {
                WaitEnd::Final(r) | WaitEnd::Interrupted(r) => r,
            }
        }
        WaitEnd::Interrupted(r) => {
            eprintln!(
                "stopped watching; job {} goes on ({}). Follow it with `delegate-host status {}`",
                r.id, r.state, r.id
            );
            return Ok(exit::CANCELLED);
        }
    };
    print_result(jobs, &record, json)?;
    Ok(exit::for_state(record.state))
}

fn print_result(jobs: &JobManager, record: &JobRecord, json: bool) -> Result<(), CliError> {
    let view = ResultView::of(record);
    if json {
        render::json(&view);
    } else {
        let archive = jobs.artifact_archive(&record.id).ok().flatten();
        print!("{}", render::result(&view, archive.as_deref()));
    }
    Ok(())
}

/// `status ID`.
pub fn status(jobs: &JobManager, id: &str, json: bool) -> Result<u8, CliError> {
    let record = jobs.get(id)?;
    let view = status_view(jobs, &record);
    if json {
        render::json(&view);
    } else {
        print!("{}", render::status(&view));
    }
    Ok(exit::OK)
}

/// `result ID`.
pub fn result(jobs: &JobManager, id: &str, json: bool) -> Result<u8, CliError> {
    let record = jobs.get(id)?;
    if !record.state.is_final() {
        return Err(JobError::NotFinished(record.state).into());
    }
    print_result(jobs, &record, json)?;
    Ok(exit::for_state(record.state))
}

/// `logs ID [--follow] [--stream S]`: the bytes as they are, to stdout.
pub async fn logs(
    jobs: &JobManager,
    id: &str,
    follow: bool,
    stream: StreamArg,
) -> Result<u8, CliError> {
    let which = match stream {
        StreamArg::Combined => LogSelector::Combined,
        StreamArg::Stdout => LogSelector::Stream(LogStream::Stdout),
        StreamArg::Stderr => LogSelector::Stream(LogStream::Stderr),
    };
    jobs.get(id)?;
    let mut cursor = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let slice = jobs.read_log(id, which, cursor, LOG_CHUNK)?;
        if !slice.data.is_empty() {
            out.write_all(&slice.data).map_err(CliError::Output)?;
            out.flush().map_err(CliError::Output)?;
        }
        cursor = slice.next_cursor;
        if slice.complete {
            break;
        }
        if slice.data.is_empty() {
            if !follow {
                break;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
    Ok(exit::OK)
}

/// `cancel ID`.
pub async fn cancel(jobs: &JobManager, id: &str) -> Result<u8, CliError> {
    let outcome = jobs.cancel(id).await?;
    let view = cancel_view(&outcome);
    println!("{}", view.message);
    if let CancelOutcome::Cancelled(_) = outcome
        && !jobs.runs_engine()
        && !engine_running(jobs.store())?
    {
        eprintln!("note: no server is running; the cancel is recorded and the job will not start");
    }
    Ok(exit::OK)
}

/// `list [--status S] [--limit N] [--cursor C]`.
pub fn list(
    jobs: &JobManager,
    status: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
    json: bool,
) -> Result<u8, CliError> {
    let status: Option<JobState> = status
        .map(str::parse)
        .transpose()
        .map_err(CliError::Usage)?;
    let page = jobs.list(status, limit, cursor)?;
    let view = ListView {
        jobs: page.items.into_iter().map(SummaryView::from).collect(),
        next_cursor: page.next_cursor,
    };
    if json {
        render::json(&view);
    } else {
        print!("{}", render::list(&view));
        if let Some(c) = &view.next_cursor {
            eprintln!("more: --cursor {c}");
        }
    }
    Ok(exit::OK)
}
