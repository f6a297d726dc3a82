//! The bytes each way of a forwarded request, for the connection log:
//! the upstream stream is wrapped in [`crate::counted::Counted`] with
//! these [`Counters`].

use std::sync::atomic::{AtomicU64, Ordering};

use crate::counted::Tally;

/// Bytes each way, shared with whoever logs the connection.
#[derive(Debug, Default)]
pub struct Counters {
    /// Written to the upstream (the job's bytes out).
    pub sent: AtomicU64,
    /// Read from the upstream (the job's bytes in).
    pub received: AtomicU64,
}

impl Tally for Counters {
    fn read(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn wrote(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}
