//! The running phase: start the agent, stream its output, wait for it, the
//! timeout or a cancel, and end its whole tree.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use delegate_proto::outcome::ErrorKind;
use delegate_proto::{AgentResult, AgentType, LogStream, OutputTails, ResultStatus};
use tokio::sync::{oneshot, watch};

use super::{JobOptions, StopCause};
use crate::agent::stream_json::StreamJsonParser;
use crate::agent::{self, ResolveError, claude};
use crate::env::{EnvInputs, build as build_env};
use crate::output::{Observer, Pump, PumpResult};
use crate::report::Reporter;
use crate::supervise::{
    Containment, ExitStatus, Limits, RunUser, SpawnSpec, Tree, failed_in_view, spawn,
};
use crate::workspace::Layout;
use crate::workspace::view::WorkspaceView;
use delegate_proto::JobManifest;

/// How long to wait for the output pipes to close after the tree is gone
/// (only a process outside the tree holding them could delay this).
const PIPE_DRAIN: Duration = Duration::from_secs(10);

/// What the running phase produced.
#[derive(Debug)]
pub struct AgentOutcome {
    /// The verdict.
    pub status: ResultStatus,
    /// Exit code, when the agent exited.
    pub exit_code: Option<i32>,
    /// Signal name, when one ended it.
    pub signal: Option<String>,
    /// Why it did not succeed.
    pub error: Option<(ErrorKind, String)>,
    /// Claude's result event.
    pub agent_result: Option<AgentResult>,
    /// Output tails.
    pub output: OutputTails,
    /// When the agent started (None when it never did).
    pub started: Option<Instant>,
}

impl AgentOutcome {
    fn not_started(kind: ErrorKind, message: String) -> Self {
        AgentOutcome {
            status: if kind == ErrorKind::Cancelled {
                ResultStatus::Cancelled
            } else {
                ResultStatus::Failed
            },
            exit_code: None,
            signal: None,
            error: Some((kind, message)),
            agent_result: None,
            output: OutputTails::default(),
            started: None,
        }
    }
}

/// Everything the running phase needs.
pub struct RunInputs<'a> {
    /// The job.
    pub manifest: &'a JobManifest,
    /// Its directories.
    pub layout: &'a Layout,
    /// How the agent sees them.
    pub view: &'a WorkspaceView,
    /// Settings.
    pub opts: &'a JobOptions,
    /// The agent's user, when privileges are dropped.
    pub user: Option<&'a RunUser>,
    /// Cgroup or subreaper.
    pub containment: &'a Containment,
    /// Events.
    pub reporter: Arc<Reporter>,
    /// Set when the job must stop (signal or host cancel).
    pub stop: watch::Receiver<Option<StopCause>>,
    /// Output byte counters for heartbeats.
    pub counters: [Arc<AtomicU64>; 2],
}

enum Ending {
    Exited(ExitStatus),
    TimedOut,
    Stopped(StopCause),
}

/// Finds the agent's program on the job's `PATH`, then (standalone runs)
/// on the caller's. A program found only there has its directory appended
/// to the job's `PATH`, so an interpreter installed beside it is found too,
/// and the returned note says so.
fn resolve_agent(
    program: &str,
    env: &mut BTreeMap<String, String>,
    i: &RunInputs<'_>,
) -> Result<(PathBuf, Option<String>), ResolveError> {
    let path = env.get("PATH").cloned().unwrap_or_default();
    let err = match agent::resolve_program(program, &path, &i.layout.workspace) {
        Ok(p) => return Ok((p, None)),
        Err(e) => e,
    };
    let (ResolveError::NotFound { .. }, Some(caller_path)) = (&err, i.opts.caller_path.as_deref())
    else {
        return Err(err);
    };
    let found = match agent::resolve_program(program, caller_path, &i.layout.workspace) {
        Ok(p) => p,
        Err(ResolveError::NotFound { .. }) => {
            return Err(ResolveError::NotFound {
                program: program.to_string(),
                path: format!("{path}, then the caller's PATH={caller_path}"),
            });
        }
        Err(e) => return Err(e),
    };
    let note = found.parent().and_then(|d| d.to_str()).map(|dir| {
        env.insert("PATH".to_string(), format!("{path}:{dir}"));
        format!("{program} found on the caller's PATH; {dir} added to the job's PATH")
    });
    Ok((found, note))
}

