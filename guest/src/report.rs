//! The Reporter: the one place events are numbered and handed out.
//!
//! Sequence numbers start at 1 and count the events that at least one sink
//! takes, so each sink sees strictly increasing numbers and the host (which
//! takes a superset of what stdout takes) sees no gaps. Every string an event
//! carries passes through the secret redactor here; log chunks arrive
//! already redacted by their stream, because a secret can span two chunks.

use std::io::Write;
use std::sync::Mutex;

use delegate_proto::outcome::ResultLine;
use delegate_proto::{Event, EventKind, JobResult, LogChunk, Phase, StatusMode};

use crate::redact::Secrets;

/// Where events go besides stdout: the callback uplink. (`Any` lets the
/// pipeline take the uplink back at the end to flush it.)
pub trait EventSink: Send + std::any::Any {
    /// Takes one sequenced event. Must not block.
    fn send(&self, event: Event);
}

impl EventSink for crate::callback::Uplink {
    fn send(&self, event: Event) {
        crate::callback::Uplink::send(self, event)
    }
}

/// True when `mode` shows events of this kind on stdout.
pub fn shown_on_stdout(mode: StatusMode, kind: &EventKind) -> bool {
    match kind {
        EventKind::Phase { .. } => true,
        EventKind::Progress { .. } | EventKind::Heartbeat { .. } | EventKind::Dropped { .. } => {
            mode >= StatusMode::Detailed
        }
        EventKind::Log(_) => mode == StatusMode::Streaming,
    }
}

/// True when the host gets events of this kind: what stdout shows, plus
/// heartbeats always, because they keep the job's lease.
pub fn sent_to_host(mode: StatusMode, kind: &EventKind) -> bool {
    matches!(kind, EventKind::Heartbeat { .. }) || shown_on_stdout(mode, kind)
}

/// Numbers events, filters them by status mode and fans them out.
pub struct Reporter {
    mode: StatusMode,
    secrets: Secrets,
    summary: bool,
    inner: Mutex<Inner>,
}

struct Inner {
    next_seq: u64,
    stdout: Option<Box<dyn Write + Send>>,
    line: Vec<u8>,
    host: Option<Box<dyn EventSink>>,
}

impl Reporter {
    /// A reporter with no sinks yet.
    pub fn new(mode: StatusMode, secrets: Secrets) -> Self {
        Reporter {
            mode,
            secrets,
            summary: false,
            inner: Mutex::new(Inner {
                next_seq: 1,
                stdout: None,
                line: Vec::new(),
                host: None,
            }),
        }
    }

    /// Prints events as JSON lines to `out`.
    pub fn with_stdout(self, out: Box<dyn Write + Send>) -> Self {
        self.lock().stdout = Some(out);
        self
    }

    /// Sends events to the host as well.
    pub fn with_host(self, sink: Box<dyn EventSink>) -> Self {
        self.lock().host = Some(sink);
        self
    }

    /// Writes a line for people on stderr for phases, progress and the result.
    pub fn with_summary(mut self, on: bool) -> Self {
        self.summary = on;
        self
    }

    /// The status mode.
    pub fn mode(&self) -> StatusMode {
        self.mode
    }

    /// The job's secrets.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// True when log chunks go anywhere (so building them is worth it).
    pub fn wants_logs(&self) -> bool {
        self.mode == StatusMode::Streaming
    }

    /// True when heartbeats go anywhere.
    pub fn wants_heartbeats(&self) -> bool {
        let inner = self.lock();
        (inner.stdout.is_some() && self.mode >= StatusMode::Detailed) || inner.host.is_some()
    }

