//! The rules an [`EventBatch`] must meet before a host stores any of it:
//! each refusal names the field (`events[3].percent`) and the rule, like the
//! manifest's. They bound what one event can make a host keep: a message,
//! a reason, a log chunk's position.

use crate::api::MAX_EVENTS_PER_BATCH;
use crate::event::{Event, EventBatch, EventKind};

/// Longest phase or progress message, in bytes (a line for people; the
/// guest clips longer ones).
pub const MAX_EVENT_MESSAGE_BYTES: usize = 4096;
/// Longest reason of a `dropped` event, in bytes.
pub const MAX_DROPPED_REASON_BYTES: usize = 1024;
/// The largest log offset a chunk may end at: hosts keep offsets in signed
/// 64-bit integers (SQLite's), and no real log gets near it.
pub const MAX_LOG_END: u64 = i64::MAX as u64;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// More events than one batch may hold.
    #[error("a batch of {count} events is over the limit of {limit} events")]
    TooMany {
        /// Events in the batch.
        count: usize,
        /// [`MAX_EVENTS_PER_BATCH`].
        limit: usize,
    },
    /// One field breaks a rule.
    #[error("{field}: {rule}")]
    Field {
        /// The JSON path, e.g. `events[3].percent`.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
}

impl EventBatch {
    /// Checks every event of the batch against the rules above.
    pub fn check(&self) -> Result<(), BatchError> {
        if self.events.len() > MAX_EVENTS_PER_BATCH {
            return Err(BatchError::TooMany {
                count: self.events.len(),
                limit: MAX_EVENTS_PER_BATCH,
            });
        }
        for (i, event) in self.events.iter().enumerate() {
            check_event(event).map_err(|(name, rule)| BatchError::Field {
                field: format!("events[{i}].{name}"),
                rule,
            })?;
        }
        Ok(())
    }
}

