//! The connections one service's listeners hold, under one cap shared by
//! its TCP and Unix listeners. At the cap a new connection closes the
//! oldest idle one (no request being answered): idle sockets, which anyone
//! who reaches the port can open without a token, can then never lock a
//! guest out. Only when every held connection is answering a request is
//! the new one refused.
//!
//! A connection counts until its task has dropped its socket, not from the
//! moment it is told to close: otherwise a burst of new sockets outruns
//! the closing ones and the descriptors the cap should keep free are gone
//! (measured: `accept` failing with `EMFILE` at 127 of 128 held).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::activity::Activity;

/// The held connections, oldest first.
#[derive(Debug)]
pub struct Registry {
    cap: usize,
    /// The service, and the setting of its cap, for the log.
    name: &'static str,
    setting: &'static str,
    held: Mutex<Held>,
    /// Whether reaching the cap was logged (once per process).
    warned: AtomicBool,
    /// Told when a connection's socket is closed.
    freed: Notify,
}

/// How long a new connection waits at the cap for a closing one to be
/// gone before it is closed itself.
const FREE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Held {
    next: u64,
    live: BTreeMap<u64, Arc<Activity>>,
}

/// A held connection; leaves the registry when dropped.
#[derive(Debug)]
pub struct Slot {
    registry: Arc<Registry>,
    id: u64,
    /// The connection's state.
    pub activity: Arc<Activity>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().live.remove(&self.id);
        self.registry.freed.notify_waiters();
    }
}

impl Registry {
    /// A registry holding at most `cap` connections of the service `name`,
    /// whose cap is the setting `setting`.
    pub fn new(cap: usize, name: &'static str, setting: &'static str) -> Arc<Registry> {
        Arc::new(Registry {
            cap: cap.max(1),
            name,
            setting,
            held: Mutex::new(Held::default()),
            warned: AtomicBool::new(false),
            freed: Notify::new(),
        })
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a new connection. At the cap the oldest idle
    /// connection is told to close and the new one waits (up to
    /// [`FREE_WAIT`]) until it has; `None` when every held connection is
    /// answering a request, or none closed in time.
    pub async fn admit(self: &Arc<Self>) -> Option<Slot> {
        let deadline = tokio::time::Instant::now() + FREE_WAIT;
        loop {
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            {
                let mut held = self.lock();
                if held.live.len() < self.cap {
                    return Some(self.insert(&mut held));
                }
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        cap = self.cap,
                        "{} connections at their cap: the oldest idle ones are closed \
                         ({}, RLIMIT_NOFILE)",
                        self.name,
                        self.setting
                    );
                }
                if !Self::closing(&held) && !Self::evict_oldest_idle(&held) {
                    return None;
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    fn insert(self: &Arc<Self>, held: &mut Held) -> Slot {
        let id = held.next;
        held.next += 1;
        let activity = Activity::new();
        held.live.insert(id, activity.clone());
        Slot {
            registry: self.clone(),
            id,
            activity,
        }
    }

    /// Tells the oldest idle connection to close, to free its descriptor
    /// (when `accept` ran out of them). Returns whether there was one.
    pub fn shed(&self) -> bool {
        Self::evict_oldest_idle(&self.lock())
    }

    /// Whether a connection was told to close and has not yet.
    fn closing(held: &Held) -> bool {
        held.live.values().any(|a| a.evict.is_cancelled())
    }

    fn evict_oldest_idle(held: &Held) -> bool {
        match held
            .live
            .values()
            .find(|a| a.is_idle() && !a.evict.is_cancelled())
        {
            Some(a) => {
                a.evict.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_goes_and_busy_ones_stay() {
        let r = Registry::new(2, "test", "TEST_MAX");
        let a = r.admit().await.unwrap();
        let b = r.admit().await.unwrap();
        let busy = a.activity.begin();
        // b is idle: told to close; the new one waits until it has.
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.admit().await }
        });
        tokio::task::yield_now().await;
        while !b.activity.evict.is_cancelled() {
            tokio::task::yield_now().await;
        }
        assert!(!a.activity.evict.is_cancelled());
        assert_eq!(r.len(), 2, "b counts until its socket is gone");
        drop(b);
        let c = waiting.await.unwrap().expect("b's place");
        assert_eq!(r.len(), 2);
        let _busy_c = c.activity.begin();
        assert!(r.admit().await.is_none(), "every held connection is busy");
        drop(busy);
        assert!(r.shed(), "a is idle again");
        assert!(a.activity.evict.is_cancelled());
        drop(a);
        assert_eq!(r.len(), 1);
        drop(c);
        assert!(r.is_empty());
    }
}
