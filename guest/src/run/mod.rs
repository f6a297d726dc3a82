//! The pipeline of one job: preparing → unpacking → running → collecting →
//! uploading → done. Every path ends in a result, and artifacts are
//! collected whatever the outcome (success, failure, timeout, cancel).

mod agent;

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use delegate_proto::outcome::ErrorKind;
use delegate_proto::{ArtifactEntry, JobManifest, JobResult, Phase, ResultStatus};
use tokio::sync::watch;

use crate::callback::{CallbackClient, Uplink};
use crate::redact::Secrets;
use crate::repo::{self, RepoBase};
use crate::report::Reporter;
use crate::supervise::{CgroupLimits, Containment, UserPolicy, user};
use crate::workspace::view::WorkspaceView;
use crate::workspace::{Layout, unpack};

pub use agent::AgentOutcome;

/// `pids.max` of the job cgroup: generous for builds, fatal to fork bombs.
pub const PIDS_MAX: u64 = 4096;
/// How long the uplink may take to deliver what is pending at the end.
const FLUSH_WITHIN: Duration = Duration::from_secs(30);

/// The resolved settings of one run.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// The workspace; `None` makes a fresh one.
    pub workspace: Option<PathBuf>,
    /// The log directory; `None` puts it beside the workspace.
    pub log_dir: Option<PathBuf>,
    /// Where the artifact archive goes (standalone).
    pub artifacts_out: Option<PathBuf>,
    /// How long the agent may run.
    pub timeout: Duration,
    /// SIGTERM to SIGKILL.
    pub grace: Duration,
    /// Between heartbeats.
    pub heartbeat: Duration,
    /// Bytes kept of each stream in the result.
    pub tail_bytes: usize,
    /// Cap on the artifacts' total size.
    pub max_artifact_bytes: u64,
    /// Whose privileges the agent gets.
    pub user: UserPolicy,
    /// Whether to try a cgroup.
    pub use_cgroup: bool,
    /// The caller's `PATH`, searched for the agent after the job's own
    /// (standalone runs only; see `caller`).
    pub caller_path: Option<String>,
    /// Sentences about how the run was set up that the person running it
    /// should see (what was borrowed from their environment).
    pub notes: Vec<String>,
    /// For a follow-up turn of a persistent job: what the earlier turns
    /// left (see `turns`).
    pub turn: Option<TurnContext>,
}

/// What a follow-up turn starts from: the workspace is already there, and
/// so is the repository with its base.
#[derive(Debug, Clone)]
pub struct TurnContext {
    /// The turn's number (2, 3, ...).
    pub number: u32,
    /// The Claude Code session to resume.
    pub resume_session_id: Option<String>,
    /// The repository as the first turn delivered it.
    pub repo: Option<RepoBase>,
    /// The tree the previous turn left, for this turn's own patch.
    pub previous_tree: Option<String>,
}

/// What a run leaves for a next turn.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The result (sent to the host already, in callback mode).
    pub result: JobResult,
    /// The repository and its base, when the job had one.
    pub repo: Option<RepoBase>,
    /// The tree at the end of the run, when a patch was made.
    pub tree: Option<String>,
    /// The run's log directory.
    pub log_dir: Option<PathBuf>,
}

/// Why a job was asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCause(pub String);

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs a job to its result. With `host`, events, artifacts and the result
/// also go to the host's callback API.
pub async fn run_job(
    manifest: JobManifest,
    opts: JobOptions,
    host: Option<CallbackClient>,
) -> JobResult {
    run(manifest, opts, host).await.result
}

