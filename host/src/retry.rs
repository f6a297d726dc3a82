//! The host's one retry policy: how many attempts, how long to wait between
//! them (exponential from `base`, capped at `max_delay`, with jitter), and
//! the loops that apply it.
//!
//! How to use it:
//!
//! - an async operation whose failures say whether another try may work:
//!   [`RetryPolicy::run`] (the Proxmox client: locks, 5xx);
//! - one that must stop when the caller stops (shutdown, a cancelled job):
//!   [`RetryPolicy::run_until_cancelled`], whose waits end at once when
//!   the token is cancelled (the `serve` takeover loop);
//! - a loop with its own decisions per failure, or a blocking one (e.g.
//!   `SQLITE_BUSY` in a synchronous store call): keep the loop and take
//!   the waits from [`RetryPolicy::delay`] or [`RetryPolicy::delays`], and
//!   the limit from [`RetryPolicy::attempts`], so every loop shares one
//!   notion of backoff (the Proxmox clone and agent loops do this).
//!
//! Jitter takes each wait from the upper half of its exponential step: the
//! lower bound keeps a retry from hammering what just failed (a lock, a
//! busy database); the randomness (fastrand) keeps many jobs that failed
//! together from retrying in step.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry; `u32::MAX` = until it works or is
    /// cancelled).
    pub attempts: u32,
    /// The wait after the first failed attempt (before jitter).
    pub base: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// Whether waits are randomised (within the upper half of each step).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// Six attempts, 250 ms doubling up to 8 s, with jitter: about 15 s of
    /// trying in all, long enough for a lock or a restart to pass.
    fn default() -> Self {
        RetryPolicy::new(6, Duration::from_millis(250), Duration::from_secs(8))
    }
}

/// Why [`RetryPolicy::run_until_cancelled`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped<E> {
    /// The last attempt failed for good, or the attempts ran out.
    Failed(E),
    /// The token was cancelled while waiting to try again.
    Cancelled {
        /// The failure of the attempt before the wait.
        last: E,
    },
}

impl<E> Stopped<E> {
    /// The last failure, however the loop ended.
    pub fn into_last(self) -> E {
        match self {
            Stopped::Failed(e) | Stopped::Cancelled { last: e } => e,
        }
    }
}

impl RetryPolicy {
    /// `attempts` in all, waits from `base` doubling up to `max_delay`, with jitter.
    pub const fn new(attempts: u32, base: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            attempts,
            base,
            max_delay,
            jitter: true,
        }
    }

    /// The same wait every time, no jitter (polling something that is
    /// expected to change, not backing off from overload).
    pub const fn fixed(attempts: u32, every: Duration) -> Self {
        RetryPolicy {
            attempts,
            base: every,
            max_delay: every,
            jitter: false,
        }
    }

    /// One attempt, no retry.
    pub const fn none() -> Self {
        RetryPolicy::fixed(1, Duration::ZERO)
    }

    /// The same policy without jitter.
    pub const fn without_jitter(self) -> Self {
        RetryPolicy {
            jitter: false,
            ..self
        }
    }

    /// The wait after failed attempt `n` (counting from 1): `base * 2^(n-1)`,
    /// capped at `max_delay`; with jitter, a random point in its upper half.
    pub fn delay(&self, n: u32) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max_delay);
        if !self.jitter {
            return step;
        }
        let ms = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
    }

    /// The waits between the attempts, in order (`attempts - 1` of them),
    /// for loops that do their own waiting (blocking code, per-failure
    /// decisions).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        (1..self.attempts).map(|n| self.delay(n))
    }

    /// Runs `op` until it succeeds, fails in a way `retryable` says is
    /// final, or the attempts run out; returns the last failure then.
    pub async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        retryable: impl Fn(&E) -> bool,
        op: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.drive(what, None, retryable, op)
            .await
            .map_err(Stopped::into_last)
    }

    /// [`RetryPolicy::run`] that also stops when `cancel` is cancelled:
    /// a wait between attempts ends at once. A running attempt is not
    /// interrupted (it sees the token itself if it needs to).
    pub async fn run_until_cancelled<T, E, F, Fut>(
        &self,
        what: &str,
        cancel: &CancellationToken,
        retryable: impl Fn(&E) -> bool,
        op: F,
    ) -> Result<T, Stopped<E>>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.drive(what, Some(cancel), retryable, op).await
    }

    async fn drive<T, E, F, Fut>(
        &self,
        what: &str,
        cancel: Option<&CancellationToken>,
        retryable: impl Fn(&E) -> bool,
        mut op: F,
    ) -> Result<T, Stopped<E>>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut n: u32 = 0;
        loop {
            n = n.saturating_add(1);
            let e = match op().await {
                Ok(v) => return Ok(v),
                Err(e) if n < self.attempts && retryable(&e) => e,
                Err(e) => return Err(Stopped::Failed(e)),
            };
            let delay = self.delay(n);
            tracing::debug!(
                what,
                attempt = n,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %e,
                "retrying"
            );
            match cancel {
                Some(token) => tokio::select! {
                    _ = token.cancelled() => return Err(Stopped::Cancelled { last: e }),
                    _ = tokio::time::sleep(delay) => {}
                },
                None => tokio::time::sleep(delay).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq, Eq)]
    struct Failure {
        passing: bool,
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "passing={}", self.passing)
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy::new(4, Duration::from_millis(1), Duration::from_millis(4))
    }

    fn passing(e: &Failure) -> bool {
        e.passing
    }

    #[tokio::test]
    async fn retries_passing_failures_until_success() {
        let calls = AtomicU32::new(0);
        let out = fast()
            .run("t", passing, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Failure { passing: true })
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn final_failures_stop_at_once_and_attempts_are_a_limit() {
        let calls = AtomicU32::new(0);
        let e = fast()
            .run::<(), _, _, _>("t", passing, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure { passing: false })
            })
            .await;
        assert_eq!(e, Err(Failure { passing: false }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = AtomicU32::new(0);
        let e = fast()
            .run::<(), _, _, _>("t", passing, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure { passing: true })
            })
            .await;
        assert!(e.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn cancelling_ends_the_wait() {
        let cancel = CancellationToken::new();
        let calls = AtomicU32::new(0);
        // An hour between attempts: only the cancel can end this quickly.
        let policy = RetryPolicy::fixed(u32::MAX, Duration::from_secs(3600));
        let c2 = cancel.clone();
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            policy.run_until_cancelled::<(), _, _, _>("t", &cancel, passing, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                c2.cancel();
                Err(Failure { passing: true })
            }),
        )
        .await
        .expect("the wait was cut short");
        assert_eq!(
            out,
            Err(Stopped::Cancelled {
                last: Failure { passing: true }
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delays_grow_with_jitter_and_cap() {
        let p = RetryPolicy::default();
        for n in 1..10 {
            let d = p.delay(n);
            let cap = p.base.saturating_mul(1 << (n - 1)).min(p.max_delay);
            assert!(d <= cap && d >= cap / 2, "{n}: {d:?} vs {cap:?}");
        }
        let exact = p.without_jitter();
        assert_eq!(exact.delay(1), Duration::from_millis(250));
        assert_eq!(exact.delay(3), Duration::from_secs(1));
        assert_eq!(exact.delay(40), Duration::from_secs(8));
        let fixed = RetryPolicy::fixed(3, Duration::from_secs(2));
        assert_eq!(
            fixed.delays().collect::<Vec<_>>(),
            [Duration::from_secs(2); 2]
        );
        assert_eq!(RetryPolicy::none().delays().count(), 0);
    }
}
