//! Waiting for a job at a terminal, with a progress display on stderr.
//!
//! On a terminal one status line is redrawn in place (state, phase,
//! percent, message, elapsed time); otherwise each change is printed once
//! as a line, so logs of scripted runs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::jobs::JobManager;
use crate::mcp::progress::describe;
use crate::model::JobRecord;

use super::exit::CliError;

/// How a wait ended.
pub enum WaitEnd {
    /// The job is final.
    Final(JobRecord),
    /// The person pressed Ctrl-C; the job as it was then.
    Interrupted(JobRecord),
}

/// How often the terminal line is redrawn while nothing changes.
const TICK: Duration = Duration::from_secs(1);

/// Waits until the job is final or Ctrl-C, showing progress on stderr
/// when `show` (not with `--quiet`).
pub async fn until_final(jobs: &JobManager, job_id: &str, show: bool) -> Result<WaitEnd, CliError> {
    let mut display = Display::new(show);
    let start = Instant::now();
    let mut record = jobs.get(job_id)?;
    display.show(&record, start.elapsed(), true);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    while !record.state.is_final() {
        let stepped = {
            let step = jobs.wait(job_id, TICK, |r| display.show(r, start.elapsed(), true));
            tokio::select! {
                r = step => Some(r),
                _ = &mut interrupt => None,
            }
        };
        match stepped {
            Some(r) => record = r?,
            None => {
                display.finish();
                return Ok(WaitEnd::Interrupted(jobs.get(job_id)?));
            }
        }
        display.show(&record, start.elapsed(), false);
    }
    display.finish();
    Ok(WaitEnd::Final(record))
}

struct Display {
    show: bool,
    terminal: bool,
    last: String,
    drawn: bool,
}

impl Display {
    fn new(show: bool) -> Self {
        Display {
            show,
            terminal: std::io::stderr().is_terminal(),
            last: String::new(),
            drawn: false,
        }
    }

    /// Shows the record; `changed` says the manager reported a change (a
    /// plain tick only redraws the elapsed time on a terminal).
    fn show(&mut self, record: &JobRecord, elapsed: Duration, changed: bool) {
        if !self.show {
            return;
        }
        let line = describe(record);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let secs = elapsed.as_secs();
            let _ = write!(err, "\r\x1b[2K{line} [{}:{:02}]", secs / 60, secs % 60);
            let _ = err.flush();
            self.drawn = true;
        } else if changed && line != self.last {
            let _ = writeln!(err, "{line}");
        }
        self.last = line;
    }

    fn finish(&mut self) {
        if self.terminal && self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}
