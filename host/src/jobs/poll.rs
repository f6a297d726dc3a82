//! Change notices for a manager without an engine (a stdio session while
//! another process owns the data directory). Its engine, elsewhere, never
//! tells this process anything; the store is the one channel. So while
//! someone here listens for changes, this task reads the live jobs every
//! [`POLL`] and turns what it sees change into the same notices the engine
//! sends: MCP progress and resource subscriptions then work alike in both.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use delegate_proto::{JobState, Phase};

use super::change::JobChangeKind;
use super::state::Shared;
use crate::model::{JobRecord, LogSelector};
use crate::store::{Store, StoreError};

/// How often the store is read while someone listens.
const POLL: Duration = Duration::from_millis(300);

/// What of a job its notices are about.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    state: JobState,
    phase: Option<Phase>,
    progress: Option<f64>,
    message: Option<String>,
    log_bytes: u64,
    artifacts: usize,
    has_result: bool,
}

impl Seen {
    fn of(rec: &JobRecord, log_bytes: u64) -> Seen {
        Seen {
            state: rec.state,
            phase: rec.phase,
            progress: rec.progress,
            message: rec.message.clone(),
            log_bytes,
            artifacts: rec.artifacts.len(),
            has_result: rec.result.is_some(),
        }
    }

    /// The notices that lead from `self` to `now`.
    fn changes(&self, now: &Seen) -> Vec<JobChangeKind> {
        let mut kinds = Vec::new();
        if self.state != now.state {
            kinds.push(JobChangeKind::State);
        }
        if (self.phase, self.progress, &self.message) != (now.phase, now.progress, &now.message) {
            kinds.push(JobChangeKind::Progress);
        }
        if self.log_bytes != now.log_bytes {
            kinds.push(JobChangeKind::Log);
        }
        if self.artifacts != now.artifacts {
            kinds.push(JobChangeKind::Artifacts);
        }
        if self.has_result != now.has_result {
            kinds.push(JobChangeKind::Result);
        }
        kinds
    }
}

/// Starts the poller for `shared` on the current runtime (once per
/// manager; nothing without a runtime). It ends when the manager is gone.
pub(super) fn start(shared: &Arc<Shared>) {
    if shared.poller_started() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(run(Arc::downgrade(shared)));
        }
        Err(_) => tracing::debug!("no runtime: change notices without an engine are off"),
    }
}

async fn run(shared: Weak<Shared>) {
    // The jobs seen live at the last look; a job leaves once seen final.
    let mut seen: HashMap<String, Seen> = HashMap::new();
    loop {
        tokio::time::sleep(POLL).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !shared.has_listeners() {
            // Nobody to tell: start afresh when someone listens again.
            seen.clear();
            continue;
        }
        let known: Vec<String> = seen.keys().cloned().collect();
        let looked = shared.store.run(move |store| look(store, known)).await;
        let now = match looked {
            Ok(now) => now,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the store for change notices");
                continue;
            }
        };
        let first_look = seen.is_empty();
        for (id, after) in &now {
            match seen.get(id) {
                Some(before) => {
                    for kind in before.changes(after) {
                        shared.notify(id, kind);
                    }
                }
                // A job another process submitted since the last look.
                None if !first_look => shared.notify(id, JobChangeKind::State),
                None => {}
            }
        }
        seen = now
            .into_iter()
            .filter(|(_, s)| !s.state.is_final())
            .collect();
    }
}

/// The live jobs, and the `known` ones whatever their state now (to see
/// them end).
fn look(store: &Store, known: Vec<String>) -> Result<HashMap<String, Seen>, StoreError> {
    let mut ids =
        store.ids_in_states(&[JobState::Pending, JobState::Provisioning, JobState::Running])?;
    for id in known {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut now = HashMap::with_capacity(ids.len());
    for id in ids {
        let rec = match store.get_job(&id) {
            Ok(rec) => rec,
            // Pruned since: nothing more to say about it.
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let [log] = store.read_log_tails(&id, [LogSelector::Combined], 1)?;
        let log_bytes = log.start + log.data.len() as u64;
        now.insert(id, Seen::of(&rec, log_bytes));
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: JobState) -> Seen {
        Seen {
            state,
            phase: None,
            progress: None,
            message: None,
            log_bytes: 0,
            artifacts: 0,
            has_result: false,
        }
    }

    #[test]
    fn each_difference_is_its_notice() {
        let a = seen(JobState::Running);
        assert!(a.changes(&a.clone()).is_empty());
        let mut b = a.clone();
        b.log_bytes = 10;
        b.message = Some("tool: Bash".into());
        assert_eq!(a.changes(&b), [JobChangeKind::Progress, JobChangeKind::Log]);
        let mut c = b.clone();
        c.state = JobState::Success;
        c.has_result = true;
        c.artifacts = 2;
        assert_eq!(
            b.changes(&c),
            [
                JobChangeKind::State,
                JobChangeKind::Artifacts,
                JobChangeKind::Result
            ]
        );
    }
}
