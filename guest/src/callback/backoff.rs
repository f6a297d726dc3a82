//! Exponential backoff with jitter, and the retry budget of one operation.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How one request is retried: delays grow from `initial` to `max`, and the
/// operation gives up once `budget` has passed since its first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Total time after which the operation fails as unreachable.
    pub budget: Duration,
}

impl RetryPolicy {
    /// A policy with the given budget and the usual delays (250 ms to 10 s).
    pub const fn with_budget(budget: Duration) -> Self {
        RetryPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
            budget,
        }
    }
}

/// The delays of one retry loop.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            next: initial,
            max: max.max(initial),
        }
    }

    /// The next delay: the current step with "equal jitter" (half fixed, half
    /// random), so guests that lost the host together do not return together.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        let half = step / 2;
        let spread = half.as_nanos() as u64;
        let random = if spread == 0 {
            0
        } else {
            random_u64() % (spread + 1)
        };
        half + Duration::from_nanos(random)
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A random number from the standard library's hasher keys: jitter needs no
/// cryptographic quality, and this avoids a dependency.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_jitter_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let expected_steps = [100u64, 200, 400, 800, 800];
        for step in expected_steps {
            let d = b.next_delay();
            let step = Duration::from_millis(step);
            assert!(d >= step / 2 && d <= step, "{d:?} outside {step:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_varies() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 1);
    }
}
