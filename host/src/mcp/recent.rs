//! The last lines of a job's output, for `get_job_status`.
//!
//! A finished job's guest sent bounded tails with its result; those are the
//! truth. A live job's are read from the end of its stored logs.

use delegate_proto::LogStream;

use crate::jobs::JobManager;
use crate::jobs::model::{JobRecord, LogSelector};

use super::views::RecentOutput;

/// How many lines of each stream a status shows.
pub const LINES: usize = 10;
/// How many bytes from the end of a live log are looked at.
const TAIL_BYTES: u64 = 4096;

/// The recent output of `record`, when there is any.
pub fn output(jobs: &JobManager, record: &JobRecord) -> Option<RecentOutput> {
    if let Some(result) = &record.result {
        return Some(RecentOutput {
            stdout: last_lines(&result.output.stdout.text, LINES),
            stderr: last_lines(&result.output.stderr.text, LINES),
        });
    }
    let stdout = live_tail(jobs, &record.id, LogStream::Stdout)?;
    let stderr = live_tail(jobs, &record.id, LogStream::Stderr).unwrap_or_default();
    Some(RecentOutput { stdout, stderr })
}

fn live_tail(jobs: &JobManager, job_id: &str, stream: LogStream) -> Option<String> {
    let which = LogSelector::Stream(stream);
    let len = stored_log_len(jobs, job_id, stream)?;
    if len == 0 {
        return Some(String::new());
    }
    let start = len.saturating_sub(TAIL_BYTES);
    let slice = jobs
        .read_log(job_id, which, start, TAIL_BYTES as usize)
        .ok()?;
    let text = String::from_utf8_lossy(&slice.data);
    // Reading from the middle of the log: the first line is likely partial.
    let text = if start > 0 {
        text.split_once('\n').map(|(_, rest)| rest).unwrap_or("")
    } else {
        &text
    };
    Some(last_lines(text, LINES))
}

/// The stored length of a log stream.
///
/// host-mcp: the manager has no "length of a log" call yet, so this reads the
/// size of the append-only file at the place HOST-API.md documents
/// (`<data_dir>/logs/<id>/<stream>.log`). Replace with the manager's call
/// once it has one.
fn stored_log_len(jobs: &JobManager, job_id: &str, stream: LogStream) -> Option<u64> {
    if !job_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return None;
    }
    let path = jobs
        .settings()
        .data_dir
        .join("logs")
        .join(job_id)
        .join(format!("{}.log", stream.as_str()));
    std::fs::metadata(path).ok().map(|m| m.len())
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
