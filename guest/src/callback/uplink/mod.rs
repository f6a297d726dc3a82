//! The event uplink: a background task that batches the job's events, posts
//! them, retries while the host is down and buffers within bounds.

mod item;
mod queue;
mod spool;
mod task;

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use delegate_proto::Event;
use tokio::sync::{mpsc, watch};

use super::control::ControlPoll;
use super::{CallbackClient, CallbackError};

/// Commands from the handle to the task.
#[derive(Debug)]
enum Command {
    Event(Event),
    Flush { deadline: Instant },
}

/// Handle of the running uplink. Create it with
/// [`CallbackClient::start_uplink`]; end it with [`Uplink::flush`].
///
/// Dropping it without `flush` stops the task at once: whatever was not
/// delivered is lost (and the spool files are removed).
///
/// Beside it runs the control long poll, which sets [`Uplink::cancelled`]
/// the moment the host says stop; it ends with the uplink.
#[derive(Debug)]
pub struct Uplink {
    tx: mpsc::UnboundedSender<Command>,
    cancelled: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<FlushReport>,
    control: ControlPoll,
}

/// A cloneable sender into an [`Uplink`], for reporters on several tasks.
#[derive(Debug, Clone)]
pub struct UplinkSender {
    tx: mpsc::UnboundedSender<Command>,
}

impl UplinkSender {
    /// Same as [`Uplink::send`].
    pub fn send(&self, event: Event) {
        send(&self.tx, event);
    }
}

fn send(tx: &mpsc::UnboundedSender<Command>, event: Event) {
    if let Err(mpsc::error::SendError(Command::Event(event))) = tx.send(Command::Event(event)) {
        tracing::error!(seq = event.seq, "event uplink has stopped; event not sent");
    }
}

impl Uplink {
    pub(crate) fn start(client: CallbackClient, spool_dir: PathBuf) -> Uplink {
        let (tx, rx) = mpsc::unbounded_channel();
        let (cancel_tx, cancelled) = watch::channel(false);
        let control = ControlPoll::start(client.clone(), cancel_tx.clone());
        let task = tokio::spawn(task::run(client, spool_dir, rx, cancel_tx));
        Uplink {
            tx,
            cancelled,
            task,
            control,
        }
    }

    /// Queues an event; never blocks and never fails. Events must come with
    /// strictly growing sequence numbers (1, 2, 3, ...); one whose seq does
    /// not grow is refused with an error log and counted in
    /// [`FlushReport::out_of_order`].
    pub fn send(&self, event: Event) {
        send(&self.tx, event);
    }

    /// A cloneable sender into this uplink.
    pub fn sender(&self) -> UplinkSender {
        UplinkSender {
            tx: self.tx.clone(),
        }
    }

    /// Turns true once the control long poll or an `EventsAck` says stop
    /// (cancel), or once the host
    /// refuses events for good because the job is final there or the token
    /// is no longer valid (nothing the job does can be reported any more).
    pub fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancelled.clone()
    }

    /// Delivers everything queued (spool included), waiting at most `within`,
    /// then stops the task and removes the spool files. Call it before
    /// [`CallbackClient::post_result`]: the host refuses events once the
    /// result is stored.
    pub async fn flush(self, within: Duration) -> FlushReport {
        let deadline = Instant::now() + within;
        // The job has ended: there is nothing left to stop.
        drop(self.control);
        // If the task is gone the join below says why.
        let _ = self.tx.send(Command::Flush { deadline });
        drop(self.tx);
        match self.task.await {
            Ok(report) => report,
            Err(e) => FlushReport {
                delivered_up_to: 0,
                undelivered: 0,
                dropped: Vec::new(),
                cancelled: *self.cancelled.borrow(),
                stopped: Some(CallbackError::Protocol {
                    op: "POST events",
                    detail: format!("the uplink task failed: {e}"),
                }),
                out_of_order: 0,
                timed_out: false,
            },
        }
    }
}

/// What the uplink achieved by the time it stopped.
#[derive(Debug)]
pub struct FlushReport {
    /// Every event with a seq up to this one reached the host (0: none).
    pub delivered_up_to: u64,
    /// Events still queued when the uplink stopped (deadline passed or the
    /// host refused further events).
    pub undelivered: u64,
    /// Seq ranges the uplink dropped to stay within its memory and spool
    /// bounds (or because the host refused an event as too large). Each was
    /// sent to the host as an `EventKind::Dropped` event when it could be.
    pub dropped: Vec<RangeInclusive<u64>>,
    /// The host said cancel (or refused the job's events for good).
    pub cancelled: bool,
    /// Why the uplink stopped before everything was delivered, when the
    /// host refused it (401/403, 404, 409/410, a rejected batch).
    pub stopped: Option<CallbackError>,
    /// Events refused because their seq did not grow.
    pub out_of_order: u64,
    /// The flush deadline passed with events still undelivered.
    pub timed_out: bool,
}

impl FlushReport {
    /// True when every event reached the host (some may have been dropped
    /// and reported as dropped ranges).
    pub fn complete(&self) -> bool {
        self.undelivered == 0 && self.stopped.is_none() && self.out_of_order == 0
    }
}
