//! One output stream's reader thread.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use delegate_proto::{LogStream, OutputTail};
use nix::errno::Errno;

use super::{Chunker, Tail};
use crate::redact::StreamRedactor;
use crate::report::Reporter;

/// Size of one read. Large reads mean fewer syscalls and fewer, larger
/// log chunks.
const READ_SIZE: usize = 128 * 1024;
/// Pipe buffer requested from the kernel, so a fast writer blocks less often.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Sees the redacted bytes of a stream as they pass (the Claude parser).
pub type Observer = Box<dyn FnMut(&[u8]) + Send>;

/// What a finished pump hands back.
#[derive(Debug)]
pub struct PumpResult {
    /// The bounded tail.
    pub tail: OutputTail,
    /// Why the log file is incomplete, if it is.
    pub log_error: Option<String>,
}

/// Everything one stream's thread needs.
pub struct Pump {
    /// Which stream.
    pub stream: LogStream,
    /// The full (redacted) log.
    pub log: File,
    /// Tail size in bytes.
    pub tail_bytes: usize,
    /// This stream's redactor.
    pub redactor: StreamRedactor,
    /// Where log chunks go.
    pub reporter: Arc<Reporter>,
    /// Bytes so far, for heartbeats.
    pub counter: Arc<AtomicU64>,
    /// Optional observer of the bytes.
    pub observer: Option<Observer>,
    /// True when the redactor must run (there are secrets).
    pub redact: bool,
}

struct State {
    log: Option<File>,
    log_error: Option<String>,
    tail: Tail,
    chunker: Chunker,
    reporter: Arc<Reporter>,
    counter: Arc<AtomicU64>,
    observer: Option<Observer>,
    chunks: bool,
}

impl Pump {
    /// Reads `reader` to its end (call it on a thread of its own).
    pub fn run_blocking(self, mut reader: File) -> PumpResult {
        // Best effort: a larger pipe lets the agent write bigger bursts.
        // SAFETY: fcntl on an fd we own, with an integer argument.
        unsafe {
            libc::fcntl(reader.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
        }
        let Pump {
            stream,
            log,
            tail_bytes,
            mut redactor,
            reporter,
            counter,
            observer,
            redact,
        } = self;
        let mut st = State {
            log: Some(log),
            log_error: None,
            tail: Tail::new(tail_bytes),
            chunker: Chunker::new(stream),
            chunks: reporter.wants_logs(),
            reporter,
            counter,
            observer,
        };
        // Nothing needs the bytes in memory: move them to the log inside
        // the kernel and read the tail back at the end.
        let spliced_to_eof =
            !redact && st.observer.is_none() && !st.chunks && st.splice_to_log(&reader);
        let mut clean = Vec::new();
        if !spliced_to_eof {
            let mut buf = vec![0u8; READ_SIZE];
            clean.reserve(READ_SIZE + 1024);
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("reading {}: {e}", stream.as_str());
                        break;
                    }
                };
                if redact {
                    clean.clear();
                    redactor.push(&buf[..n], &mut clean);
                    st.process(&clean);
                } else {
                    st.process(&buf[..n]);
                }
            }
        }
        clean.clear();
        redactor.finish(&mut clean);
        st.process(&clean);
        if st.chunks
            && let Some(chunk) = st.chunker.finish()
        {
            st.reporter.log(chunk);
        }
        if let Some(mut log) = st.log.take()
            && let Err(e) = log.flush()
        {
            st.log_error.get_or_insert(e.to_string());
        }
        PumpResult {
            tail: st.tail.to_output(),
            log_error: st.log_error,
        }
    }
}

impl State {
    /// Splices the stream into the log until end of file (returns true) or
    /// until splicing fails (returns false: the caller goes on reading).
    fn splice_to_log(&mut self, reader: &File) -> bool {
        let Some(log) = &self.log else { return false };
        let mut moved: u64 = 0;
        let mut failed = None;
        let eof = loop {
            // SAFETY: both descriptors are open for the whole call; null
            // offsets mean "the descriptors' own positions".
            let n = unsafe {
                libc::splice(
                    reader.as_raw_fd(),
                    std::ptr::null_mut(),
                    log.as_raw_fd(),
                    std::ptr::null_mut(),
                    PIPE_SIZE as usize,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                )
            };
            match n {
                0 => break true,
                n if n > 0 => {
                    moved += n as u64;
                    self.counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                _ => match Errno::last() {
                    Errno::EINTR => {}
                    // The log's file system cannot splice: read and write.
                    Errno::EINVAL => break false,
                    e => {
                        failed = Some(e);
                        break false;
                    }
                },
            }
        };
        if moved > 0 {
            let keep = moved.min(self.tail.capacity() as u64);
            let mut last = vec![0u8; keep as usize];
            let read = self
                .log
                .as_ref()
                .map(|f| f.read_exact_at(&mut last, moved - keep));
            match read {
                Some(Ok(())) => self.tail.seed(&last, moved),
                _ => self.tail.seed(&[], moved),
            }
        }
        if let Some(e) = failed {
            // A full disk must not stop the job: reading goes on, the tail
            // and the stream still carry the output.
            tracing::warn!("writing log: {e}");
            self.log_error = Some(e.to_string());
            self.log = None;
        }
        eof
    }

    fn process(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(log) = &mut self.log
            && let Err(e) = log.write_all(bytes)
        {
            // A full disk must not stop the job; the tail and the stream
            // still carry the output, and the result says the log is short.
            tracing::warn!("writing log: {e}");
            self.log_error = Some(e.to_string());
            self.log = None;
        }
        self.tail.push(bytes);
        self.counter
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if let Some(observe) = &mut self.observer {
            observe(bytes);
        }
        if self.chunks
            && let Some(chunk) = self.chunker.push(bytes)
        {
            self.reporter.log(chunk);
        }
    }
}
