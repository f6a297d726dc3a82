//! Events the guest sends while a job runs (and prints in standalone mode).
//!
//! Each event carries a sequence number that starts at 1 and grows by one, so
//! the host can de-duplicate retried batches and notice gaps; what the guest
//! had to drop is itself reported as a [`EventKind::Dropped`] range.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One event. Sent by the guest in [`EventBatch`]es to `POST events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1-based, strictly increasing per job.
    pub seq: u64,
    /// When it happened, milliseconds since the Unix epoch (guest clock).
    pub time_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The job entered a phase.
    Phase {
        /// The phase.
        phase: Phase,
        /// A line for people, e.g. "running bash".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Progress within the running phase (`detailed` and `streaming`).
    Progress {
        /// Percent done, when the agent says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<f64>,
        /// What the agent is doing, e.g. "tool: Bash".
        message: String,
    },
    /// A piece of the agent's output (`streaming`).
    Log(LogChunk),
    /// The guest is alive (`detailed` and `streaming`; always sent to the
    /// host in callback mode, because it keeps the job's lease).
    Heartbeat {
        /// Bytes of stdout produced so far.
        stdout_bytes: u64,
        /// Bytes of stderr produced so far.
        stderr_bytes: u64,
    },
    /// Events the guest could not deliver and had to drop.
    Dropped {
        /// First dropped sequence number.
        first_seq: u64,
        /// Last dropped sequence number (inclusive).
        last_seq: u64,
        /// Why, e.g. "spool full while host unreachable".
        reason: String,
    },
}

/// The phases of a job inside the guest, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Reading the manifest, setting up the workspace.
    Preparing,
    /// Writing input files.
    Unpacking,
    /// The agent runs.
    Running,
    /// Gathering artifacts.
    Collecting,
    /// Sending artifacts and the result.
    Uploading,
    /// Finished.
    Done,
}

impl Phase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preparing => "preparing",
            Phase::Unpacking => "unpacking",
            Phase::Running => "running",
            Phase::Collecting => "collecting",
            Phase::Uploading => "uploading",
            Phase::Done => "done",
        }
    }
}

/// Which output stream a log chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The agent's standard output.
    Stdout,
    /// The agent's standard error.
    Stderr,
}

impl LogStream {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// A run of output bytes at a byte offset of its stream. Valid UTF-8 travels
/// as `text`, anything else as `base64`, so the host can store the exact
/// bytes and readers of standalone output can read most chunks as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The stream.
    pub stream: LogStream,
    /// Offset of the first byte within the stream (after redaction).
    pub offset: u64,
    /// The bytes, when they are valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The bytes, base64, when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

/// A log chunk whose payload is neither text nor base64, or both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log chunk at {stream}:{offset} must carry exactly one of text and base64 (valid)")]
pub struct LogChunkError {
    /// The chunk's stream name.
    pub stream: &'static str,
    /// The chunk's offset.
    pub offset: u64,
}

impl LogChunk {
    /// Wraps bytes, choosing `text` when they are valid UTF-8.
    pub fn new(stream: LogStream, offset: u64, bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => LogChunk {
                stream,
                offset,
                text: Some(text.to_string()),
                base64: None,
            },
            Err(_) => LogChunk {
                stream,
                offset,
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        }
    }

    /// The bytes the chunk carries.
    pub fn bytes(&self) -> Result<Vec<u8>, LogChunkError> {
        let err = LogChunkError {
            stream: self.stream.as_str(),
            offset: self.offset,
        };
        match (&self.text, &self.base64) {
            (Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|_| err),
            _ => Err(err),
        }
    }
}

/// Body of `POST /v1/jobs/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// Events in sequence order. Retrying a batch is safe.
    pub events: Vec<Event>,
}

/// The host's answer to an event batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsAck {
    /// The highest sequence number the host holds for this job.
    pub highest_seq: u64,
    /// True when the job was cancelled: the guest stops the agent, collects
    /// artifacts and reports a `cancelled` result.
    #[serde(default)]
    pub cancel: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let events = vec![
            Event {
                seq: 1,
                time_ms: 5,
                kind: EventKind::Phase {
                    phase: Phase::Running,
                    message: Some("bash".into()),
                },
            },
            Event {
                seq: 2,
                time_ms: 6,
                kind: EventKind::Progress {
                    percent: Some(50.0),
                    message: "tool: Bash".into(),
                },
            },
            Event {
                seq: 3,
                time_ms: 7,
                kind: EventKind::Log(LogChunk::new(LogStream::Stderr, 10, b"\xff\xfeoops")),
            },
            Event {
                seq: 4,
                time_ms: 8,
                kind: EventKind::Heartbeat {
                    stdout_bytes: 1,
                    stderr_bytes: 2,
                },
            },
            Event {
                seq: 5,
                time_ms: 9,
                kind: EventKind::Dropped {
                    first_seq: 2,
                    last_seq: 3,
                    reason: "spool full".into(),
                },
            },
        ];
        let batch = EventBatch { events };
        let json = serde_json::to_string(&batch).unwrap();
        assert!(json.contains(r#""type":"phase""#), "{json}");
        let back: EventBatch = serde_json::from_str(&json).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn log_chunks_keep_bytes() {
        for bytes in [&b"hello\n"[..], b"\xff\x00\x80", b""] {
            let chunk = LogChunk::new(LogStream::Stdout, 0, bytes);
            assert_eq!(chunk.bytes().unwrap(), bytes);
        }
        assert!(LogChunk::new(LogStream::Stdout, 0, b"ok").text.is_some());
        let bad = LogChunk {
            stream: LogStream::Stdout,
            offset: 0,
            text: Some("a".into()),
            base64: Some("YQ==".into()),
        };
        assert!(bad.bytes().is_err());
    }
}
