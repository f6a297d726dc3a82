//! How much memory the bodies that are read whole (event batches, results)
//! may take at once, across every connection of the process. Each such body
//! is held as bytes, then parsed, then decoded into log bytes: about three
//! times its size. 64 concurrent 8 MB event batches took the host to 303 MB;
//! with this budget a request waits for room before reading its body, so
//! the bodies in memory stay under [`BUDGET_BYTES`] whatever the guests do.
//! Artifact uploads stream to disk and need no share.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, header};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Bytes of whole-read bodies in memory at once: three of the largest
/// event batches.
pub const BUDGET_BYTES: usize = 3 * delegate_proto::api::MAX_EVENTS_BODY;
/// The semaphore counts KiB, so a small batch takes a permit or two.
const UNIT: usize = 1024;

static BODIES: Semaphore = Semaphore::const_new(BUDGET_BYTES / UNIT);
static PEAK_UNITS: AtomicUsize = AtomicUsize::new(0);

/// A share of the budget, given back on drop.
pub struct BodyShare {
    _permit: Option<SemaphorePermit<'static>>,
}

/// Waits until the body of a request with `headers` fits the budget: its
/// declared length, or `limit` (the route's cap) when it declares none or
/// more (a longer body is refused while it is read).
pub async fn reserve(headers: &HeaderMap, limit: usize) -> BodyShare {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(limit, |n| n.min(limit));
    let units = declared.div_ceil(UNIT).clamp(1, BUDGET_BYTES / UNIT) as u32;
    // Nothing closes the semaphore, so acquiring cannot fail; were it to,
    // the request would go on unbudgeted rather than fail.
    let permit = BODIES.acquire_many(units).await.ok();
    let in_use = BUDGET_BYTES / UNIT - BODIES.available_permits();
    PEAK_UNITS.fetch_max(in_use, Ordering::Relaxed);
    BodyShare { _permit: permit }
}

/// The most body bytes held at once since the process started.
pub fn peak_body_bytes() -> usize {
    PEAK_UNITS.load(Ordering::Relaxed) * UNIT
}
