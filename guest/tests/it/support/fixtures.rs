//! Helpers shared by the callback tests: fast options, event builders and
//! the accounting check for delivered and dropped sequence numbers.

use std::path::Path;
use std::time::Duration;

use delegate_guest::callback::{CallbackClient, CallbackOptions, RetryPolicy};
use delegate_proto::{
    Event, EventKind, JobResult, LogChunk, LogStream, OutputTails, Phase, ResultStatus,
};

use super::LONG;
use super::host::{JOB_ID, TestHost, token};

pub fn fast_retry(budget: Duration) -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        budget,
    }
}

pub fn opts() -> CallbackOptions {
    CallbackOptions {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
        fetch_retry: fast_retry(LONG),
        upload_retry: fast_retry(LONG),
        result_retry: fast_retry(LONG),
        events_retry_initial: Duration::from_millis(20),
        events_retry_max: Duration::from_millis(200),
        batch_interval: Duration::from_millis(20),
        ..CallbackOptions::default()
    }
}

pub fn client(host: &TestHost, opts: CallbackOptions) -> CallbackClient {
    CallbackClient::new(&host.url(), JOB_ID, token(), opts).unwrap()
}

pub fn log(seq: u64, len: usize) -> Event {
    let text = format!("{seq:08} {}\n", "x".repeat(len.saturating_sub(10)));
    Event {
        seq,
        time_ms: 1,
        kind: EventKind::Log(LogChunk::new(
            LogStream::Stdout,
            seq * 10_000,
            text.as_bytes(),
        )),
    }
}

pub fn phase(seq: u64, phase: Phase) -> Event {
    Event {
        seq,
        time_ms: 1,
        kind: EventKind::Phase {
            phase,
            message: None,
        },
    }
}

pub fn result(status: ResultStatus) -> JobResult {
    JobResult {
        status,
        exit_code: Some(0),
        signal: None,
        duration_ms: 5,
        output: OutputTails::default(),
        artifacts: Vec::new(),
        error: None,
        error_kind: None,
        agent_result: None,
        patch: None,
        turn_patch: None,
    }
}

pub fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// Every seq in 1..=n is held by the host once: as itself or inside one
/// `Dropped` range. Returns the dropped ranges.
pub fn assert_accounted(events: &[Event], n: u64) -> Vec<(u64, u64)> {
    let mut covered = vec![0u32; n as usize + 1];
    let mut ranges = Vec::new();
    for e in events {
        if let EventKind::Dropped {
            first_seq,
            last_seq,
            ..
        } = &e.kind
        {
            for s in *first_seq..=*last_seq {
                covered[s as usize] += 1;
            }
            ranges.push((*first_seq, *last_seq));
        } else {
            covered[e.seq as usize] += 1;
        }
    }
    for (seq, count) in covered.iter().enumerate().skip(1) {
        assert_eq!(*count, 1, "seq {seq} held {count} times");
    }
    ranges
}

pub fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

pub fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}
