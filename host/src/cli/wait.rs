//! Watching a job at a terminal: its output live on stdout, a progress
//! display on stderr.
//!
//! On a terminal one status line is redrawn in place (state, phase,
//! percent, message, elapsed time) below the job's output, which then
//! arrives in whole lines so the status line never splits one; otherwise
//! each change is printed once as a line and the output passes through as
//! it comes, so logs of scripted runs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::jobs::JobManager;
use crate::mcp::progress::describe;
use crate::model::{JobRecord, LogSelector};

use super::exit::CliError;
use super::jobs::engine_running;

/// How a wait ended.
pub enum WaitEnd {
    /// The job is final.
    Final(JobRecord),
    /// The person pressed Ctrl-C; the job as it was then.
    Interrupted(JobRecord),
    /// No engine runs the job (no server owns the data directory); the
    /// job as it was then. Only when [`Watch::needs_engine`].
    Undriven(JobRecord),
}

/// What to show while waiting.
#[derive(Clone, Copy)]
pub struct Watch {
    /// The progress display on stderr (not with `--quiet`).
    pub progress: bool,
    /// The job's output on stdout as it is written, from this log.
    pub output: Option<LogSelector>,
    /// Stop with [`WaitEnd::Undriven`] when no engine runs the job,
    /// rather than wait for one to start.
    pub needs_engine: bool,
}

/// How often the terminal line is redrawn while nothing changes.
const TICK: Duration = Duration::from_secs(1);
/// How often new output is looked for while it is shown live.
const OUTPUT_TICK: Duration = Duration::from_millis(250);
/// How often a watch that needs an engine checks that one runs.
const ENGINE_CHECK: Duration = Duration::from_secs(2);
/// Bytes per log read.
const LOG_CHUNK: usize = 1 << 20;

/// Waits until the job is final, Ctrl-C, or (with `needs_engine`) no
/// engine runs it, showing what `watch` asks for. When it returns
/// [`WaitEnd::Final`], every byte of the chosen log has been printed.
pub async fn until_final(
    jobs: &JobManager,
    job_id: &str,
    watch: Watch,
) -> Result<WaitEnd, CliError> {
    let mut display = Display::new(watch.progress);
    let mut output = watch
        .output
        .map(|which| LiveOutput::new(which, display.terminal));
    let start = Instant::now();
    let mut record = jobs.get(job_id)?;
    display.show(&record, start.elapsed(), true);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let tick = if output.is_some() { OUTPUT_TICK } else { TICK };
    // Checked at once (after printing the output there is), then now and then.
    let mut engine_checked: Option<Instant> = None;
    while !record.state.is_final() {
        if let Some(out) = &mut output {
            out.pump(jobs, job_id, &mut display).await?;
        }
        if watch.needs_engine && engine_checked.is_none_or(|t| t.elapsed() >= ENGINE_CHECK) {
            engine_checked = Some(Instant::now());
            if !driven(jobs)? {
                if let Some(out) = &mut output {
                    out.flush_partial(&mut display)?;
                }
                display.finish();
                return Ok(WaitEnd::Undriven(jobs.get(job_id)?));
            }
        }
        let stepped = {
            let step = jobs.wait(job_id, tick, |r| display.show(r, start.elapsed(), true));
            tokio::select! {
                r = step => Some(r),
                _ = &mut interrupt => None,
            }
        };
        match stepped {
            Some(r) => record = r?,
            None => {
                if let Some(out) = &mut output {
                    out.flush_partial(&mut display)?;
                }
                display.finish();
                return Ok(WaitEnd::Interrupted(jobs.get(job_id)?));
            }
        }
        display.show(&record, start.elapsed(), false);
    }
    if let Some(out) = &mut output {
        out.drain(jobs, job_id, &mut display).await?;
    }
    display.finish();
    Ok(WaitEnd::Final(record))
}

/// Whether an engine runs this data directory's jobs: this process's, or
/// a server's that holds `host.lock`.
pub fn driven(jobs: &JobManager) -> Result<bool, CliError> {
    Ok(jobs.runs_engine() || engine_running(jobs.store())?)
}

/// The job's log as it grows, copied to stdout.
struct LiveOutput {
    which: LogSelector,
    cursor: u64,
    /// At a terminal: the start of a line not yet ended, held back so the
    /// status line is never drawn into the middle of it.
    partial: Vec<u8>,
    whole_lines: bool,
}

impl LiveOutput {
    fn new(which: LogSelector, whole_lines: bool) -> Self {
        LiveOutput {
            which,
            cursor: 0,
            partial: Vec::new(),
            whole_lines,
        }
    }

    /// Prints what was appended since the last call; true when the log is
    /// complete (the job is final and everything was read).
    async fn pump(
        &mut self,
        jobs: &JobManager,
        job_id: &str,
        display: &mut Display,
    ) -> Result<bool, CliError> {
        loop {
            let (id, which, cursor) = (job_id.to_string(), self.which, self.cursor);
            let slice = jobs
                .blocking(move |j| j.read_log(&id, which, cursor, LOG_CHUNK))
                .await??;
            self.cursor = slice.next_cursor;
            if !slice.data.is_empty() {
                self.print(&slice.data, display)?;
            }
            if slice.complete {
                return Ok(true);
            }
            if slice.data.is_empty() {
                return Ok(false);
            }
        }
    }

    /// Prints the rest of a final job's log, and any unfinished last line.
    async fn drain(
        &mut self,
        jobs: &JobManager,
        job_id: &str,
        display: &mut Display,
    ) -> Result<(), CliError> {
        // A final job's log is complete once read to its end; the bound
        // only guards against a store that keeps saying otherwise.
        for _ in 0..1024 {
            if self.pump(jobs, job_id, display).await? {
                break;
            }
        }
        self.flush_partial(display)
    }

    fn print(&mut self, bytes: &[u8], display: &mut Display) -> Result<(), CliError> {
        if !self.whole_lines {
            return write_stdout(bytes);
        }
        self.partial.extend_from_slice(bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let lines: Vec<u8> = self.partial.drain(..=end).collect();
        display.clear();
        write_stdout(&lines)?;
        display.redraw();
        Ok(())
    }

    fn flush_partial(&mut self, display: &mut Display) -> Result<(), CliError> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let mut rest = std::mem::take(&mut self.partial);
        rest.push(b'\n');
        display.clear();
        write_stdout(&rest)?;
        display.redraw();
        Ok(())
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(CliError::Output)
}

struct Display {
    show: bool,
    terminal: bool,
    last: String,
    /// The status line as last drawn (with its elapsed time).
    drawn: Option<String>,
}

impl Display {
    fn new(show: bool) -> Self {
        Display {
            show,
            terminal: show && std::io::stderr().is_terminal(),
            last: String::new(),
            drawn: None,
        }
    }

    /// Shows the record; `changed` says the manager reported a change (a
    /// plain tick only redraws the elapsed time on a terminal).
    fn show(&mut self, record: &JobRecord, elapsed: Duration, changed: bool) {
        if !self.show {
            return;
        }
        let line = describe(record);
        if self.terminal {
            let secs = elapsed.as_secs();
            self.drawn = Some(format!("{line} [{}:{:02}]", secs / 60, secs % 60));
            self.redraw();
        } else if changed && line != self.last {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
        self.last = line;
    }

    /// Takes the status line off the terminal (output is about to go there).
    fn clear(&mut self) {
        if self.terminal && self.drawn.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }

    /// Draws the status line again.
    fn redraw(&mut self) {
        if let Some(line) = &self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        }
    }

    fn finish(&mut self) {
        if self.terminal && self.drawn.take().is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}
