//! Finding a job by the first characters of its id, as people type them.

use super::error::JobError;
use super::manager::JobManager;

/// Candidates named when a prefix is ambiguous.
pub const MAX_CANDIDATES: usize = 10;

/// What a job id prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMatch {
    /// Exactly one job: its full id (an exact id always names its job).
    One(String),
    /// Several jobs: the first [`MAX_CANDIDATES`] ids, and whether there
    /// are more.
    Several {
        /// Matching ids, in id order.
        ids: Vec<String>,
        /// More match than are listed.
        more: bool,
    },
    /// No job.
    None,
}

impl JobManager {
    /// The jobs whose ids start with `prefix`; an empty prefix names none.
    pub fn match_id(&self, prefix: &str) -> Result<IdMatch, JobError> {
        if prefix.is_empty() {
            return Ok(IdMatch::None);
        }
        let mut ids = self.store().ids_with_prefix(prefix, MAX_CANDIDATES + 1)?;
        Ok(if ids.iter().any(|id| id == prefix) {
            IdMatch::One(prefix.to_string())
        } else if ids.len() == 1 {
            IdMatch::One(ids.remove(0))
        } else if ids.is_empty() {
            IdMatch::None
        } else {
            let more = ids.len() > MAX_CANDIDATES;
            ids.truncate(MAX_CANDIDATES);
            IdMatch::Several { ids, more }
        })
    }
}
