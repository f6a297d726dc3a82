//! Reading a job's patch (for the MCP resource, `get_job_result` and
//! `delegate-host apply`).

use std::io::Read;
use std::path::PathBuf;

use super::error::JobError;
use super::manager::JobManager;

impl JobManager {
    /// The stored patch file of `job_id`; an error naming why there is none.
    pub fn patch_file(&self, job_id: &str) -> Result<PathBuf, JobError> {
        let record = self.get(job_id)?;
        if let Some(path) = self.store().patch_file(job_id) {
            return Ok(path);
        }
        let why = if record.manifest.repo.is_none() {
            "it was submitted without a repository (repo.path)"
        } else if !record.state.is_final() {
            "it has not finished yet"
        } else {
            "its guest sent none (see the result's error)"
        };
        Err(JobError::InvalidArgument {
            what: format!("job {job_id} has no patch: {why}"),
        })
    }

    /// The stored own patch of follow-up turn `job_id` (against the
    /// previous turn's end); an error naming why there is none.
    pub fn turn_patch_file(&self, job_id: &str) -> Result<PathBuf, JobError> {
        let record = self.get(job_id)?;
        if let Some(path) = self.store().turn_patch_file(job_id) {
            return Ok(path);
        }
        let why = if record.session_id.is_none() {
            "it is not a follow-up turn (its patch is against the base)"
        } else if record.manifest.repo.is_none() {
            "it was submitted without a repository"
        } else if !record.state.is_final() {
            "it has not finished yet"
        } else {
            "its guest sent none (see the result's error)"
        };
        Err(JobError::InvalidArgument {
            what: format!("job {job_id} has no turn patch: {why}"),
        })
    }

    /// The own patch of follow-up turn `job_id`; `TooLarge` beyond `max_bytes`.
    pub fn read_turn_patch(&self, job_id: &str, max_bytes: u64) -> Result<Vec<u8>, JobError> {
        let path = self.turn_patch_file(job_id)?;
        read_capped(job_id, &path, max_bytes)
    }

    /// The patch of `job_id`; `TooLarge` beyond `max_bytes`.
    pub fn read_patch(&self, job_id: &str, max_bytes: u64) -> Result<Vec<u8>, JobError> {
        let path = self.patch_file(job_id)?;
        read_capped(job_id, &path, max_bytes)
    }
}

fn read_capped(job_id: &str, path: &std::path::Path, max_bytes: u64) -> Result<Vec<u8>, JobError> {
    let io = |e: std::io::Error| JobError::InvalidArgument {
        what: format!("reading the patch of job {job_id}: {e}"),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > max_bytes {
        return Err(JobError::TooLarge {
            what: format!("the patch of job {job_id} ({size} bytes)"),
            limit: max_bytes,
        });
    }
    let mut data = Vec::with_capacity(size as usize);
    file.take(max_bytes).read_to_end(&mut data).map_err(io)?;
    Ok(data)
}