/// [`run_job`], also returning what a follow-up turn needs.
pub async fn run(
    manifest: JobManifest,
    opts: JobOptions,
    host: Option<CallbackClient>,
) -> Finished {
    let job_start = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(None);
    listen_for_signals(stop_tx.clone());

    let runner_is_root = nix::unistd::geteuid().is_root();
    let run_user = user::resolve(&opts.user, runner_is_root);
    let owner = run_user
        .as_ref()
        .ok()
        .and_then(|u| u.as_ref())
        .map(|u| (u.uid, u.gid));
    let layout = Layout::prepare(opts.workspace.as_deref(), opts.log_dir.as_deref(), owner);

    let secrets = Secrets::for_job(manifest.secret_values());
    let mut reporter = Reporter::new(manifest.status_mode(), secrets.clone())
        .with_stdout(Box::new(std::io::stdout()))
        .with_summary(true);
    if let Some(client) = &host {
        let spool = match &layout {
            Ok(l) => l.log_dir.join("spool"),
            Err(_) => std::env::temp_dir().join(format!("delegate-spool-{}", std::process::id())),
        };
        let uplink = client.start_uplink(spool);
        forward_host_cancel(&uplink, stop_tx.clone());
        reporter = reporter.with_host(Box::new(uplink));
    }
    let reporter = Arc::new(reporter);
    let counters = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let heartbeat = reporter
        .wants_heartbeats()
        .then(|| Heartbeats::start(reporter.clone(), counters.clone(), opts.heartbeat));

    let prepared = match (&layout, &run_user) {
        (Ok(l), Ok(u)) => Ok((l, u.as_ref())),
        (Err(e), _) => Err(format!("cannot set up the workspace: {e}")),
        (_, Err(e)) => Err(format!("cannot choose the agent's user: {e}")),
    };
    let outcome = match prepared {
        Err(e) => {
            reporter.phase(Phase::Preparing, "failed");
            (failed(ErrorKind::Internal, e), None)
        }
        Ok((layout, user)) => {
            let limits = CgroupLimits {
                memory: manifest.resources.as_ref().and_then(|r| r.memory_bytes()),
                cpus: manifest.resources.as_ref().and_then(|r| r.cpu_count()),
                pids: Some(PIDS_MAX),
            };
            let containment = Containment::set_up(&limits, opts.use_cgroup);
            // Tried with the agent's own spawn (see `agent`).
            let view = WorkspaceView::plan(&layout.workspace);
            reporter.phase(
                Phase::Preparing,
                std::iter::once(format!(
                    "workspace {}; agent runs as {}; {}",
                    layout.workspace.display(),
                    user.map_or("the runner's user", |u| u.name.as_str()),
                    containment.note
                ))
                .chain(opts.notes.iter().cloned())
                .collect::<Vec<_>>()
                .join("; "),
            );
            let (outcome, base) = unpack_and_run(
                &manifest,
                &opts,
                layout,
                &view,
                user,
                &containment,
                &reporter,
                stop_rx,
                &counters,
                host.as_ref(),
            )
            .await;
            if let Some(cg) = &containment.cgroup {
                cg.remove();
            }
            (outcome, base)
        }
    };
    let (outcome, repo_base) = outcome;
    let mut end_tree = None;

    let mut result = JobResult {
        status: outcome.status,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        duration_ms: 0,
        output: outcome.output,
        artifacts: Vec::new(),
        error: None,
        error_kind: None,
        agent_result: outcome.agent_result,
        patch: None,
        turn_patch: None,
    };
    let mut error = outcome.error;

    reporter.phase(
        Phase::Collecting,
        format!("{} artifact globs", manifest.artifacts.len()),
    );
    let archive = layout.as_ref().ok().and_then(|l| {
        let path = opts
            .artifacts_out
            .clone()
            .unwrap_or_else(|| l.log_dir.join("artifacts.tar.gz"));
        let wanted = opts.artifacts_out.is_some() || !manifest.artifacts.is_empty();
        wanted.then(|| {
            collect(l, &manifest, &path, opts.max_artifact_bytes).map(|entries| (path, entries))
        })
    });
    let archive = match archive {
        Some(Ok((path, entries))) => {
            result.artifacts = entries;
            Some(path)
        }
        Some(Err(e)) => {
            merge_error(&mut result.status, &mut error, ErrorKind::Artifacts, e);
            None
        }
        None => None,
    };

    if let (Some(base), Ok(l)) = (&repo_base, &layout)
        && manifest.wants_patch()
    {
        let previous = opts.turn.as_ref().and_then(|t| t.previous_tree.as_deref());
        match collect_patch(base, previous, &l.log_dir, host.as_ref()).await {
            Ok(patches) => {
                result.patch = Some(patches.base);
                result.turn_patch = patches.turn;
                end_tree = Some(patches.tree);
            }
            Err(e) => merge_error(&mut result.status, &mut error, ErrorKind::Patch, e),
        }
    }

    match (&host, &archive) {
        (Some(client), Some(path)) if !manifest.artifacts.is_empty() => {
            reporter.phase(
                Phase::Uploading,
                format!("{} artifacts", result.artifacts.len()),
            );
            if let Err(e) = client.upload_artifacts(path).await {
                merge_error(
                    &mut result.status,
                    &mut error,
                    ErrorKind::Artifacts,
                    format!("uploading artifacts failed: {e}"),
                );
            }
        }
        (Some(_), _) => reporter.phase(Phase::Uploading, "no artifacts"),
        (None, Some(path)) => reporter.phase(
            Phase::Uploading,
            format!("no host; artifacts in {}", path.display()),
        ),
        (None, None) => reporter.phase(Phase::Uploading, "no host"),
    }

    if let Some((kind, message)) = error {
        result.error_kind = Some(kind);
        result.error = Some(message);
    }
    result.duration_ms = outcome.started.unwrap_or(job_start).elapsed().as_millis() as u64;
    let result = redact_result(result, &secrets);
    reporter.phase(Phase::Done, status_word(result.status));
    drop(heartbeat);
    reporter.print_result(&result);
    if let Ok(l) = &layout
        && let Some(root) = &l.temp_root
    {
        crate::say!(
            "delegate-guest: workspace and logs kept in {}",
            root.display()
        );
    }
    if let Some(client) = host {
        finish_with_host(&reporter, &client, &result).await;
    }
    Finished {
        result,
        repo: repo_base,
        tree: end_tree,
        log_dir: layout.ok().map(|l| l.log_dir),
    }
}

