//! A persistent job's guest after its first turn: it stays in the kept VM,
//! waits on the host for the next turn (`GET turns/next`), and runs each
//! turn like a job of its own (its own id, events, result and patches,
//! with the session's token) in the same workspace, until the host
//! releases the VM or stops answering for good. A `claude` turn resumes
//! the Claude Code session the previous turn recorded.

use delegate_proto::Bootstrap;

use crate::callback::{CallbackClient, CallbackOptions};
use crate::cli::Knobs;
use crate::run::{Finished, TurnContext, run};

/// Serves follow-up turns after `first` (turn 1), asking through `session`
/// (the client of the session's first job).
pub async fn serve(
    session: &CallbackClient,
    bootstrap: &Bootstrap,
    knobs: &Knobs,
    route: &crate::egress::Route,
    first: Finished,
) {
    let repo = first.repo;
    let mut tree = first.tree;
    let logs = first.log_dir;
    let mut after = 1;
    crate::say!("delegate-guest: persistent job; waiting for follow-up turns");
    let stopped = stop_signal();
    tokio::pin!(stopped);
    loop {
        // SIGTERM (the provider destroying the VM) or SIGINT ends the wait;
        // during a turn they stop its agent as in any job.
        let next = tokio::select! {
            next = session.wait_for_turn(after) => next,
            name = &mut stopped => {
                crate::say!("delegate-guest: {name} while waiting for a turn; exiting");
                return;
            }
        };
        let Some(next) = next else { break };
        after = next.number;
        crate::say!("delegate-guest: turn {} (job {})", next.number, next.job_id);
        let client = match CallbackClient::new(
            &bootstrap.callback_url,
            &next.job_id,
            bootstrap.token.clone(),
            CallbackOptions::default(),
        ) {
            Ok(c) => c,
            Err(e) => {
                crate::say!("delegate-guest: turn {}: {e}", next.number);
                continue;
            }
        };
        let spec = match client.fetch_spec().await {
            Ok(s) => s,
            Err(e) => {
                // The host ends the turn when its lease runs out.
                crate::say!("delegate-guest: cannot fetch turn {}: {e}", next.number);
                continue;
            }
        };
        let mut opts = knobs.options_for_spec(&spec);
        // Each turn's logs, spool and patches beside the first turn's.
        opts.log_dir = logs
            .as_ref()
            .map(|l| l.join(format!("turn-{}", next.number)));
        opts.turn = Some(TurnContext {
            number: next.number,
            resume_session_id: spec.turn.as_ref().and_then(|t| t.resume_session_id.clone()),
            repo: repo.clone(),
            previous_tree: tree.clone(),
        });
        let manifest = crate::egress::apply(
            spec.manifest,
            spec.egress.as_ref(),
            route.gateway.as_deref(),
            route.trust.as_ref(),
            &next.job_id,
            &bootstrap.token,
        );
        let done = run(manifest, opts, Some(client)).await;
        if done.tree.is_some() {
            tree = done.tree;
        }
    }
    crate::say!("delegate-guest: no more turns; exiting");
}

/// Resolves with the signal's name on the first SIGTERM or SIGINT; never
/// when they cannot be listened for.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => std::future::pending().await,
    }
}
