//! Each job's egress connection log: `logs/<id>/egress.jsonl`, one JSON
//! line per connection the gateway allowed or denied.
//!
//! Unlike the output logs this file is not bounded by a length committed in
//! SQLite: lines are appended with `O_APPEND` in one `write`, each a whole
//! record, so a crash loses at most the line being written and a reader
//! skips a torn last line. It goes with the job's other logs when the job
//! is pruned.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::{Store, StoreError, make_private_dir};

/// The file name inside the job's log directory.
const EGRESS_LOG: &str = "egress.jsonl";
/// Most bytes read back from one job's connection log.
pub const MAX_EGRESS_LOG_READ: u64 = 16 * 1024 * 1024;

impl Store {
    fn egress_path(&self, job_id: &str) -> PathBuf {
        self.logs_dir(job_id).join(EGRESS_LOG)
    }

    /// Appends one record (a line without its newline) to the job's
    /// connection log.
    pub fn append_egress(&self, job_id: &str, line: &str) -> Result<(), StoreError> {
        let dir = self.logs_dir(job_id);
        make_private_dir(&dir)?;
        let path = self.egress_path(job_id);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut record = Vec::with_capacity(line.len() + 1);
        record.extend_from_slice(line.trim_end_matches('\n').as_bytes());
        record.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        file.write_all(&record).map_err(io)
    }

    /// The job's connection log as lines, oldest first; whole lines only,
    /// the last [`MAX_EGRESS_LOG_READ`] bytes at most. A job that never
    /// connected has none.
    pub fn read_egress(&self, job_id: &str) -> Result<Vec<String>, StoreError> {
        let path = self.egress_path(job_id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let start = bytes.len().saturating_sub(MAX_EGRESS_LOG_READ as usize);
        let text = String::from_utf8_lossy(&bytes[start..]);
        let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        // The last piece is empty after a complete line, or a torn write.
        lines.pop();
        if start > 0 && !lines.is_empty() {
            // The first piece starts mid-line.
            lines.remove(0);
        }
        Ok(lines)
    }
}
