//! Unit tests of the queue's order, bounds and drop policy.

use super::*;
use delegate_proto::{EventBatch, EventKind, LogChunk, LogStream, Phase};

fn log(seq: u64, len: usize) -> Event {
    Event {
        seq,
        time_ms: 1,
        kind: EventKind::Log(LogChunk::new(
            LogStream::Stdout,
            seq * 1000,
            "x".repeat(len).as_bytes(),
        )),
    }
}

fn phase(seq: u64) -> Event {
    Event {
        seq,
        time_ms: 1,
        kind: EventKind::Phase {
            phase: Phase::Running,
            message: None,
        },
    }
}

fn queue(dir: &std::path::Path, memory: usize, spool: u64) -> Queue {
    Queue::new(dir.join("spool"), memory, spool)
}

/// Sends everything as the task would, acknowledging each batch.
fn drain(q: &mut Queue, max_events: usize, max_body: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(batch) = q.next_batch(max_events, max_body) {
        assert!(batch.count >= 1 && batch.count <= max_events);
        assert!(
            batch.body.len() <= max_body,
            "{} > {max_body}",
            batch.body.len()
        );
        let parsed: EventBatch = serde_json::from_slice(&batch.body).expect("batch is valid JSON");
        assert_eq!(parsed.events.len(), batch.count);
        assert_eq!(parsed.events.last().map(|e| e.seq), Some(batch.last_seq));
        out.extend(parsed.events);
        q.delivered(batch.last_seq);
    }
    assert!(q.is_empty());
    out
}

/// Every seq in 1..=n is either delivered as itself or inside exactly one
/// Dropped range whose event carries the range's last seq; seqs grow.
fn assert_accounted(events: &[Event], n: u64) -> Vec<(u64, u64)> {
    let mut covered = vec![0u32; n as usize + 1];
    let mut ranges = Vec::new();
    let mut prev = 0;
    for e in events {
        assert!(e.seq > prev, "seq {} after {prev}", e.seq);
        prev = e.seq;
        match &e.kind {
            EventKind::Dropped {
                first_seq,
                last_seq,
                ..
            } => {
                assert_eq!(e.seq, *last_seq);
                for s in *first_seq..=*last_seq {
                    covered[s as usize] += 1;
                }
                ranges.push((*first_seq, *last_seq));
            }
            _ => covered[e.seq as usize] += 1,
        }
    }
    for (seq, count) in covered.iter().enumerate().skip(1) {
        assert_eq!(*count, 1, "seq {seq} covered {count} times");
    }
    ranges
}

#[test]
fn batches_keep_order_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue(dir.path(), 1 << 20, 1 << 20);
    for seq in 1..=10 {
        assert!(q.push(&log(seq, 100)));
    }
    let first = q.next_batch(4, 1 << 20).unwrap();
    assert_eq!((first.first_seq, first.last_seq, first.count), (1, 4, 4));
    // Not acknowledged: the same batch again.
    let again = q.next_batch(4, 1 << 20).unwrap();
    assert_eq!(again.body, first.body);
    // Body bound: each event is ~170 bytes of JSON.
    let small = q.next_batch(100, 400).unwrap();
    assert_eq!(small.count, 2);
    let events = drain(&mut q, 3, 1 << 20);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
}

#[test]
fn seqs_must_grow() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue(dir.path(), 1 << 20, 1 << 20);
    assert!(q.push(&log(1, 1)));
    assert!(q.push(&log(3, 1)));
    assert!(!q.push(&log(3, 1)));
    assert!(!q.push(&log(2, 1)));
    assert_eq!(q.len(), 2);
}

#[test]
fn overflow_goes_to_the_spool_and_comes_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue(dir.path(), 4096, 1 << 20);
    for seq in 1..=200 {
        q.push(&if seq % 50 == 0 {
            phase(seq)
        } else {
            log(seq, 200)
        });
        assert!(
            q.memory_bytes() <= 4096 + 400,
            "memory {}",
            q.memory_bytes()
        );
    }
    let files = std::fs::read_dir(dir.path().join("spool")).unwrap().count();
    assert!(files >= 5, "only {files} spool files");
    let events = drain(&mut q, 64, 1 << 20);
    let ranges = assert_accounted(&events, 200);
    assert!(ranges.is_empty(), "nothing may be dropped: {ranges:?}");
    assert!(q.dropped_ranges().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
        0
    );
}

