//! The last lines of a job's output, for `get_job_status`.
//!
//! A finished job's guest sent bounded tails with its result; those are the
//! truth. A live job's are read from the end of its stored logs.

use delegate_proto::LogStream;

use crate::jobs::JobManager;
use crate::model::{JobRecord, LogSelector, LogSlice};

use super::RecentOutput;

/// How many lines of each stream a status shows.
pub const LINES: usize = 10;
/// How many bytes from the end of a live log are looked at.
const TAIL_BYTES: usize = 4096;

/// The recent output of `record`, when there is any.
pub fn output(jobs: &JobManager, record: &JobRecord) -> Option<RecentOutput> {
    if let Some(result) = &record.result {
        return Some(RecentOutput {
            stdout: last_lines(&result.output.stdout.text, LINES),
            stderr: last_lines(&result.output.stderr.text, LINES),
        });
    }
    let streams = [LogStream::Stdout, LogStream::Stderr].map(LogSelector::Stream);
    let [stdout, stderr] = jobs.read_log_tails(&record.id, streams, TAIL_BYTES).ok()?;
    Some(RecentOutput {
        stdout: last_lines_of(&stdout),
        stderr: last_lines_of(&stderr),
    })
}

/// The last lines of a slice read from the end of a log.
fn last_lines_of(slice: &LogSlice) -> String {
    let text = String::from_utf8_lossy(&slice.data);
    // Reading from the middle of the log: the first line is likely partial.
    let text = if slice.start > 0 {
        text.split_once('\n').map(|(_, rest)| rest).unwrap_or("")
    } else {
        &text
    };
    last_lines(text, LINES)
}

/// The last `n` lines of `text`, without a trailing newline.
pub fn last_lines(text: &str, n: usize) -> String {
    let trimmed = text.trim_end_matches('\n');
    let mut lines: Vec<&str> = trimmed.rsplit('\n').take(n).collect();
    lines.reverse();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }
}