/// Makes the patch (whatever the job's outcome) and, for a follow-up
/// turn, the turn's own patch against `previous`; with a host, uploads
/// them; standalone they stay in the log directory.
async fn collect_patch(
    base: &RepoBase,
    previous: Option<&str>,
    log_dir: &std::path::Path,
    host: Option<&CallbackClient>,
) -> Result<repo::Patches, String> {
    let out = log_dir.join("patch.diff");
    let turn_out = log_dir.join("turn-patch.diff");
    let patches = repo::make_patches(base, previous.map(|t| (t, turn_out.as_path())), &out)
        .await
        .map_err(|e| format!("making the patch failed: {e}"))?;
    let Some(client) = host else {
        eprintln!("delegate-guest: patch in {}", out.display());
        return Ok(patches);
    };
    let ack = client
        .upload_patch(&out)
        .await
        .map_err(|e| format!("uploading the patch failed: {e}"))?;
    same_hash(&ack, &patches.base)?;
    if let Some(turn) = &patches.turn {
        let ack = client
            .upload_turn_patch(&turn_out)
            .await
            .map_err(|e| format!("uploading the turn's patch failed: {e}"))?;
        same_hash(&ack, turn)?;
    }
    Ok(patches)
}

fn same_hash(
    ack: &delegate_proto::api::PatchAck,
    sent: &delegate_proto::PatchSummary,
) -> Result<(), String> {
    if ack.sha256 == sent.sha256 {
        return Ok(());
    }
    Err(format!(
        "the host stored a patch with sha256 {}, not {}",
        ack.sha256, sent.sha256
    ))
}

#[allow(clippy::too_many_arguments)]
async fn unpack_and_run(
    manifest: &JobManifest,
    opts: &JobOptions,
    layout: &Layout,
    view: &WorkspaceView,
    user: Option<&user::RunUser>,
    containment: &Containment,
    reporter: &Arc<Reporter>,
    stop: watch::Receiver<Option<StopCause>>,
    counters: &[Arc<AtomicU64>; 2],
    host: Option<&CallbackClient>,
) -> (AgentOutcome, Option<RepoBase>) {
    let owner = user.map(|u| (u.uid, u.gid));
    // The repository first: input files are written over it, and the base
    // is what the repository was, so the patch shows them as changes.
    let base = if let Some(turn) = &opts.turn {
        // A follow-up turn works on what the earlier turns left.
        reporter.phase(
            Phase::Unpacking,
            format!(
                "turn {}: the workspace as turn {} left it",
                turn.number,
                turn.number - 1
            ),
        );
        turn.repo.clone()
    } else if manifest.repo.is_some() {
        reporter.phase(Phase::Unpacking, "repository");
        match repo::deliver(manifest, layout, owner, host).await {
            Ok(base) => base,
            Err(e) => return (failed(ErrorKind::Repo, e.to_string()), None),
        }
    } else {
        None
    };
    reporter.phase(Phase::Unpacking, format!("{} files", manifest.files.len()));
    if let Err(e) = unpack(&layout.workspace, &manifest.files, owner) {
        return (failed(ErrorKind::Unpack, e.to_string()), base);
    }
    let outcome = agent::run(agent::RunInputs {
        manifest,
        layout,
        view,
        opts,
        user,
        containment,
        reporter: reporter.clone(),
        stop,
        counters: counters.clone(),
    })
    .await;
    (outcome, base)
}