/// The field (within the event) and the rule it breaks.
type Refusal = (&'static str, String);

fn check_event(event: &Event) -> Result<(), Refusal> {
    match &event.kind {
        EventKind::Phase { message, .. } => {
            if let Some(m) = message {
                check_len("message", m, MAX_EVENT_MESSAGE_BYTES)?;
            }
        }
        EventKind::Progress { percent, message } => {
            if let Some(p) = percent
                && !(p.is_finite() && (0.0..=100.0).contains(p))
            {
                return Err(("percent", format!("{p} is not a number from 0 to 100")));
            }
            check_len("message", message, MAX_EVENT_MESSAGE_BYTES)?;
        }
        EventKind::Log(chunk) => {
            let bytes = chunk.bytes().map_err(|e| ("text", e.to_string()))?;
            match chunk.offset.checked_add(bytes.len() as u64) {
                Some(end) if end <= MAX_LOG_END => {}
                _ => {
                    return Err((
                        "offset",
                        format!(
                            "{} plus the chunk's {} bytes ends past the largest log offset, \
                             {MAX_LOG_END}",
                            chunk.offset,
                            bytes.len()
                        ),
                    ));
                }
            }
        }
        EventKind::Heartbeat { .. } => {}
        EventKind::Dropped {
            first_seq,
            last_seq,
            reason,
        } => {
            // A dropped run takes the slot of its last event (see the
            // guest's uplink), so it never reaches past its own seq.
            if first_seq > last_seq || *last_seq > event.seq {
                return Err((
                    "last_seq",
                    format!(
                        "the range {first_seq}..={last_seq} must be ordered and end at or \
                         before the event's seq {}",
                        event.seq
                    ),
                ));
            }
            check_len("reason", reason, MAX_DROPPED_REASON_BYTES)?;
        }
    }
    Ok(())
}

fn check_len(name: &'static str, text: &str, limit: usize) -> Result<(), Refusal> {
    if text.len() > limit {
        return Err((
            name,
            format!("{} bytes is over the limit of {limit} bytes", text.len()),
        ));
    }
    Ok(())
}

/// `text` cut to at most `limit` bytes, at a character boundary.
pub fn clip(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LogChunk, LogStream};

    fn batch(kinds: Vec<EventKind>) -> EventBatch {
        EventBatch {
            events: kinds
                .into_iter()
                .enumerate()
                .map(|(i, kind)| Event {
                    seq: i as u64 + 1,
                    time_ms: 0,
                    kind,
                })
                .collect(),
        }
    }

    fn progress(percent: f64) -> EventKind {
        EventKind::Progress {
            percent: Some(percent),
            message: "m".into(),
        }
    }

    fn field(b: &EventBatch) -> String {
        match b.check() {
            Err(BatchError::Field { field, .. }) => field,
            other => panic!("expected a field refusal, got {other:?}"),
        }
    }

    #[test]
    fn percents_are_finite_and_0_to_100() {
        for ok in [0.0, 42.5, 100.0] {
            assert_eq!(batch(vec![progress(ok)]).check(), Ok(()));
        }
        for bad in [-5.0, 1e308, 100.01, f64::NAN, f64::INFINITY] {
            let b = batch(vec![progress(1.0), progress(bad)]);
            assert_eq!(field(&b), "events[1].percent", "{bad}");
        }
    }

    #[test]
    fn messages_and_reasons_are_bounded() {
        let long = "x".repeat(MAX_EVENT_MESSAGE_BYTES + 1);
        let b = batch(vec![EventKind::Progress {
            percent: None,
            message: long.clone(),
        }]);
        assert_eq!(field(&b), "events[0].message");
        let b = batch(vec![EventKind::Phase {
            phase: crate::Phase::Running,
            message: Some(long),
        }]);
        assert_eq!(field(&b), "events[0].message");
        let b = batch(vec![EventKind::Dropped {
            first_seq: 1,
            last_seq: 1,
            reason: "r".repeat(MAX_DROPPED_REASON_BYTES + 1),
        }]);
        let err = b.check().unwrap_err().to_string();
        assert!(
            err.starts_with("events[0].reason: 1025 bytes is over the limit of 1024"),
            "{err}"
        );
    }

    #[test]
    fn dropped_ranges_end_at_their_seq() {
        let dropped = |first_seq, last_seq| EventKind::Dropped {
            first_seq,
            last_seq,
            reason: "spool full".into(),
        };
        assert_eq!(batch(vec![dropped(1, 1)]).check(), Ok(()));
        assert_eq!(field(&batch(vec![dropped(1, 9)])), "events[0].last_seq");
        assert_eq!(field(&batch(vec![dropped(3, 2)])), "events[0].last_seq");
    }

    #[test]
    fn log_chunks_end_within_the_offset_range() {
        let chunk = |offset| EventKind::Log(LogChunk::new(LogStream::Stdout, offset, b"ab"));
        assert_eq!(batch(vec![chunk(MAX_LOG_END - 2)]).check(), Ok(()));
        assert_eq!(
            field(&batch(vec![chunk(MAX_LOG_END - 1)])),
            "events[0].offset"
        );
        assert_eq!(field(&batch(vec![chunk(u64::MAX)])), "events[0].offset");
        let both = EventKind::Log(LogChunk {
            stream: LogStream::Stdout,
            offset: 0,
            text: Some("a".into()),
            base64: Some("YQ==".into()),
        });
        assert_eq!(field(&batch(vec![both])), "events[0].text");
    }

    #[test]
    fn too_many_events_is_its_own_refusal() {
        let b = batch(vec![progress(1.0); MAX_EVENTS_PER_BATCH + 1]);
        let err = b.check().unwrap_err();
        assert!(matches!(err, BatchError::TooMany { .. }));
        assert!(err.to_string().ends_with("limit of 4096 events"), "{err}");
    }

    #[test]
    fn clip_keeps_whole_characters() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("héllo", 3), "hé");
        assert_eq!(clip("ok", 10), "ok");
    }
}
