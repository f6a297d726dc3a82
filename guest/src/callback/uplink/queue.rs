//! The ordered queue of events not yet acknowledged, and its drop policy.
//!
//! Order is `head ++ spool ++ tail`, every part sorted by seq:
//! - `tail` takes new events; when memory is over its bound the whole tail
//!   becomes a spool segment;
//! - batches are cut from `head`; when it is empty the oldest segment is
//!   read back into it (or, with no spool, batches come from `tail`);
//! - when the spool has no room for a segment, the oldest segments are
//!   compacted: their phases and markers move to `head`, their log chunks,
//!   heartbeats and progress become `Dropped` markers. Without a usable
//!   spool the same happens in memory, oldest first.
//!
//! The events already read back into `head` for sending (at most one
//! segment) are older than the spool but spared by its compaction: dropping
//! them would free no disk.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;

use delegate_proto::Event;

use super::item::{Class, Item, push_merging};
use super::spool::Spool;

pub(crate) const REASON_SPOOL_FULL: &str =
    "event spool full while the host was unreachable or slow";
pub(crate) const REASON_MEMORY_FULL: &str = "event buffer full and no spool space";
pub(crate) const REASON_TOO_LARGE: &str = "event larger than the host accepts";
pub(crate) const REASON_NEVER_QUEUED: &str = "the runner never queued these events";

/// JSON around the events of a batch: `{"events":[` and `]}`.
const BATCH_FRAME: usize = 13;

/// A batch ready to send.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) body: Vec<u8>,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) count: usize,
}

#[derive(Debug)]
pub(crate) struct Queue {
    head: VecDeque<Item>,
    head_bytes: usize,
    tail: VecDeque<Item>,
    tail_bytes: usize,
    spool: Spool,
    memory_limit: usize,
    spool_limit: u64,
    /// Everything up to here reached the host.
    acked: u64,
    /// Highest seq accepted by `push`.
    last_pushed: u64,
    /// Ranges this queue dropped, for the flush report.
    dropped: Vec<(u64, u64)>,
}

