//! The uplink's loop: take events from the handle, cut batches, keep one
//! request in flight, apply acknowledgements and back off on failures.
//!
//! One request at a time keeps the host's view in order: a batch is cut from
//! the front of the queue, so after a failure the same events go again and
//! the host's de-duplication by seq makes that harmless.

use std::path::PathBuf;
use std::sync::Arc;

use delegate_proto::EventsAck;
use delegate_proto::api::{self, MAX_EVENTS_BODY, MAX_EVENTS_PER_BATCH};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::queue::{Batch, Queue, REASON_TOO_LARGE};
use super::{Command, FlushReport};
use crate::callback::backoff::Backoff;
use crate::callback::http::{self, Endpoint, Failure};
use crate::callback::{CallbackClient, CallbackError};

const OP: &str = "POST events";
/// An `EventsAck` is tiny; anything larger is not one.
const MAX_ACK_BYTES: usize = 64 * 1024;
/// Batches never shrink below this after a 413.
const MIN_BODY_LIMIT: usize = 16 * 1024;

struct InFlight {
    handle: JoinHandle<Result<EventsAck, Failure>>,
    first_seq: u64,
    last_seq: u64,
    count: usize,
    bytes: usize,
}

struct State {
    client: CallbackClient,
    queue: Queue,
    cancel: watch::Sender<bool>,
    backoff: Backoff,
    /// After a failure: no attempt before this.
    retry_at: Option<Instant>,
    /// The oldest unsent event waits no later than this.
    linger_until: Option<Instant>,
    flush_deadline: Option<Instant>,
    /// Set when the host refused events for good.
    stopped: Option<CallbackError>,
    /// Lowered when the host answers 413.
    body_limit: usize,
    events_limit: usize,
    failures: u32,
    /// The host needed a ranged Dropped event split (warned once).
    split_warned: bool,
    out_of_order: u64,
    /// Events that arrived after the uplink stopped.
    discarded: u64,
}

