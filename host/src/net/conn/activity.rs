//! What one connection is doing, as its watchdog needs to know it: how many
//! of its requests are being answered, since when it waits for the next
//! one, and when the next one's first byte came. Its socket, wrapped in
//! [`Tracked`] (a [`crate::counted::Counted`]), reports the
//! bytes; the service marks requests with [`Activity::begin`].
//!
//! The rules: while no request is being answered, a head must be complete
//! within the header timeout of its first byte, and a connection with
//! nothing sent either way is closed after the idle timeout. While one is
//! (a held control request, a handler at work, a stream or a tunnel), only
//! the busy timeout applies, where the listener sets one: nothing sent
//! either way for that long. Request bodies have their own stall timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::counted::{Counted, Tally};

use super::settings::ConnSettings;

/// No head begun.
const NONE: u64 = u64::MAX;

/// One connection's state, shared by its socket, its service and its
/// watchdog.
#[derive(Debug)]
pub struct Activity {
    /// When the connection was accepted; the times below count from it.
    opened: Instant,
    /// Requests being answered.
    in_flight: AtomicU32,
    /// Milliseconds from `opened` to the last byte either way or the last
    /// answer.
    last_seen: AtomicU64,
    /// Milliseconds from `opened` to the first byte of the next head, or
    /// [`NONE`].
    head_began: AtomicU64,
    /// Wakes the watchdog when its deadline may have moved (a request
    /// ended, a head began).
    pub(super) changed: Notify,
    /// Cancelled when the connection is to be closed at once (evicted).
    pub(super) evict: CancellationToken,
}

/// Ends a request when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
        self.0.changed.notify_one();
    }
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_seen: AtomicU64::new(0),
            head_began: AtomicU64::new(NONE),
            changed: Notify::new(),
            evict: CancellationToken::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_seen.store(self.now_ms(), Ordering::Release);
    }

    /// A request's head is complete: it is being answered until the guard
    /// drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_began.store(NONE, Ordering::Release);
        InFlight(self.clone())
    }

    /// True while no request is being answered: the connection may be
    /// closed without cutting one.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// `n` bytes read `now` milliseconds after the connection opened.
    fn read_at(&self, n: usize, now: u64) {
        if n == 0 {
            return;
        }
        self.last_seen.store(now, Ordering::Release);
        if self.is_idle()
            && self
                .head_began
                .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // The watchdog's deadline is now the head's.
            self.changed.notify_one();
        }
    }

    /// When nothing will have been sent either way for `d`, if nothing is.
    pub fn quiet_after(&self, d: std::time::Duration) -> Instant {
        self.at(self.last_seen.load(Ordering::Acquire), d)
    }

    fn at(&self, ms: u64, d: std::time::Duration) -> Instant {
        self.opened + std::time::Duration::from_millis(ms) + d
    }

    /// When the watchdog must close the connection if nothing changes:
    /// while a request is being answered, the busy timeout's (`None`
    /// without one).
    pub fn deadline(&self, limits: &ConnSettings) -> Option<Instant> {
        if !self.is_idle() {
            return limits.busy_timeout.map(|d| self.quiet_after(d));
        }
        match self.head_began.load(Ordering::Acquire) {
            NONE => Some(self.quiet_after(limits.idle_timeout)),
            began => Some(self.at(began, limits.header_timeout)),
        }
    }
}

/// A socket whose bytes are counted into its connection's [`Activity`].
pub type Tracked<IO> = Counted<IO, Activity>;

/// The socket's bytes, as [`Counted`] sees them.
impl Tally for Activity {
    fn read(&self, n: usize) {
        self.read_at(n, self.now_ms());
    }

    fn wrote(&self, n: usize) {
        if n > 0 {
            self.touch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> ConnSettings {
        ConnSettings {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            busy_timeout: None,
            answered: super::super::settings::Answered::AtHead,
            shutdown_grace: None,
            max_connections: 4,
        }
    }

    #[tokio::test]
    async fn idle_then_a_head_then_a_request_then_idle_again() {
        let a = Activity::new();
        let at = |secs: u64| Some(a.opened + Duration::from_secs(secs));
        assert_eq!(a.deadline(&limits()), at(60));
        a.read_at(1, 5_000);
        assert_eq!(a.deadline(&limits()), at(15));
        a.read_at(1, 6_000);
        assert_eq!(
            a.deadline(&limits()),
            at(15),
            "more bytes of the same head do not extend it"
        );
        let req = a.begin();
        assert_eq!(a.deadline(&limits()), None);
        assert!(!a.is_idle());
        a.read_at(10, 100_000);
        assert_eq!(a.deadline(&limits()), None, "a body is not a head");
        drop(req);
        assert!(a.is_idle());
        let answered = a.last_seen.load(Ordering::Acquire);
        assert_eq!(
            a.deadline(&limits()),
            Some(a.opened + Duration::from_millis(answered) + Duration::from_secs(60))
        );
        a.last_seen.store(200_000, Ordering::Release);
        assert_eq!(a.deadline(&limits()), at(260), "bytes written count too");
    }

    #[tokio::test]
    async fn a_busy_connection_has_only_the_busy_timeout_counted_from_its_last_byte() {
        let a = Activity::new();
        let mut l = limits();
        l.busy_timeout = Some(Duration::from_secs(300));
        let _req = a.begin();
        a.read_at(10, 100_000);
        assert_eq!(a.deadline(&l), Some(a.opened + Duration::from_secs(400)));
        a.read_at(10, 500_000);
        assert_eq!(a.deadline(&l), Some(a.opened + Duration::from_secs(800)));
    }
}
