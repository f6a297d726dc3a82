//! Progress notifications for `wait_for_job`.
//!
//! The job manager calls back synchronously whenever the record changes; the
//! reporter turns each call into a `notifications/progress` message on a
//! task of its own, so a slow client never holds up the manager. While
//! nothing changes it repeats the last state every few seconds, so the
//! client sees the wait is alive. `progress` counts notifications, which
//! keeps it strictly increasing as the spec asks even when a job's own
//! percentage stands still or is unknown. [`ProgressReporter::finish`]
//! flushes what is queued before the tool answers, so no progress arrives
//! after the result it belongs to.

use std::time::Duration;

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RoleServer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::JobRecord;

/// How often an unchanged job is reported again while waiting.
const REPEAT_EVERY: Duration = Duration::from_secs(5);

/// How long [`ProgressReporter::finish`] waits for queued notifications.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Sends progress for one `wait_for_job` call. Dropping it stops the
/// sender once the queue is empty.
pub struct ProgressReporter {
    tx: mpsc::UnboundedSender<String>,
    task: JoinHandle<()>,
}

impl ProgressReporter {
    /// Starts a reporter for the request that carried `token`.
    pub fn start(peer: Peer<RoleServer>, token: ProgressToken) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(peer, token, rx));
        ProgressReporter { tx, task }
    }

    /// Sends what is queued, then stops.
    pub async fn finish(self) {
        let ProgressReporter { tx, task } = self;
        drop(tx);
        if tokio::time::timeout(FLUSH_LIMIT, task).await.is_err() {
            tracing::debug!("progress notifications not flushed in time");
        }
    }

    /// Reports the job as it is now.
    pub fn report(&self, record: &JobRecord) {
        // A closed channel means the sender task ended (client gone); the
        // wait itself goes on and answers normally.
        let _ = self.tx.send(describe(record));
    }
}

async fn run(
    peer: Peer<RoleServer>,
    token: ProgressToken,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    let mut count = 0.0;
    let mut last: Option<String> = None;
    loop {
        let message = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = tokio::time::sleep(REPEAT_EVERY), if last.is_some() => {
                last.clone().unwrap_or_default()
            }
        };
        count += 1.0;
        let param = ProgressNotificationParam::new(token.clone(), count).with_message(&message);
        last = Some(message);
        if let Err(e) = peer.notify_progress(param).await {
            tracing::debug!(error = %e, "progress notification not delivered; stopping");
            return;
        }
    }
}

/// One line for people: state, phase, percent, message.
pub fn describe(record: &JobRecord) -> String {
    let mut out = format!("job {}: {}", record.id, record.state);
    if let Some(phase) = record.phase {
        out.push_str(&format!(", phase {}", phase.as_str()));
    }
    if let Some(p) = record.progress {
        out.push_str(&format!(", {p:.0}%"));
    }
    if let Some(m) = record.message.as_deref().filter(|m| !m.is_empty()) {
        out.push_str(": ");
        out.push_str(m);
    }
    if let Some(e) = record.error.as_deref() {
        out.push_str(" (");
        out.push_str(e);
        out.push(')');
    }
    out
}
