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
    first: Finished,
) {
    let repo = first.repo;
    let mut tree = first.tree;
    let logs = first.log_dir;
    let mut after = 1;
    crate::say!("delegate-guest: persistent job; waiting for follow-up turns");
    while let Some(next) = session.wait_for_turn(after).await {
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