/// Puts the real paths back into `env` where it holds the mapped ones
/// (a value the manifest set itself stays).
fn unmap_env(env: &mut BTreeMap<String, String>, mapped: &WorkspaceView, layout: &Layout) {
    for (key, real) in [
        ("WORKSPACE", &layout.workspace),
        ("HOME", &layout.home),
        ("TMPDIR", &layout.tmp),
    ] {
        let seen = mapped.agent_path(real).display().to_string();
        if env.get(key) == Some(&seen) {
            env.insert(key.to_string(), real.display().to_string());
        }
    }
}

/// Runs the agent to its end.
pub async fn run(mut i: RunInputs<'_>) -> AgentOutcome {
    let m = i.manifest;
    let resume = i
        .opts
        .turn
        .as_ref()
        .and_then(|t| t.resume_session_id.as_deref());
    let inv = agent::invocation(m, resume);
    // The agent keeping the runner's user still gets USER, as everywhere.
    let own_name = i
        .user
        .is_none()
        .then(crate::supervise::user::own_name)
        .flatten();
    let mut view = i.view.clone();
    let seen = |p: &std::path::Path| view.agent_path(p);
    let (workspace, home, tmp) = (
        seen(&i.layout.workspace),
        seen(&i.layout.home),
        seen(&i.layout.tmp),
    );
    let mut env = build_env(EnvInputs {
        workspace: &workspace,
        home: &home,
        tmp: &tmp,
        user: i.user.map(|u| u.name.as_str()).or(own_name.as_deref()),
        defaults: &inv.env_defaults,
        manifest: &m.env,
    });
    if m.agent_type == AgentType::Claude {
        if let Err(e) = claude::check_credentials(&env) {
            return AgentOutcome::not_started(ErrorKind::Credentials, e);
        }
        let agent_is_root = i.user.is_none() && nix::unistd::geteuid().is_root();
        if let Some(e) = claude::root_refusal(&inv.args, &env, agent_is_root) {
            return AgentOutcome::not_started(ErrorKind::Spawn, e);
        }
    }
    let (program, found_note) = match resolve_agent(&inv.program, &mut env, &i) {
        Ok(found) => found,
        Err(e) => {
            let hint = match m.agent_type {
                AgentType::Claude => {
                    " (install Claude Code: npm i -g @anthropic-ai/claude-code, or set agent.command)"
                }
                _ => "",
            };
            return AgentOutcome::not_started(
                ErrorKind::Spawn,
                format!("cannot run the agent: {e}{hint}"),
            );
        }
    };
    if let Some(cause) = i.stop.borrow().clone() {
        return AgentOutcome::not_started(
            ErrorKind::Cancelled,
            format!("cancelled ({cause}) before the agent started"),
        );
    }
    let logs = (
        open_log(&i.layout.stdout_log()),
        open_log(&i.layout.stderr_log()),
    );
    let (out_log, err_log) = match logs {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return AgentOutcome::not_started(
                ErrorKind::Internal,
                format!(
                    "cannot open the log files in {}: {e}",
                    i.layout.log_dir.display()
                ),
            );
        }
    };
    let cgroup = i.containment.cgroup.clone();
    let limits = Limits::plan(
        m.resources.as_ref().and_then(|r| r.disk_bytes()),
        i.user.is_some(),
        Limits::current_nofile_hard(),
    );
    let running = std::iter::once(inv.label.clone())
        .chain(found_note)
        .chain(view.note())
        .chain(Some(i.containment.limits_line()))
        .collect::<Vec<_>>()
        .join("; ");
    i.reporter.phase(delegate_proto::Phase::Running, running);
    let spawn_with = |view: &WorkspaceView, env: &BTreeMap<String, String>| {
        let planned = view.spawn_view();
        spawn(SpawnSpec {
            program: &program,
            arg0: &inv.program,
            args: &inv.args,
            env,
            cwd: &i.layout.workspace,
            user: i.user,
            limits,
            cgroup: cgroup.as_ref().map(|c| (c.dir_fd(), c.procs_file())),
            view: planned.as_ref().map(|(ws, root)| (*ws, root.as_path())),
        })
    };
    let mut spawned = spawn_with(&view, &env);
    if let Err(e) = &spawned
        && failed_in_view(e)
    {
        // No user namespaces here: the agent sees the real paths instead,
        // and the summary says so.
        let mapped = std::mem::replace(&mut view, WorkspaceView::failed(&e.to_string()));
        unmap_env(&mut env, &mapped, i.layout);
        if let Some(note) = view.note() {
            i.reporter.progress(None, note);
        }
        spawned = spawn_with(&view, &env);
    }
    let spawned = match spawned {
        Ok(s) => s,
        Err(e) => {
            return AgentOutcome::not_started(
                ErrorKind::Spawn,
                format!("cannot start {}: {e}", program.display()),
            );
        }
    };
    let started = Instant::now();
    let tree = Tree::new(spawned.pid, cgroup.clone());

    let parser = (m.agent_type == AgentType::Claude)
        .then(|| Arc::new(Mutex::new(StreamJsonParser::new(m.agent.max_turns))));
    let observer: Option<Observer> = parser.clone().map(|p| {
        let reporter = i.reporter.clone();
        let mut updates = Vec::new();
        Box::new(move |bytes: &[u8]| {
            p.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(bytes, &mut updates);
            for u in updates.drain(..) {
                reporter.progress(u.percent, u.message);
            }
        }) as Observer
    });
    let secrets = i.reporter.secrets().clone();
    let pump = |stream, log, counter: &Arc<AtomicU64>, observer| Pump {
        stream,
        log,
        tail_bytes: i.opts.tail_bytes,
        redactor: secrets.stream(),
        redact: !secrets.is_empty(),
        reporter: i.reporter.clone(),
        counter: counter.clone(),
        observer,
    };
    let out_rx = start_pump(
        pump(LogStream::Stdout, out_log, &i.counters[0], observer),
        spawned.stdout,
    );
    let err_rx = start_pump(
        pump(LogStream::Stderr, err_log, &i.counters[1], None),
        spawned.stderr,
    );

    let mut exit_rx = spawned.exit;
    let ending = tokio::select! {
        status = &mut exit_rx => match status {
            Ok(s) => Ending::Exited(s),
            // The reaper never drops a registered sender; treat as killed.
            Err(_) => Ending::Exited(ExitStatus::Signal(nix::sys::signal::Signal::SIGKILL)),
        },
        _ = tokio::time::sleep(i.opts.timeout) => Ending::TimedOut,
        cause = wait_stop(&mut i.stop) => Ending::Stopped(cause),
    };

    let (status, stop_note) = match &ending {
        Ending::Exited(status) => {
            tree.mark_leader_reaped();
            if !tree.is_gone() {
                // Stop first, report after: the reporter may block on a
                // slow stdout reader, the tree must not wait for it.
                let left = tree.live().len();
                tree.stop(i.opts.grace).await;
                i.reporter.progress(
                    None,
                    format!("agent exited; stopped {left} leftover processes"),
                );
            }
            (Some(*status), None)
        }
        Ending::TimedOut | Ending::Stopped(_) => {
            let why = match &ending {
                Ending::Stopped(c) => format!("cancelled ({c})"),
                _ => format!("timed out after {}s", i.opts.timeout.as_secs()),
            };
            let report = tree.stop(i.opts.grace).await;
            i.reporter.progress(
                None,
                format!(
                    "{why}: the agent was stopped (grace {}s)",
                    i.opts.grace.as_secs()
                ),
            );
            // The leader is dead; its status arrives from the reaper.
            let status = tokio::time::timeout(Duration::from_secs(10), &mut exit_rx)
                .await
                .ok()
                .and_then(Result::ok);
            tree.mark_leader_reaped();
            let note = if report.graceful {
                why
            } else {
                format!("{why}; the process tree was killed with SIGKILL after the grace period")
            };
            (status, Some(note))
        }
    };

    let (out, err) = (drain(out_rx).await, drain(err_rx).await);
    let output = OutputTails {
        stdout: out.as_ref().map(|p| p.tail.clone()).unwrap_or_default(),
        stderr: err.as_ref().map(|p| p.tail.clone()).unwrap_or_default(),
    };
    let agent_result = parser.and_then(|p| {
        let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
        let mut updates = Vec::new();
        p.finish(&mut updates);
        for u in updates {
            i.reporter.progress(u.percent, u.message);
        }
        p.take_result()
    });
    let oom = cgroup.as_ref().is_some_and(|c| c.oom_killed());
    let exit_code = status.and_then(ExitStatus::code);
    let signal = status.and_then(ExitStatus::signal_name);

    let (result_status, mut error) = match ending {
        Ending::TimedOut => (
            ResultStatus::Timeout,
            Some((ErrorKind::Timeout, stop_note.unwrap_or_default())),
        ),
        Ending::Stopped(_) => (
            ResultStatus::Cancelled,
            Some((ErrorKind::Cancelled, stop_note.unwrap_or_default())),
        ),
        Ending::Exited(s) => {
            let verdict = match m.agent_type {
                AgentType::Claude => claude::judge(agent_result.as_ref(), s.code()),
                _ => match s {
                    ExitStatus::Code(0) => None,
                    ExitStatus::Code(c) => {
                        Some((ErrorKind::Exit, format!("the agent exited with code {c}")))
                    }
                    ExitStatus::Signal(sig) => Some((
                        ErrorKind::Exit,
                        format!("the agent was killed by {}", sig.as_str()),
                    )),
                },
            };
            match verdict {
                None => (ResultStatus::Success, None),
                Some(e) => (ResultStatus::Failed, Some(e)),
            }
        }
    };
    if oom && let Some((_, msg)) = &mut error {
        msg.push_str(&format!(
            "; the memory limit ({}) was hit",
            m.resources
                .as_ref()
                .and_then(|r| r.memory.clone())
                .unwrap_or_default()
        ));
    }
    for (name, p) in [("stdout", &out), ("stderr", &err)] {
        match p {
            Some(PumpResult {
                log_error: Some(e), ..
            }) => tracing::warn!("the {name} log is incomplete: {e}"),
            None => tracing::warn!("the {name} pipe stayed open after the process tree ended"),
            _ => {}
        }
    }
    AgentOutcome {
        status: result_status,
        exit_code,
        signal,
        error,
        agent_result,
        output,
        started: Some(started),
    }
}

async fn wait_stop(stop: &mut watch::Receiver<Option<StopCause>>) -> StopCause {
    loop {
        if let Some(c) = stop.borrow_and_update().clone() {
            return c;
        }
        if stop.changed().await.is_err() {
            // No one can cancel any more: never resolve.
            std::future::pending::<()>().await;
        }
    }
}

fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    // Readable too: a pump that splices the output into the log reads its
    // tail back from it.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn start_pump(pump: Pump, reader: std::fs::File) -> oneshot::Receiver<PumpResult> {
    let (tx, rx) = oneshot::channel();
    let stream = pump.stream;
    let spawned = std::thread::Builder::new()
        .name(format!("pump-{}", stream.as_str()))
        .spawn(move || {
            let _ = tx.send(pump.run_blocking(reader));
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the {} reader: {e}", stream.as_str());
    }
    rx
}

async fn drain(rx: oneshot::Receiver<PumpResult>) -> Option<PumpResult> {
    tokio::time::timeout(PIPE_DRAIN, rx)
        .await
        .ok()
        .and_then(Result::ok)
}
