//! Job ids as people type them: the whole id, or its first characters when
//! they name one job (as docker takes container ids).

use crate::jobs::JobManager;
use crate::jobs::prefix::IdMatch;

use super::exit::CliError;

/// The full id of the one job whose id is or starts with `typed`.
pub fn resolve(jobs: &JobManager, typed: &str) -> Result<String, CliError> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Err(CliError::Usage(
            "the job id is empty; `delegate-host list` shows the known ones".into(),
        ));
    }
    match jobs.match_id(typed)? {
        IdMatch::One(id) => Ok(id),
        IdMatch::Several { ids, more } => Err(CliError::AmbiguousId {
            prefix: typed.to_string(),
            candidates: ids,
            more,
        }),
        IdMatch::None => Err(CliError::NoSuchJob(typed.to_string())),
    }
}
