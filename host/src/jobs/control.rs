//! The bookkeeping of guests' control long polls (`GET control`): at most
//! one held request per job, at most [`MAX_CONTROL_WAITERS`] in all, and a
//! way to end them all when the callback API shuts down.
//!
//! A guest whose connection broke asks again while the host may still hold
//! its old request, so a newer request for a job does not wait for a slot:
//! it ends the older one (which answers `continue` at once) and takes its
//! place. A job's token therefore never holds more than one request, and a
//! guest can never lock itself out.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// Most control requests held at once, all jobs together. Far above any
/// real number of live jobs (each holds at most one); it bounds what jobs
/// whose tokens are still valid could tie up.
pub const MAX_CONTROL_WAITERS: usize = 1024;

/// Too many control requests are held already.
#[derive(Debug, thiserror::Error)]
#[error("{held} control requests are held already (the most is {max}); ask again shortly")]
pub struct ControlFull {
    /// Requests held.
    pub held: usize,
    /// The cap.
    pub max: usize,
}

/// The held control requests, by job.
pub(super) struct ControlWaiters {
    held: Mutex<Held>,
    /// Cancelled when the callback API shuts down; every waiter's token is
    /// a child of it.
    closed: CancellationToken,
    max: usize,
}

#[derive(Default)]
struct Held {
    by_job: HashMap<String, Waiter>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    ended: CancellationToken,
}

impl ControlWaiters {
    pub(super) fn new(max: usize) -> Self {
        ControlWaiters {
            held: Mutex::new(Held::default()),
            closed: CancellationToken::new(),
            max,
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the job's slot, ending the request that held it. Refused when
    /// [`MAX_CONTROL_WAITERS`] other jobs hold one.
    pub(super) fn enter(&self, job_id: &str) -> Result<ControlSlot<'_>, ControlFull> {
        let mut held = self.held();
        if held.by_job.len() >= self.max && !held.by_job.contains_key(job_id) {
            return Err(ControlFull {
                held: held.by_job.len(),
                max: self.max,
            });
        }
        held.next_id += 1;
        let id = held.next_id;
        let ended = self.closed.child_token();
        let previous = held.by_job.insert(
            job_id.to_string(),
            Waiter {
                id,
                ended: ended.clone(),
            },
        );
        if let Some(previous) = previous {
            previous.ended.cancel();
        }
        Ok(ControlSlot {
            waiters: self,
            job_id: job_id.to_string(),
            id,
            ended,
        })
    }

    /// Ends every held request (they answer `continue`) and every later
    /// one at once: the callback API is shutting down and must not wait
    /// out long polls.
    pub(super) fn close(&self) {
        self.closed.cancel();
    }

    /// Requests held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held().by_job.len()
    }
}

/// One held control request; frees its job's slot when dropped (answered,
/// or the guest went away and the handler was dropped).
pub(super) struct ControlSlot<'a> {
    waiters: &'a ControlWaiters,
    job_id: String,
    id: u64,
    ended: CancellationToken,
}

impl ControlSlot<'_> {
    /// Resolves when a newer request for the job took the slot, or the
    /// callback API is shutting down.
    pub(super) async fn ended(&self) {
        self.ended.cancelled().await;
    }
}

impl Drop for ControlSlot<'_> {
    fn drop(&mut self) {
        let mut held = self.waiters.held();
        // Only our own entry: a newer request may hold the job's slot now.
        if held
            .by_job
            .get(&self.job_id)
            .is_some_and(|w| w.id == self.id)
        {
            held.by_job.remove(&self.job_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_job_and_a_cap_overall() {
        let w = ControlWaiters::new(2);
        let a1 = w.enter("a").unwrap();
        assert!(!a1.ended.is_cancelled());
        // A newer request for the same job ends the older and takes its slot.
        let a2 = w.enter("a").unwrap();
        assert!(a1.ended.is_cancelled());
        assert!(!a2.ended.is_cancelled());
        assert_eq!(w.len(), 1);
        // The older one leaving does not free the newer one's slot.
        drop(a1);
        assert_eq!(w.len(), 1);
        let b = w.enter("b").unwrap();
        let full = w.enter("c").err().expect("over the cap");
        assert_eq!((full.held, full.max), (2, 2));
        // A job that holds a slot may still replace its request at the cap.
        let a3 = w.enter("a").unwrap();
        assert!(a2.ended.is_cancelled());
        drop(b);
        let c = w.enter("c").unwrap();
        w.close();
        assert!(a3.ended.is_cancelled() && c.ended.is_cancelled());
        drop((a2, a3, c));
        assert_eq!(w.len(), 0);
        // After close, a new request ends at once.
        assert!(w.enter("d").unwrap().ended.is_cancelled());
    }
}
