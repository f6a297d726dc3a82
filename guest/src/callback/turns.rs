//! A persistent job's follow-up turns: `GET turns/next`, the long poll the
//! guest in a kept VM waits on between turns, and `PUT patch?against=previous`,
//! a turn's own change (see `delegate_proto::turn`).

use std::path::Path;
use std::time::Duration;

use delegate_proto::api::{MAX_CONTROL_WAIT_SECS, PatchAck};
use delegate_proto::turn::{self, NextTurn, NextTurnAction};
use reqwest::Method;

use super::CallbackError;
use super::backoff::Backoff;
use super::client::CallbackClient;
use super::http::{self, Failure};

/// A turn to run: its job id and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextTurnJob {
    /// The turn's job id.
    pub job_id: String,
    /// Its number.
    pub number: u32,
}

/// A `wait` sooner than this after asking for a longer one is odd (a host
/// shutting down): the next request waits a backoff delay, so the loop
/// cannot spin.
const EARLY_ANSWER: Duration = Duration::from_secs(1);
/// How long past the VM's time-to-live (as the host last said it) a guest
/// that cannot reach its host keeps asking before it exits on its own.
const PAST_TTL_GRACE_MS: u64 = 10 * 60 * 1000;
/// How long a guest that never heard how long its VM is kept keeps asking
/// a host it cannot reach.
const UNREACHABLE_WITHOUT_TTL: Duration = Duration::from_secs(2 * 60 * 60);

/// A `turns/next` answer is a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 4096;

impl CallbackClient {
    /// One `GET turns/next` for the session this client's job is the first
    /// job of: what follows turn `after`, held by the host for at most
    /// `wait`. One request; the caller decides about retrying.
    pub(crate) async fn next_turn(&self, after: u32, wait: Duration) -> Result<NextTurn, Failure> {
        const OP: &str = "GET turns/next";
        let wait = wait.min(Duration::from_secs(MAX_CONTROL_WAIT_SECS));
        let path = turn::next_turn_path(self.job_id(), after, wait.as_secs());
        let resp = self
            .endpoint
            .request(Method::GET, &path)
            .timeout(wait + self.opts.request_timeout)
            .send()
            .await
            .map_err(|e| Failure::from_reqwest(&e))?;
        http::read_json(OP, resp, MAX_ANSWER_BYTES).await
    }

    /// Waits for the turn after `after`, asking again and again (retrying
    /// with backoff while the host is unreachable, across a host restart).
    /// `None` when the host releases the VM or refuses the session's token
    /// for good: nothing more will come, and the guest exits.
    pub async fn wait_for_turn(&self, after: u32) -> Option<NextTurnJob> {
        let opts = self.opts.clone();
        let wait = opts
            .control_wait
            .min(Duration::from_secs(MAX_CONTROL_WAIT_SECS));
        let mut backoff = Backoff::new(opts.events_retry_initial, opts.events_retry_max);
        let mut kept_until: Option<u64> = None;
        let mut last_answer = std::time::Instant::now();
        loop {
            let asked = std::time::Instant::now();
            let answer = self.next_turn(after, wait).await;
            if answer.is_ok() {
                last_answer = std::time::Instant::now();
            }
            if let Ok(NextTurn {
                kept_until_ms: Some(t),
                ..
            }) = &answer
            {
                kept_until = Some(*t);
            }
            let delay = match answer {
                Ok(NextTurn {
                    action: NextTurnAction::Run,
                    job_id: Some(job_id),
                    turn: Some(number),
                    ..
                }) => return Some(NextTurnJob { job_id, number }),
                Ok(NextTurn {
                    action: NextTurnAction::Release,
                    ..
                }) => {
                    tracing::info!("the host released this VM");
                    return None;
                }
                Ok(_) if asked.elapsed() < EARLY_ANSWER && wait >= EARLY_ANSWER => {
                    backoff.next_delay()
                }
                Ok(_) => {
                    backoff.reset();
                    continue;
                }
                Err(Failure::Transient { why, .. }) => {
                    // No host has destroyed this VM in time (none runs):
                    // end it from inside rather than wait forever.
                    let past_ttl = match kept_until {
                        Some(t) => {
                            delegate_proto::clock::now_ms() > t.saturating_add(PAST_TTL_GRACE_MS)
                        }
                        None => last_answer.elapsed() > UNREACHABLE_WITHOUT_TTL,
                    };
                    if past_ttl {
                        tracing::warn!(
                            "GET turns/next: {why}; the host is unreachable past this VM's \
                             time-to-live, so no turn can come"
                        );
                        return None;
                    }
                    let delay = backoff.next_delay();
                    tracing::debug!(retry_in = ?delay, "GET turns/next: {why}");
                    delay
                }
                Err(Failure::Fatal(e)) => {
                    tracing::info!("GET turns/next: {e}; no more turns");
                    return None;
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// `PUT patch?against=previous`: a follow-up turn's own patch.
    pub async fn upload_turn_patch(&self, patch: &Path) -> Result<PatchAck, CallbackError> {
        let path = turn::turn_patch_path(self.job_id());
        self.put_file("PUT patch?against=previous", &path, patch, "text/x-diff")
            .await
    }
}
