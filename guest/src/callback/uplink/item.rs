//! One queued event, serialised once, with what the drop policy needs to know.

use std::sync::Arc;

use delegate_proto::{Event, EventKind};

/// Bytes of bookkeeping counted per queued event on top of its JSON, so
/// many tiny events cannot slip past the memory bound.
const ITEM_OVERHEAD: usize = 64;

/// What the drop policy may do with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Class {
    /// Phases: never dropped.
    Keep,
    /// Log chunks, heartbeats and progress: dropped, oldest first, when the
    /// buffer and the spool are full.
    Droppable,
    /// A `Dropped` event covering `first..=seq`: never dropped, merged with
    /// its neighbours.
    Marker { first: u64, reason: Arc<str> },
}

/// An event as JSON, ready to be concatenated into a batch or a spool file.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) seq: u64,
    pub(crate) class: Class,
    pub(crate) json: Vec<u8>,
}

impl Item {
    pub(crate) fn from_event(event: &Event) -> Item {
        let class = match &event.kind {
            EventKind::Phase { .. } => Class::Keep,
            EventKind::Progress { .. } | EventKind::Log(_) | EventKind::Heartbeat { .. } => {
                Class::Droppable
            }
            EventKind::Dropped {
                first_seq, reason, ..
            } => Class::Marker {
                first: *first_seq,
                reason: Arc::from(reason.as_str()),
            },
        };
        Item {
            seq: event.seq,
            class,
            json: encode(event),
        }
    }

    /// The `Dropped` event that stands in for the events `first..=last`: it
    /// carries `last` as its own sequence number (see the module doc of
    /// `callback` for why).
    pub(crate) fn marker(first: u64, last: u64, reason: Arc<str>) -> Item {
        let event = Event {
            seq: last,
            time_ms: delegate_proto::clock::now_ms(),
            kind: EventKind::Dropped {
                first_seq: first,
                last_seq: last,
                reason: reason.to_string(),
            },
        };
        Item {
            seq: last,
            class: Class::Marker {
                first,
                reason: reason.clone(),
            },
            json: encode(&event),
        }
    }

    /// Bytes this item counts against the memory bound.
    pub(crate) fn cost(&self) -> usize {
        self.json.len() + ITEM_OVERHEAD
    }

    /// The item as the host still needs it once everything up to `acked` is
    /// delivered: `None` when it is delivered, a narrower marker when part of
    /// its range is.
    pub(crate) fn above(self, acked: u64) -> Option<Item> {
        if self.seq <= acked {
            return None;
        }
        match &self.class {
            Class::Marker { first, reason } if *first <= acked => {
                Some(Item::marker(acked + 1, self.seq, reason.clone()))
            }
            _ => Some(self),
        }
    }
}

fn encode(event: &Event) -> Vec<u8> {
    // Serialising these plain structs cannot fail (string keys, no maps with
    // non-string keys); a failure would be a bug in proto.
    serde_json::to_vec(event).expect("events always serialise")
}

/// Appends `item` to `items`, merging it into a preceding marker when both
/// are markers of adjacent ranges with the same reason. Returns the change in
/// the deque's cost.
pub(crate) fn push_merging(items: &mut std::collections::VecDeque<Item>, item: Item) -> isize {
    if let (
        Class::Marker { first, reason },
        Some(Item {
            seq: back_seq,
            class:
                Class::Marker {
                    first: back_first,
                    reason: back_reason,
                },
            ..
        }),
    ) = (&item.class, items.back())
        && *back_seq + 1 == *first
        && back_reason == reason
    {
        let merged = Item::marker(*back_first, item.seq, reason.clone());
        let old = items.pop_back().map_or(0, |i| i.cost());
        let delta = merged.cost() as isize - old as isize;
        items.push_back(merged);
        return delta;
    }
    let delta = item.cost() as isize;
    items.push_back(item);
    delta
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn marker_range(item: &Item) -> (u64, u64) {
        match &item.class {
            Class::Marker { first, .. } => (*first, item.seq),
            other => panic!("not a marker: {other:?}"),
        }
    }

    #[test]
    fn adjacent_markers_merge_and_json_follows() {
        let reason: Arc<str> = Arc::from("full");
        let mut items = VecDeque::new();
        push_merging(&mut items, Item::marker(3, 5, reason.clone()));
        push_merging(&mut items, Item::marker(6, 6, reason.clone()));
        assert_eq!(items.len(), 1);
        assert_eq!(marker_range(&items[0]), (3, 6));
        let event: Event = serde_json::from_slice(&items[0].json).unwrap();
        assert_eq!(event.seq, 6);
        assert!(matches!(
            event.kind,
            EventKind::Dropped {
                first_seq: 3,
                last_seq: 6,
                ..
            }
        ));
        // Not adjacent, or another reason: kept apart.
        push_merging(&mut items, Item::marker(8, 8, reason.clone()));
        push_merging(&mut items, Item::marker(9, 9, Arc::from("other")));
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn acked_part_of_a_marker_is_cut() {
        let m = Item::marker(3, 9, Arc::from("full"));
        assert!(m.clone().above(9).is_none());
        assert_eq!(marker_range(&m.clone().above(5).unwrap()), (6, 9));
        assert_eq!(marker_range(&m.above(1).unwrap()), (3, 9));
    }
}
