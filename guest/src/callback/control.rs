//! The control long poll (`GET control`), run beside the event uplink: the
//! host holds it until the job must stop (cancelled, timed out, its lease
//! lost) and answers `stop` at once, so a quiet job hears a cancel in well
//! under a second instead of with the answer to its next heartbeat. A
//! `continue` (the wait passed) is followed by the next request at once.
//!
//! `stop` (and a host that refuses the job's token for good) sets the same
//! flag as `EventsAck::cancel`, which stays the fallback: a host without
//! this route (404) is asked no more.

use std::time::{Duration, Instant};

use delegate_proto::api::{self, ControlAction, ControlAnswer};
use reqwest::Method;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::backoff::Backoff;
use super::http::{self, Failure};
use super::{CallbackClient, CallbackError};

const OP: &str = "GET control";
/// A control answer is a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 4096;
/// A `continue` sooner than this after asking for a longer wait is odd (a
/// host shutting down, or a second poller of the same job): the next
/// request waits a backoff delay so the loop cannot spin.
const EARLY_ANSWER: Duration = Duration::from_secs(1);

/// The running poller; ended when dropped.
#[derive(Debug)]
pub(crate) struct ControlPoll {
    task: JoinHandle<()>,
}

impl ControlPoll {
    /// Starts polling on the current runtime; `stop` is set to true when
    /// the host says the job must stop.
    pub(crate) fn start(client: CallbackClient, stop: watch::Sender<bool>) -> ControlPoll {
        ControlPoll {
            task: tokio::spawn(run(client, stop)),
        }
    }
}

impl Drop for ControlPoll {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(client: CallbackClient, stop: watch::Sender<bool>) {
    let opts = client.opts.clone();
    let wait = opts
        .control_wait
        .min(Duration::from_secs(api::MAX_CONTROL_WAIT_SECS));
    let mut backoff = Backoff::new(opts.events_retry_initial, opts.events_retry_max);
    let mut stopped = stop.subscribe();
    let mut failures = 0u32;
    loop {
        let asked = Instant::now();
        let outcome = tokio::select! {
            outcome = ask(&client, wait) => outcome,
            // Stopped by other means (an event ack): nothing left to hear.
            _ = stopped.wait_for(|s| *s) => return,
        };
        let delay = match outcome {
            Ok(ControlAnswer {
                action: ControlAction::Stop,
                state,
            }) => {
                tracing::info!(%state, "the host says stop");
                stop.send_replace(true);
                return;
            }
            Ok(ControlAnswer {
                action: ControlAction::Continue,
                ..
            }) => {
                failures = 0;
                if asked.elapsed() < EARLY_ANSWER && wait >= EARLY_ANSWER {
                    Some(backoff.next_delay())
                } else {
                    backoff.reset();
                    None
                }
            }
            Err(Failure::Transient { why, .. }) => {
                failures += 1;
                let delay = backoff.next_delay();
                if failures == 1 {
                    tracing::warn!(retry_in = ?delay, "{OP}: {why}");
                } else {
                    tracing::debug!(failures, retry_in = ?delay, "{OP}: {why}");
                }
                Some(delay)
            }
            Err(Failure::Fatal(CallbackError::NotFound { .. })) => {
                tracing::info!(
                    "{OP}: the host has no control route; cancels arrive with event acks"
                );
                return;
            }
            Err(Failure::Fatal(e)) => {
                if matches!(
                    e,
                    CallbackError::Unauthorized { .. } | CallbackError::JobFinal { .. }
                ) {
                    // The host takes nothing more from this job, as the
                    // uplink does on the same answer.
                    stop.send_replace(true);
                } else {
                    tracing::warn!("{OP}: {e}; cancels arrive with event acks");
                }
                return;
            }
        };
        if let Some(delay) = delay {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }
}

/// One request, held by the host for at most `wait`.
async fn ask(client: &CallbackClient, wait: Duration) -> Result<ControlAnswer, Failure> {
    let path = api::control_path(client.job_id(), wait.as_secs());
    let resp = client
        .endpoint
        .request(Method::GET, &path)
        .timeout(wait + client.opts.request_timeout)
        .send()
        .await
        .map_err(|e| Failure::from_reqwest(&e))?;
    http::read_json(OP, resp, MAX_ANSWER_BYTES).await
}
