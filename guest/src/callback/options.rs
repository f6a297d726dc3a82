//! Tuning of the callback transport, with defaults fit for production.

use std::time::Duration;

use super::backoff::RetryPolicy;

/// Timeouts, retry budgets, batching and buffer bounds. `Default` gives the
/// production values; tests shrink them.
#[derive(Debug, Clone)]
pub struct CallbackOptions {
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time for one JSON request, from start to the whole answer.
    pub request_timeout: Duration,
    /// `GET manifest`: retried while the host is unreachable or says 5xx.
    pub fetch_retry: RetryPolicy,
    /// `PUT artifacts`.
    pub upload_retry: RetryPolicy,
    /// `POST result`.
    pub result_retry: RetryPolicy,
    /// Slowest upload rate tolerated, in bytes per second: an upload of
    /// `n` bytes may take `request_timeout + n / upload_min_rate`.
    pub upload_min_rate: u64,
    /// Events: first delay after a failed batch.
    pub events_retry_initial: Duration,
    /// Events: largest delay between attempts. Kept well under the host's
    /// heartbeat threshold so a short outage does not cost the job's lease.
    pub events_retry_max: Duration,
    /// Most events in one batch (at most `proto::api::MAX_EVENTS_PER_BATCH`).
    pub batch_max_events: usize,
    /// How long an event may wait for companions before its batch is sent.
    pub batch_interval: Duration,
    /// Bytes of queued events kept in memory; beyond, they go to the spool.
    pub memory_limit: usize,
    /// How long the host may hold a control request (`GET control`) when
    /// nothing happens; capped at `proto::api::MAX_CONTROL_WAIT_SECS`.
    pub control_wait: Duration,
    /// Bytes of events in the spool directory; beyond, the oldest log chunks,
    /// heartbeats and progress are dropped (and reported as dropped).
    pub spool_limit: u64,
}

impl Default for CallbackOptions {
    fn default() -> Self {
        CallbackOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            fetch_retry: RetryPolicy::with_budget(Duration::from_secs(300)),
            upload_retry: RetryPolicy::with_budget(Duration::from_secs(600)),
            result_retry: RetryPolicy::with_budget(Duration::from_secs(600)),
            upload_min_rate: 1024 * 1024,
            events_retry_initial: Duration::from_millis(250),
            events_retry_max: Duration::from_secs(5),
            batch_max_events: 512,
            batch_interval: Duration::from_millis(200),
            memory_limit: 4 * 1024 * 1024,
            spool_limit: 256 * 1024 * 1024,
            control_wait: Duration::from_secs(25),
        }
    }
}