#[test]
fn a_full_spool_drops_oldest_logs_but_keeps_phases() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue(dir.path(), 4096, 16 * 1024);
    let n = 2000;
    for seq in 1..=n {
        q.push(&if seq % 100 == 1 {
            phase(seq)
        } else {
            log(seq, 200)
        });
        assert!(
            q.memory_bytes() <= 4096 + 4096,
            "memory {}",
            q.memory_bytes()
        );
    }
    let events = drain(&mut q, 256, 1 << 20);
    let ranges = assert_accounted(&events, n);
    assert!(!ranges.is_empty());
    // Every phase made it.
    let phases = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Phase { .. }))
        .count();
    assert_eq!(phases, 20);
    // The newest events survived; the oldest logs went first.
    assert!(
        events
            .iter()
            .any(|e| e.seq == n && matches!(e.kind, EventKind::Log(_)))
    );
    assert!(ranges[0].0 <= 2, "{ranges:?}");
    let report = q.dropped_ranges();
    let reported: u64 = report.iter().map(|r| r.end() - r.start() + 1).sum();
    let in_events: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    assert_eq!(reported, in_events);
}

#[test]
fn without_a_spool_memory_is_bounded_by_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue(dir.path(), 8192, 0);
    for seq in 1..=1000 {
        q.push(&if seq == 500 {
            phase(seq)
        } else {
            log(seq, 300)
        });
        assert!(
            q.memory_bytes() <= 8192 + 1024,
            "memory {}",
            q.memory_bytes()
        );
    }
    let events = drain(&mut q, 1000, 1 << 20);
    assert_accounted(&events, 1000);
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Phase { .. }))
    );
    // Drops were merged into few markers, not one per event.
    let markers = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Dropped { .. }))
        .count();
    assert!(markers <= 3, "{markers} markers");
}

#[test]
fn a_partial_ack_narrows_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue(dir.path(), 1 << 20, 0);
    for seq in 1..=5 {
        q.push(&log(seq, 10));
    }
    // Batch 1..=5 in flight; meanwhile 1..=5 become one marker.
    let batch = q.next_batch(3, 1 << 20).unwrap();
    assert_eq!(batch.last_seq, 3);
    q.drop_in_memory(0);
    assert_eq!(
        q.head.len() + q.tail.len(),
        1,
        "all five merged into one marker"
    );
    q.delivered(3);
    let events = drain(&mut q, 10, 1 << 20);
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0].kind {
        EventKind::Dropped {
            first_seq,
            last_seq,
            ..
        } => assert_eq!((*first_seq, *last_seq), (4, 5)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_event_too_large_for_any_batch_becomes_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue(dir.path(), 1 << 20, 1 << 20);
    q.push(&log(1, 10));
    q.push(&log(2, 5000));
    q.push(&log(3, 10));
    let events = drain(&mut q, 10, 2048);
    assert_accounted(&events, 3);
    assert!(matches!(
        events[1].kind,
        EventKind::Dropped {
            first_seq: 2,
            last_seq: 2,
            ..
        }
    ));
}

fn ranges_of(events: &[Event]) -> Vec<(u64, u64, u64)> {
    events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Dropped {
                first_seq,
                last_seq,
                ..
            } => (e.seq, *first_seq, *last_seq),
            _ => (e.seq, 0, 0),
        })
        .collect()
}

#[test]
fn a_ranged_marker_is_split_for_a_host_that_takes_one_seq_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue(dir.path(), 1 << 20, 0);
    q.push(&phase(1));
    for seq in 2..=9 {
        q.push(&log(seq, 10));
    }
    q.push(&phase(10));
    q.delivered(1);
    q.drop_in_memory(0);
    // Front: Dropped 2..=9 at seq 9, then the phase.
    assert!(q.fill_gap(1, 3));
    let events = drain(&mut q, 100, 1 << 20);
    assert_eq!(
        ranges_of(&events),
        vec![(2, 2, 2), (3, 3, 3), (4, 4, 4), (9, 5, 9), (10, 0, 0)]
    );
}

#[test]
fn seqs_never_queued_are_filled_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = queue(dir.path(), 1 << 20, 0);
    q.push(&log(1, 10));
    q.push(&log(5, 10));
    q.delivered(1);
    assert!(q.fill_gap(1, 100));
    assert!(!q.fill_gap(1, 100), "nothing left to fill");
    let events = drain(&mut q, 100, 1 << 20);
    assert_eq!(
        ranges_of(&events),
        vec![(2, 2, 2), (3, 3, 3), (4, 4, 4), (5, 0, 0)]
    );
    assert_eq!(q.dropped_ranges(), vec![2..=4]);
}
