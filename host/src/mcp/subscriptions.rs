//! `notifications/resources/updated` for subscribers, in both revisions.
//!
//! Older revisions subscribe per session with `resources/subscribe`; the
//! session's [`LegacySubscriptions`] forwards the manager's change notices
//! to its peer on a task that lives as long as the session's handler.
//! 2026-07-28 subscribes with `subscriptions/listen`: [`listen`] runs for
//! the duration of that request. Both use [`affected`] to decide which URIs
//! a change touches, and coalesce bursts (a streaming job appends to its log
//! many times a second) into one notification per URI per window.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::service::{Peer, RoleServer, SubscriptionContext};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::jobs::{JobChange, JobChangeKind, JobManager};

use crate::views::resources::{self, ResourceRef};

/// Changes arriving within this window after the first are sent together.
const COALESCE: Duration = Duration::from_millis(200);

/// The URIs among `subscribed` that `change` makes stale.
pub fn affected<'a>(
    change: &JobChange,
    subscribed: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    subscribed
        .into_iter()
        .filter(|uri| match resources::parse(uri) {
            Ok(ResourceRef::Log { job_id }) => {
                job_id == change.job_id
                    && matches!(
                        change.kind,
                        JobChangeKind::Log | JobChangeKind::State | JobChangeKind::Result
                    )
            }
            Ok(ResourceRef::Artifact { job_id, .. } | ResourceRef::Patch { job_id, .. }) => {
                job_id == change.job_id
                    && matches!(change.kind, JobChangeKind::Artifacts | JobChangeKind::State)
            }
            Err(_) => false,
        })
        .cloned()
        .collect()
}

/// Waits for the next batch of stale URIs: the first change that touches
/// one, plus whatever else arrives within [`COALESCE`]. `None` when the
/// manager is gone. A lagging receiver marks every subscribed URI stale,
/// since it cannot know which changes it missed.
async fn next_batch(
    rx: &mut broadcast::Receiver<JobChange>,
    subscribed: &(dyn Fn() -> Vec<String> + Sync),
) -> Option<BTreeSet<String>> {
    let mut batch = BTreeSet::new();
    loop {
        let received = if batch.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(COALESCE, rx.recv()).await {
                Ok(r) => r,
                Err(_) => return Some(batch),
            }
        };
        match received {
            Ok(change) => batch.extend(affected(&change, &subscribed())),
            Err(RecvError::Lagged(_)) => batch.extend(subscribed()),
            Err(RecvError::Closed) => return (!batch.is_empty()).then_some(batch),
        }
    }
}

/// The URIs a session subscribed to with `resources/subscribe`, and the
/// task that notifies it. Dropping it (the session ended) stops the task.
#[derive(Default)]
pub struct LegacySubscriptions {
    uris: Arc<Mutex<HashSet<String>>>,
    forwarder: Mutex<Option<DropGuard>>,
}

impl LegacySubscriptions {
    /// Adds a URI; starts notifying `peer` on the first subscription.
    pub fn subscribe(&self, jobs: &JobManager, peer: Peer<RoleServer>, uri: String) {
        lock(&self.uris).insert(uri);
        let mut forwarder = lock(&self.forwarder);
        if forwarder.is_none() {
            let stop = CancellationToken::new();
            tokio::spawn(forward(
                jobs.subscribe(),
                peer,
                self.uris.clone(),
                stop.clone(),
            ));
            *forwarder = Some(stop.drop_guard());
        }
    }

    /// Removes a URI; unknown URIs are ignored.
    pub fn unsubscribe(&self, uri: &str) {
        lock(&self.uris).remove(uri);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The sets hold plain data; a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn forward(
    mut rx: broadcast::Receiver<JobChange>,
    peer: Peer<RoleServer>,
    uris: Arc<Mutex<HashSet<String>>>,
    stop: CancellationToken,
) {
    let subscribed = || lock(&uris).iter().cloned().collect::<Vec<_>>();
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            b = next_batch(&mut rx, &subscribed) => match b {
                Some(b) => b,
                None => return,
            },
        };
        for uri in batch {
            // Unsubscribed while the batch gathered: skip.
            if !lock(&uris).contains(&uri) {
                continue;
            }
            let param = ResourceUpdatedNotificationParam::new(uri);
            if let Err(e) = peer.notify_resource_updated(param).await {
                tracing::debug!(error = %e, "resource update not delivered; session gone");
                return;
            }
        }
    }
}

/// Serves one `subscriptions/listen` request until the client cancels it or
/// the server shuts down.
pub async fn listen(
    jobs: &JobManager,
    context: SubscriptionContext,
) -> Result<(), rmcp::ErrorData> {
    let uris: Vec<String> = context
        .accepted()
        .resource_subscriptions
        .clone()
        .unwrap_or_default();
    let subscribed = || uris.clone();
    let mut rx = jobs.subscribe();
    loop {
        let batch = tokio::select! {
            _ = context.cancelled() => return Ok(()),
            b = next_batch(&mut rx, &subscribed) => match b {
                Some(b) => b,
                None => return Ok(()),
            },
        };
        for uri in batch {
            if let Err(e) = context.sink().notify_resource_updated(uri).await {
                tracing::debug!(error = %e, "subscription stream closed");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0a0b0c0d-0000-4000-8000-000000000001";

    fn change(kind: JobChangeKind) -> JobChange {
        JobChange {
            job_id: ID.to_string(),
            kind,
        }
    }

    #[test]
    fn changes_touch_the_right_uris() {
        let log = resources::log_uri(ID);
        let art = resources::artifact_uri(ID, "out/a.txt");
        let other = resources::log_uri("0a0b0c0d-0000-4000-8000-000000000002");
        let subs = vec![log.clone(), art.clone(), other];
        assert_eq!(
            affected(&change(JobChangeKind::Log), &subs),
            vec![log.clone()]
        );
        assert_eq!(
            affected(&change(JobChangeKind::Artifacts), &subs),
            vec![art.clone()]
        );
        assert_eq!(
            affected(&change(JobChangeKind::State), &subs),
            vec![log, art]
        );
        assert!(affected(&change(JobChangeKind::Progress), &subs).is_empty());
    }

    #[tokio::test]
    async fn bursts_coalesce_into_one_batch() {
        let (tx, mut rx) = broadcast::channel(16);
        let log = resources::log_uri(ID);
        let subs = vec![log.clone()];
        for _ in 0..5 {
            tx.send(change(JobChangeKind::Log)).unwrap();
        }
        let batch = next_batch(&mut rx, &|| subs.clone()).await.unwrap();
        assert_eq!(batch.into_iter().collect::<Vec<_>>(), vec![log]);
        drop(tx);
        assert!(next_batch(&mut rx, &|| subs.clone()).await.is_none());
    }
}