    /// Reports entering a phase.
    pub fn phase(&self, phase: Phase, message: impl Into<String>) {
        let message = clipped(self.secrets.redact_str(&message.into()));
        if self.summary {
            // One write per line: stderr is unbuffered.
            let line = format!("delegate-guest: [{}] {message}\n", phase.as_str());
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        self.emit(EventKind::Phase {
            phase,
            message: Some(message),
        });
    }

    /// Reports progress within the running phase.
    pub fn progress(&self, percent: Option<f64>, message: impl Into<String>) {
        let message = clipped(self.secrets.redact_str(&message.into()));
        // The host refuses a batch with a percent outside 0..=100.
        let percent = percent
            .filter(|p| p.is_finite())
            .map(|p| p.clamp(0.0, 100.0));
        if self.summary && self.mode >= StatusMode::Detailed {
            let line = format!("delegate-guest:   {message}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        self.emit(EventKind::Progress { percent, message });
    }

    /// Reports a piece of output (already redacted).
    pub fn log(&self, chunk: LogChunk) {
        self.emit(EventKind::Log(chunk));
    }

    /// Reports that the guest is alive.
    pub fn heartbeat(&self, stdout_bytes: u64, stderr_bytes: u64) {
        self.emit(EventKind::Heartbeat {
            stdout_bytes,
            stderr_bytes,
        });
    }

    /// Numbers and delivers an event; returns its sequence number, or `None`
    /// when no sink takes it.
    pub fn emit(&self, kind: EventKind) -> Option<u64> {
        let kind = match kind {
            EventKind::Progress { percent, message } => EventKind::Progress {
                percent,
                message: self.secrets.redact_str(&message),
            },
            EventKind::Dropped {
                first_seq,
                last_seq,
                reason,
            } => EventKind::Dropped {
                first_seq,
                last_seq,
                reason: self.secrets.redact_str(&reason),
            },
            other => other,
        };
        let mut inner = self.lock();
        let to_stdout = inner.stdout.is_some() && shown_on_stdout(self.mode, &kind);
        let to_host = inner.host.is_some() && sent_to_host(self.mode, &kind);
        if !to_stdout && !to_host {
            return None;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let event = Event {
            seq,
            time_ms: delegate_proto::clock::now_ms(),
            kind,
        };
        if to_stdout {
            let Inner { stdout, line, .. } = &mut *inner;
            line.clear();
            if serde_json::to_writer(&mut *line, &event).is_ok() {
                line.push(b'\n');
                write_line(stdout, line);
            }
        }
        if to_host && let Some(host) = &inner.host {
            host.send(event);
        }
        Some(seq)
    }

    /// Stops sending to the host and hands its sink back (to flush it).
    pub fn take_host(&self) -> Option<Box<dyn EventSink>> {
        self.lock().host.take()
    }

    /// Prints the result: the last line on stdout, a summary on stderr.
    pub fn print_result(&self, result: &JobResult) {
        let mut inner = self.lock();
        let Inner { stdout, line, .. } = &mut *inner;
        line.clear();
        if stdout.is_some() && serde_json::to_writer(&mut *line, &ResultLine::new(result)).is_ok() {
            line.push(b'\n');
            write_line(stdout, line);
        }
        if self.summary {
            crate::say::stderr_text(format_args!("{}", summary(result)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the data usable: it is only
        // a counter and writers.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A message cut to what the host takes (the rest of a line for people).
fn clipped(message: String) -> String {
    use delegate_proto::event_check::{MAX_EVENT_MESSAGE_BYTES, clip};
    if message.len() <= MAX_EVENT_MESSAGE_BYTES {
        return message;
    }
    clip(&message, MAX_EVENT_MESSAGE_BYTES).to_string()
}

fn write_line(stdout: &mut Option<Box<dyn Write + Send>>, line: &[u8]) {
    let Some(out) = stdout else { return };
    if let Err(e) = out.write_all(line).and_then(|_| out.flush()) {
        // The reader went away (EPIPE); the job goes on, the host (if any)
        // still gets everything.
        tracing::warn!("stdout is gone ({e}); no more events there");
        *stdout = None;
    }
}

/// The human summary of a result.
pub fn summary(r: &JobResult) -> String {
    let mut s = format!(
        "delegate-guest: result: {} after {:.1}s",
        status_word(r),
        r.duration_ms as f64 / 1000.0
    );
    match (&r.exit_code, &r.signal) {
        (Some(code), _) => s.push_str(&format!(", exit code {code}")),
        (None, Some(sig)) => s.push_str(&format!(", killed by {sig}")),
        (None, None) => {}
    }
    s.push('\n');
    if let Some(e) = &r.error {
        s.push_str(&format!("delegate-guest: error: {e}\n"));
    }
    if let Some(a) = &r.agent_result {
        s.push_str(&format!(
            "delegate-guest: claude: is_error={} turns={} cost=${:.4}\n",
            a.is_error,
            a.num_turns.map_or("?".into(), |n| n.to_string()),
            a.total_cost_usd.unwrap_or(0.0)
        ));
    }
    let bytes: u64 = r.artifacts.iter().map(|a| a.size).sum();
    if !r.artifacts.is_empty() {
        s.push_str(&format!(
            "delegate-guest: artifacts: {} files, {bytes} bytes\n",
            r.artifacts.len()
        ));
    }
    s.push_str(&format!(
        "delegate-guest: output: stdout {} bytes, stderr {} bytes\n",
        r.output.stdout.total_bytes, r.output.stderr.total_bytes
    ));
    s
}

fn status_word(r: &JobResult) -> &'static str {
    match r.status {
        delegate_proto::ResultStatus::Success => "success",
        delegate_proto::ResultStatus::Failed => "failed",
        delegate_proto::ResultStatus::Timeout => "timeout",
        delegate_proto::ResultStatus::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use delegate_proto::LogStream;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Capture {
        fn events(&self) -> Vec<Event> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    #[derive(Clone, Default)]
    struct Host(Arc<Mutex<Vec<Event>>>);
    impl EventSink for Host {
        fn send(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn drive(r: &Reporter) {
        r.phase(Phase::Running, "go");
        r.progress(None, "tool: Bash");
        r.heartbeat(1, 2);
        r.log(LogChunk::new(LogStream::Stdout, 0, b"hi"));
        r.phase(Phase::Done, "ok");
    }

    #[test]
    fn modes_filter_and_seq_starts_at_one() {
        for (mode, expected) in [
            (StatusMode::Simple, vec!["phase", "phase"]),
            (
                StatusMode::Detailed,
                vec!["phase", "progress", "heartbeat", "phase"],
            ),
            (
                StatusMode::Streaming,
                vec!["phase", "progress", "heartbeat", "log", "phase"],
            ),
        ] {
            let out = Capture::default();
            let r = Reporter::new(mode, Secrets::default()).with_stdout(Box::new(out.clone()));
            drive(&r);
            let events = out.events();
            let kinds: Vec<String> = events
                .iter()
                .map(|e| {
                    serde_json::to_value(e).unwrap()["type"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(kinds, expected, "{mode:?}");
            let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=expected.len() as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn host_always_gets_heartbeats_and_sees_no_gaps() {
        let out = Capture::default();
        let host = Host::default();
        let r = Reporter::new(StatusMode::Simple, Secrets::default())
            .with_stdout(Box::new(out.clone()))
            .with_host(Box::new(host.clone()));
        assert!(r.wants_heartbeats());
        drive(&r);
        let host_seqs: Vec<u64> = host.0.lock().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(host_seqs, vec![1, 2, 3]);
        let stdout_seqs: Vec<u64> = out.events().iter().map(|e| e.seq).collect();
        assert_eq!(stdout_seqs, vec![1, 3]);
        assert!(r.take_host().is_some());
        r.heartbeat(0, 0);
        assert_eq!(host.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn messages_are_redacted() {
        let out = Capture::default();
        let r = Reporter::new(StatusMode::Detailed, Secrets::new(["sekret"]))
            .with_stdout(Box::new(out.clone()));
        r.phase(Phase::Running, "using sekret");
        r.progress(Some(5.0), "tool: echo sekret");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("sekret"), "{text}");
        assert_eq!(text.matches("***").count(), 2);
    }

    #[test]
    fn no_sink_means_no_sequence_number() {
        let r = Reporter::new(StatusMode::Streaming, Secrets::default());
        assert_eq!(
            r.emit(EventKind::Progress {
                percent: None,
                message: "x".into()
            }),
            None
        );
        assert!(!r.wants_heartbeats());
    }
}