fn failed(kind: ErrorKind, message: String) -> AgentOutcome {
    AgentOutcome {
        status: ResultStatus::Failed,
        exit_code: None,
        signal: None,
        error: Some((kind, message)),
        agent_result: None,
        output: Default::default(),
        started: None,
    }
}

fn collect(
    layout: &Layout,
    manifest: &JobManifest,
    archive: &std::path::Path,
    cap: u64,
) -> Result<Vec<ArtifactEntry>, String> {
    crate::artifacts::collect(&layout.workspace, &manifest.artifacts, archive, cap)
        .map_err(|e| e.to_string())
}

/// An artifact failure fails a job that had succeeded; otherwise it is
/// added to the error the job already has.
fn merge_error(
    status: &mut ResultStatus,
    error: &mut Option<(ErrorKind, String)>,
    kind: ErrorKind,
    message: String,
) {
    match error {
        Some((_, msg)) => {
            msg.push_str("; ");
            msg.push_str(&message);
        }
        None => *error = Some((kind, message)),
    }
    if *status == ResultStatus::Success {
        *status = ResultStatus::Failed;
    }
}

/// Secrets never reach the result: every string in it is redacted.
fn redact_result(result: JobResult, secrets: &Secrets) -> JobResult {
    if secrets.is_empty() {
        return result;
    }
    let Ok(mut value) = serde_json::to_value(&result) else {
        return result;
    };
    secrets.redact_json(&mut value);
    serde_json::from_value(value).unwrap_or(result)
}

fn status_word(s: ResultStatus) -> &'static str {
    match s {
        ResultStatus::Success => "success",
        ResultStatus::Failed => "failed",
        ResultStatus::Timeout => "timeout",
        ResultStatus::Cancelled => "cancelled",
    }
}

/// Heartbeats from a thread of their own, so that a stdout reader that
/// stalls the reporter can never stall the runtime that enforces timeouts.
struct Heartbeats {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Heartbeats {
    fn start(
        reporter: Arc<Reporter>,
        counters: [Arc<AtomicU64>; 2],
        every: Duration,
    ) -> Heartbeats {
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                let (lock, wake) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (guard, timeout) = wake
                        .wait_timeout(stopped, every)
                        .unwrap_or_else(|e| e.into_inner());
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    if timeout.timed_out() {
                        reporter.heartbeat(
                            counters[0].load(Ordering::Relaxed),
                            counters[1].load(Ordering::Relaxed),
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start heartbeats: {e}");
        }
        Heartbeats { stop }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
    }
}

/// SIGTERM and SIGINT to the runner stop the job like a host cancel does:
/// the tree is stopped, artifacts are collected, the result is `cancelled`.
fn listen_for_signals(stop: watch::Sender<Option<StopCause>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            // Only the first signal counts; later ones are absorbed so that
            // the runner can still collect artifacts and report.
            stop.send_if_modified(|s| {
                let first = s.is_none();
                if first {
                    *s = Some(StopCause(format!("{name} to the runner")));
                }
                first
            });
        }
    });
}

fn forward_host_cancel(uplink: &Uplink, stop: watch::Sender<Option<StopCause>>) {
    let mut cancelled = uplink.cancelled();
    tokio::spawn(async move {
        loop {
            if *cancelled.borrow_and_update() {
                stop.send_if_modified(|s| {
                    let first = s.is_none();
                    if first {
                        *s = Some(StopCause("the host cancelled the job".into()));
                    }
                    first
                });
                return;
            }
            if cancelled.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Delivers pending events, then the result. The result goes last: once the
/// host has it, the job is final and its token stops working.
async fn finish_with_host(reporter: &Reporter, client: &CallbackClient, result: &JobResult) {
    if let Some(sink) = reporter.take_host() {
        let any: Box<dyn Any> = sink;
        match any.downcast::<Uplink>() {
            Ok(uplink) => {
                let report = uplink.flush(FLUSH_WITHIN).await;
                tracing::info!("events delivered: {report:?}");
            }
            Err(_) => tracing::error!("the host sink is not an uplink"),
        }
    }
    if let Err(e) = client.post_result(result).await {
        crate::say!("delegate-guest: could not send the result to the host: {e}");
    }
}
