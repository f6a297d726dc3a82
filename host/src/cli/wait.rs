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

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::jobs::JobManager;
use crate::mcp::progress::describe;
use crate::model::{JobRecord, LogSelector};

use super::exit::CliError;
use super::jobs::engine_running;
use super::when::duration;

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

/// How often the terminal line's elapsed time is redrawn.
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
        .map(|which| LiveOutput::new(which, display.terminal()));
    let mut record = jobs.get(job_id)?;
    display.show(&record, true);
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
            let step = jobs.wait(job_id, tick, |r| display.show(r, true));
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
        display.show(&record, false);
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
        display.around(|| write_stdout(&lines))
    }

    fn flush_partial(&mut self, display: &mut Display) -> Result<(), CliError> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let mut rest = std::mem::take(&mut self.partial);
        rest.push(b'\n');
        display.around(|| write_stdout(&rest))
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(CliError::Output)
}

/// The status display on stderr: at a terminal an indicatif spinner line
/// (its own ticker redraws the elapsed time), elsewhere one plain line per
/// change.
struct Display {
    show: bool,
    /// The status line, at a terminal.
    bar: Option<ProgressBar>,
    last: String,
}

impl Display {
    fn new(show: bool) -> Self {
        let bar = (show && std::io::stderr().is_terminal()).then(|| {
            // `wide_msg` cuts a long status to the terminal's width, so the
            // line never wraps and one clear removes it.
            let style = ProgressStyle::with_template("{wide_msg} [{took}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner())
                .with_key(
                    "took",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&duration(state.elapsed().as_secs_f64()));
                    },
                );
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style);
            bar
        });
        Display {
            show,
            bar,
            last: String::new(),
        }
    }

    /// Whether the status line is drawn in place (output then comes in whole lines).
    fn terminal(&self) -> bool {
        self.bar.is_some()
    }

    /// Shows the record; `changed` says the manager reported a change.
    fn show(&mut self, record: &JobRecord, changed: bool) {
        if !self.show {
            return;
        }
        let line = describe(record);
        if let Some(bar) = &self.bar {
            if line != self.last {
                bar.set_message(line.clone());
            }
            // Ticking (which redraws the elapsed time) starts with a message to show.
            if self.last.is_empty() {
                bar.enable_steady_tick(TICK);
            }
        } else if changed && line != self.last {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
        self.last = line;
    }

    /// Runs `print` with the status line taken off the terminal, then
    /// draws it again below what was printed.
    fn around<R>(&self, print: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Takes the status line away: the caller's summary line follows.
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
