//! Retries with exponential backoff and full jitter, only for failures that
//! may pass ([`PveError::is_retryable`]): locks, lock timeouts, agent not
//! running, unreachable nodes, 5xx. A 4xx is never retried.

use std::future::Future;
use std::time::Duration;

use super::error::PveError;

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The delay before attempt `n + 1` (n counts from 1): a random point in
    /// the upper half of `base * 2^(n-1)`, capped. The lower bound keeps
    /// clients from hammering a lock; the randomness keeps many jobs that hit
    /// the same lock from retrying in step.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max_delay);
        let ms = exp.as_millis() as u64;
        Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
    }

    /// Runs `op` until it succeeds, fails for good, or attempts run out.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, PveError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PveError>>,
    {
        let mut n = 0;
        loop {
            n += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if n < self.attempts && e.is_retryable() => {
                    let delay = self.delay(n);
                    tracing::debug!(
                        what,
                        attempt = n,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "retrying PVE call"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn err(status: u16, msg: &str) -> PveError {
        PveError::Api {
            method: "POST",
            path: "/p".into(),
            status,
            message: msg.into(),
            errors: BTreeMap::new(),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn retries_locks_until_success() {
        let calls = AtomicU32::new(0);
        let out = fast()
            .run("t", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(err(500, "VM 1 is locked (clone)"))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn never_retries_4xx_and_stops_after_attempts() {
        let calls = AtomicU32::new(0);
        let e = fast()
            .run::<(), _, _>("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(err(400, "Parameter verification failed."))
            })
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = AtomicU32::new(0);
        fast()
            .run::<(), _, _>("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(err(500, "got timeout"))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn delays_grow_with_jitter_and_cap() {
        let p = RetryPolicy::default();
        for n in 1..10 {
            let d = p.delay(n);
            let cap = p.base.saturating_mul(1 << (n - 1)).min(p.max_delay);
            assert!(d <= cap && d >= cap / 2, "{n}: {d:?} vs {cap:?}");
        }
    }
}