pub(super) async fn run(
    client: CallbackClient,
    spool_dir: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Command>,
    cancel: watch::Sender<bool>,
) -> FlushReport {
    let opts = client.opts.clone();
    let mut st = State {
        queue: Queue::new(spool_dir, opts.memory_limit, opts.spool_limit),
        client,
        cancel,
        backoff: Backoff::new(opts.events_retry_initial, opts.events_retry_max),
        retry_at: None,
        linger_until: None,
        flush_deadline: None,
        stopped: None,
        body_limit: MAX_EVENTS_BODY,
        events_limit: opts.batch_max_events.clamp(1, MAX_EVENTS_PER_BATCH),
        failures: 0,
        split_warned: false,
        out_of_order: 0,
        discarded: 0,
    };
    let mut in_flight: Option<InFlight> = None;
    let mut rx_open = true;
    loop {
        let now = Instant::now();
        if in_flight.is_none() && st.ready(now) {
            in_flight = st.start_batch();
        }
        if let Some(deadline) = st.flush_deadline {
            let idle = in_flight.is_none() && (st.queue.is_empty() || st.stopped.is_some());
            if idle || now >= deadline {
                break;
            }
        }
        let wake = st.next_wake(in_flight.is_some());
        tokio::select! {
            joined = async { in_flight.as_mut().map(|f| &mut f.handle).unwrap().await },
                if in_flight.is_some() =>
            {
                if let Some(sent) = in_flight.take() {
                    let outcome = joined.unwrap_or_else(|e| {
                        Err(Failure::Transient { why: format!("request task failed: {e}"), maybe_landed: true })
                    });
                    st.finish_batch(&sent, outcome);
                }
            }
            cmd = rx.recv(), if rx_open => match cmd {
                Some(Command::Event(event)) => st.push(event),
                Some(Command::Flush { deadline }) => st.flush_deadline = Some(deadline.into()),
                None if st.flush_deadline.is_some() => rx_open = false,
                // The handle was dropped without a flush.
                None => break,
            },
            () = sleep_until(wake), if wake.is_some() => {}
        }
    }
    if let Some(f) = in_flight.take() {
        f.handle.abort();
    }
    st.finish()
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl State {
    fn push(&mut self, event: delegate_proto::Event) {
        if self.stopped.is_some() {
            self.discarded += 1;
            return;
        }
        let seq = event.seq;
        if !self.queue.push(&event) {
            self.out_of_order += 1;
            tracing::error!(
                seq,
                "event refused: its seq does not grow (events must be numbered 1, 2, 3, ...)"
            );
            return;
        }
        if self.linger_until.is_none() {
            self.linger_until = Some(Instant::now() + self.client.opts.batch_interval);
        }
    }

    fn ready(&self, now: Instant) -> bool {
        if self.stopped.is_some() || self.queue.is_empty() {
            return false;
        }
        if let Some(at) = self.retry_at {
            return now >= at;
        }
        self.flush_deadline.is_some()
            || self.queue.len() >= self.events_limit
            || self.linger_until.is_some_and(|at| now >= at)
    }

    /// When the loop must look again without a command or an answer: the
    /// timer that can make [`State::ready`] true, and the flush deadline.
    /// Timers that cannot start anything (a request is in flight, the uplink
    /// stopped) are left out, or a past one would make the loop spin.
    fn next_wake(&self, in_flight: bool) -> Option<Instant> {
        let can_send = !in_flight && self.stopped.is_none() && !self.queue.is_empty();
        let send_timer = if can_send {
            self.retry_at.or(self.linger_until)
        } else {
            None
        };
        send_timer.into_iter().chain(self.flush_deadline).min()
    }

    fn start_batch(&mut self) -> Option<InFlight> {
        let Batch {
            body,
            first_seq,
            last_seq,
            count,
        } = self.queue.next_batch(self.events_limit, self.body_limit)?;
        tracing::trace!(first_seq, last_seq, count, bytes = body.len(), "{OP}");
        self.linger_until = None;
        self.retry_at = None;
        let bytes = body.len();
        let endpoint: Arc<Endpoint> = self.client.endpoint.clone();
        let timeout = self.client.opts.request_timeout;
        let handle = tokio::spawn(async move {
            let path = api::events_path(&endpoint.job_id);
            let resp = endpoint
                .request(Method::POST, &path)
                .header(CONTENT_TYPE, "application/json")
                .timeout(timeout)
                .body(body)
                .send()
                .await
                .map_err(|e| Failure::from_reqwest(&e))?;
            http::read_json::<EventsAck>(OP, resp, MAX_ACK_BYTES).await
        });
        Some(InFlight {
            handle,
            first_seq,
            last_seq,
            count,
            bytes,
        })
    }

    fn finish_batch(&mut self, sent: &InFlight, outcome: Result<EventsAck, Failure>) {
        let now = Instant::now();
        match outcome {
            Ok(ack) => {
                if self.failures > 0 {
                    tracing::info!(
                        failures = self.failures,
                        "host reachable again; events flowing"
                    );
                }
                self.failures = 0;
                if ack.cancel && !*self.cancel.borrow() {
                    tracing::info!("the host cancelled the job");
                    self.cancel.send_replace(true);
                }
                // The host's highest_seq is the truth: a host that keeps only
                // gap-free seqs stops before a gap and holds nothing past it.
                self.queue.delivered(ack.highest_seq);
                if ack.highest_seq < sent.first_seq {
                    self.stalled(ack.highest_seq, now);
                } else {
                    if ack.highest_seq < sent.last_seq {
                        tracing::debug!(
                            highest = ack.highest_seq,
                            last = sent.last_seq,
                            "the host took part of the batch; the rest goes again"
                        );
                    }
                    self.backoff.reset();
                    if !self.queue.is_empty() {
                        // What queued up during the request has waited enough.
                        self.linger_until = Some(now);
                    }
                }
            }
            Err(Failure::Transient { why, .. }) => {
                self.failures += 1;
                let delay = self.backoff.next_delay();
                self.retry_at = Some(now + delay);
                if self.failures == 1 {
                    tracing::warn!(retry_in = ?delay, queued = self.queue.len(), "{OP}: {why}");
                } else {
                    tracing::debug!(failures = self.failures, retry_in = ?delay, "{OP}: {why}");
                }
            }
            Err(Failure::Fatal(CallbackError::TooLarge { message, .. })) => {
                // Smaller batches (or a marker) go at once.
                self.linger_until = Some(now);
                if sent.count > 1 {
                    self.events_limit = (sent.count / 2).max(1);
                    self.body_limit = (sent.bytes / 2).max(MIN_BODY_LIMIT);
                    tracing::warn!(
                        events = self.events_limit,
                        bytes = self.body_limit,
                        "the host refused a batch as too large ({message}); sending smaller batches"
                    );
                } else if !self
                    .queue
                    .replace_front_with_marker(&format!("{REASON_TOO_LARGE}: {message}"))
                {
                    self.stop(CallbackError::TooLarge { op: OP, message });
                }
            }
            Err(Failure::Fatal(err)) => {
                if matches!(
                    err,
                    CallbackError::Unauthorized { .. }
                        | CallbackError::NotFound { .. }
                        | CallbackError::JobFinal { .. }
                ) {
                    // The host will take nothing more from this job: there is
                    // no point in running it on.
                    self.cancel.send_replace(true);
                }
                self.stop(err);
            }
        }
    }

    /// The host took a batch but none of its events. It holds only gap-free
    /// seqs and our front does not continue them: a ranged `Dropped` event
    /// (which such a host reads as a gap) or seqs never queued. Make the
    /// front one event per seq and go again; if there is nothing to split,
    /// back off as after a failure so the loop cannot spin.
    fn stalled(&mut self, highest: u64, now: Instant) {
        if self.queue.fill_gap(highest, self.events_limit) {
            if !self.split_warned {
                self.split_warned = true;
                tracing::warn!(
                    highest,
                    "the host stopped before a gap or a ranged Dropped event; \
                     sending one Dropped event per seq"
                );
            }
            self.linger_until = Some(now);
            return;
        }
        self.failures += 1;
        let delay = self.backoff.next_delay();
        self.retry_at = Some(now + delay);
        tracing::error!(
            highest,
            retry_in = ?delay,
            "{OP}: the host answered 2xx but took none of the batch"
        );
    }

    fn stop(&mut self, err: CallbackError) {
        tracing::error!(queued = self.queue.len(), "event uplink stopped: {err}");
        self.stopped = Some(err);
    }

    fn finish(mut self) -> FlushReport {
        let undelivered = self.queue.len() as u64 + self.discarded;
        self.queue.close();
        let timed_out = self.stopped.is_none() && undelivered > 0;
        if undelivered > 0 {
            tracing::warn!(
                undelivered,
                delivered_up_to = self.queue.acked(),
                "event uplink stopped with events undelivered"
            );
        }
        FlushReport {
            delivered_up_to: self.queue.acked(),
            undelivered,
            dropped: self.queue.dropped_ranges(),
            cancelled: *self.cancel.borrow(),
            stopped: self.stopped,
            out_of_order: self.out_of_order,
            timed_out,
        }
    }
}