impl Queue {
    pub(crate) fn new(spool_dir: PathBuf, memory_limit: usize, spool_limit: u64) -> Queue {
        Queue {
            head: VecDeque::new(),
            head_bytes: 0,
            tail: VecDeque::new(),
            tail_bytes: 0,
            spool: Spool::open(spool_dir),
            memory_limit: memory_limit.max(1),
            spool_limit,
            acked: 0,
            last_pushed: 0,
            dropped: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.spool.items() + self.tail.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes held in memory (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn memory_bytes(&self) -> usize {
        self.head_bytes + self.tail_bytes
    }

    /// Queues an event. Returns false (and queues nothing) when its seq does
    /// not grow: the queue's order, and the host's de-duplication, rely on it.
    pub(crate) fn push(&mut self, event: &Event) -> bool {
        if event.seq <= self.last_pushed || event.seq <= self.acked {
            return false;
        }
        self.last_pushed = event.seq;
        let item = Item::from_event(event);
        self.tail_bytes += item.cost();
        self.tail.push_back(item);
        self.enforce_bounds();
        true
    }

    fn enforce_bounds(&mut self) {
        let total = self.head_bytes + self.tail_bytes;
        if self.tail_bytes <= self.memory_limit / 2 && total <= self.memory_limit {
            return;
        }
        if self.spill_tail() {
            return;
        }
        if total > self.memory_limit {
            // Spool too small, full of what cannot be dropped, or unusable:
            // drop in memory, down to half the bound so this is not redone
            // for every event.
            self.drop_in_memory(self.memory_limit / 2);
        }
    }

    /// Writes the tail as a new spool segment, compacting the oldest
    /// segments first when the spool has no room. False when it could not.
    fn spill_tail(&mut self) -> bool {
        if self.tail.is_empty() || !self.spool.usable() {
            return false;
        }
        let size = Spool::size_of(self.tail.iter());
        while self.spool.bytes() + size > self.spool_limit && !self.spool.is_empty() {
            self.compact_oldest_segment();
        }
        if self.spool.bytes() + size > self.spool_limit || !self.spool.write(&self.tail) {
            return false;
        }
        self.tail.clear();
        self.tail_bytes = 0;
        true
    }

    /// Moves the oldest segment's phases and markers to `head` and turns the
    /// rest into markers.
    fn compact_oldest_segment(&mut self) {
        let Some(seg) = self.spool.pop_front() else {
            return;
        };
        let reason: Arc<str> = Arc::from(REASON_SPOOL_FULL);
        // Only phases need their bytes back: markers are rebuilt from the
        // outline and everything else is dropped.
        let items = if seg.outline().any(|(_, class)| *class == Class::Keep) {
            match Spool::read(&seg) {
                Ok(items) => items,
                Err(e) => return self.lose_segment(&seg, &e),
            }
        } else {
            let items = seg
                .outline()
                .map(|(seq, class)| match class {
                    Class::Marker { first, reason } => Item::marker(*first, seq, reason.clone()),
                    _ => Item {
                        seq,
                        class: Class::Droppable,
                        json: Vec::new(),
                    },
                })
                .collect();
            seg.discard();
            items
        };
        for item in items {
            self.compact_into_head(item, &reason);
        }
    }

    fn compact_into_head(&mut self, item: Item, reason: &Arc<str>) {
        let Some(item) = item.above(self.acked) else {
            return;
        };
        let item = match item.class {
            Class::Droppable => {
                self.record_drop(item.seq, item.seq);
                Item::marker(item.seq, item.seq, reason.clone())
            }
            _ => item,
        };
        self.head_bytes = add(self.head_bytes, push_merging(&mut self.head, item));
    }

    /// A segment that cannot be read back: everything in it is reported lost.
    fn lose_segment(&mut self, seg: &super::spool::Segment, err: &std::io::Error) {
        tracing::error!(
            "lost spooled events {}..={}: {err}",
            seg.first_seq(),
            seg.last_seq()
        );
        let reason: Arc<str> = Arc::from(format!("spool file unreadable: {err}"));
        let outline: Vec<(u64, Class)> = seg.outline().map(|(s, c)| (s, c.clone())).collect();
        for (seq, class) in outline {
            let first = match class {
                Class::Marker { first, .. } => first,
                _ => seq,
            };
            let Some(item) = Item::marker(first, seq, reason.clone()).above(self.acked) else {
                continue;
            };
            if let Class::Marker { first, .. } = &item.class {
                self.record_drop(*first, item.seq);
            }
            self.head_bytes = add(self.head_bytes, push_merging(&mut self.head, item));
        }
    }

    /// Drops droppable events, oldest first, until memory is at `target`.
    fn drop_in_memory(&mut self, target: usize) {
        let reason: Arc<str> = Arc::from(REASON_MEMORY_FULL);
        for part in [Part::Head, Part::Tail] {
            if self.head_bytes + self.tail_bytes <= target {
                return;
            }
            let (items, bytes) = match part {
                Part::Head => (std::mem::take(&mut self.head), self.head_bytes),
                Part::Tail => (std::mem::take(&mut self.tail), self.tail_bytes),
            };
            let other = match part {
                Part::Head => self.tail_bytes,
                Part::Tail => self.head_bytes,
            };
            let mut kept = VecDeque::with_capacity(items.len());
            let mut kept_bytes = 0usize;
            let mut remaining = bytes;
            for item in items {
                remaining -= item.cost();
                let over = kept_bytes + item.cost() + remaining + other > target;
                let item = if over && item.class == Class::Droppable {
                    self.record_drop(item.seq, item.seq);
                    Item::marker(item.seq, item.seq, reason.clone())
                } else {
                    item
                };
                kept_bytes = add(kept_bytes, push_merging(&mut kept, item));
            }
            match part {
                Part::Head => (self.head, self.head_bytes) = (kept, kept_bytes),
                Part::Tail => (self.tail, self.tail_bytes) = (kept, kept_bytes),
            }
        }
    }

    fn record_drop(&mut self, first: u64, last: u64) {
        if let Some(prev) = self.dropped.last_mut()
            && prev.1 + 1 == first
        {
            prev.1 = last;
            return;
        }
        self.dropped.push((first, last));
    }

    /// The dropped ranges, sorted and merged.
    pub(crate) fn dropped_ranges(&self) -> Vec<RangeInclusive<u64>> {
        let mut ranges = self.dropped.clone();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (first, last) in ranges {
            match merged.last_mut() {
                Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
                _ => merged.push((first, last)),
            }
        }
        merged.into_iter().map(|(a, b)| a..=b).collect()
    }

    /// The next batch from the front, at most `max_events` and `max_body`
    /// bytes. Items stay queued until [`Queue::delivered`]. An event too
    /// large for any batch is replaced by a marker.
    pub(crate) fn next_batch(&mut self, max_events: usize, max_body: usize) -> Option<Batch> {
        loop {
            if self.head.is_empty() && !self.spool.is_empty() {
                self.unspool_front();
                continue;
            }
            let source = if self.head.is_empty() {
                &self.tail
            } else {
                &self.head
            };
            let first = source.front()?;
            if BATCH_FRAME + first.json.len() > max_body {
                let seq = first.seq;
                self.replace_front_with_marker(REASON_TOO_LARGE);
                tracing::warn!(seq, "event larger than {max_body} bytes dropped");
                continue;
            }
            let mut body = Vec::with_capacity(max_body.min(1 << 20));
            body.extend_from_slice(br#"{"events":["#);
            let mut count = 0;
            let mut last_seq = first.seq;
            for item in source.iter().take(max_events.max(1)) {
                let comma = usize::from(count > 0);
                if body.len() + comma + item.json.len() + 2 > max_body {
                    break;
                }
                if count > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&item.json);
                last_seq = item.seq;
                count += 1;
            }
            body.extend_from_slice(b"]}");
            return Some(Batch {
                body,
                first_seq: first.seq,
                last_seq,
                count,
            });
        }
    }

    /// Replaces the first queued event by a `Dropped` marker for it. Returns
    /// false when the front already is a marker (nothing smaller exists).
    pub(crate) fn replace_front_with_marker(&mut self, reason: &str) -> bool {
        let (items, bytes) = if self.head.is_empty() {
            (&mut self.tail, &mut self.tail_bytes)
        } else {
            (&mut self.head, &mut self.head_bytes)
        };
        let Some(front) = items.front() else {
            return false;
        };
        if matches!(front.class, Class::Marker { .. }) {
            return false;
        }
        let seq = front.seq;
        let old = items.pop_front().map_or(0, |i| i.cost());
        let marker = Item::marker(seq, seq, Arc::from(reason));
        *bytes = *bytes - old + marker.cost();
        items.push_front(marker);
        self.record_drop(seq, seq);
        true
    }

    /// Makes the front acceptable to a host that takes only the seq after
    /// `highest`, one slot at a time, when it stopped there: fills a gap
    /// before the front (seqs the caller never queued) and splits a ranged
    /// `Dropped` marker at the front into one `Dropped` event per seq, at
    /// most `max` of them. False when the front already starts at
    /// `highest + 1` with a single slot (nothing to make easier).
    pub(crate) fn fill_gap(&mut self, highest: u64, max: usize) -> bool {
        let next = highest + 1;
        if self.head.is_empty() {
            self.unspool_front();
        }
        let (items, bytes) = if self.head.is_empty() {
            (&mut self.tail, &mut self.tail_bytes)
        } else {
            (&mut self.head, &mut self.head_bytes)
        };
        let Some(front) = items.front() else {
            return false;
        };
        let max = max.max(1) as u64;
        let (first, reason) = match &front.class {
            Class::Marker { first, reason } => (*first, reason.clone()),
            _ => (front.seq, Arc::from(REASON_NEVER_QUEUED)),
        };
        let stubs_end;
        let reason = if first > next {
            // Seqs that never reached the queue: report them as dropped.
            stubs_end = (first - 1).min(next + max - 1);
            self.dropped.push((next, stubs_end));
            Arc::from(REASON_NEVER_QUEUED)
        } else if matches!(front.class, Class::Marker { .. }) && front.seq > next {
            stubs_end = (front.seq - 1).min(next + max - 1);
            let Some(marker) = items.pop_front() else {
                return false;
            };
            *bytes -= marker.cost();
            let rest = Item::marker(stubs_end + 1, marker.seq, reason.clone());
            *bytes += rest.cost();
            items.push_front(rest);
            reason
        } else {
            return false;
        };
        // Pushed front-first in reverse, and never merged, so each seq is its
        // own event.
        for seq in (next..=stubs_end).rev() {
            let stub = Item::marker(seq, seq, reason.clone());
            *bytes += stub.cost();
            items.push_front(stub);
        }
        true
    }

    /// Reads the oldest spool segment back into `head`.
    fn unspool_front(&mut self) {
        if let Some(seg) = self.spool.pop_front() {
            match Spool::read(&seg) {
                Ok(items) => {
                    for item in items.into_iter().filter_map(|i| i.above(self.acked)) {
                        self.head_bytes = add(self.head_bytes, push_merging(&mut self.head, item));
                    }
                }
                Err(e) => self.lose_segment(&seg, &e),
            }
        }
    }

    /// Everything up to `upto` reached the host.
    pub(crate) fn delivered(&mut self, upto: u64) {
        if upto <= self.acked {
            return;
        }
        self.acked = upto;
        cut_front(&mut self.head, &mut self.head_bytes, upto);
        while let Some(seg) = self.spool.front() {
            if seg.last_seq() > upto {
                break;
            }
            if let Some(seg) = self.spool.pop_front() {
                seg.discard();
            }
        }
        // A partly delivered segment is trimmed when it is read back.
        cut_front(&mut self.tail, &mut self.tail_bytes, upto);
    }

    /// Deletes the spool files (the uplink stopped).
    pub(crate) fn close(&mut self) {
        self.spool.clear();
    }
}

#[derive(Clone, Copy)]
enum Part {
    Head,
    Tail,
}

fn cut_front(items: &mut VecDeque<Item>, bytes: &mut usize, upto: u64) {
    while let Some(front) = items.front() {
        if front.seq > upto {
            // A marker reaching back into the delivered range keeps only the
            // part the host may not have.
            if matches!(&front.class, Class::Marker { first, .. } if *first <= upto)
                && let Some(old) = items.pop_front()
            {
                *bytes -= old.cost();
                if let Some(narrow) = old.above(upto) {
                    *bytes += narrow.cost();
                    items.push_front(narrow);
                }
            }
            return;
        }
        if let Some(old) = items.pop_front() {
            *bytes -= old.cost();
        }
    }
}

fn add(bytes: usize, delta: isize) -> usize {
    bytes.saturating_add_signed(delta)
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
