//! What `submit` does to a manifest before the job is stored: the host's
//! budget ceiling, and the repository archive made from `repo.path` (at
//! submit time, so the job gets the tree as it was when it was asked for).

use delegate_proto::{AgentType, JobManifest, ManifestError};

use super::error::JobError;
use crate::config::Settings;
use crate::repo::{self, RepoError};
use crate::store::{StagedFile, Store};

/// Applies `DELEGATE_MAX_BUDGET_USD`: a `claude` job without a budget gets
/// the ceiling; one that asks for more is refused, naming the field.
pub fn cap_budget(
    mut manifest: JobManifest,
    ceiling: Option<f64>,
) -> Result<JobManifest, JobError> {
    let Some(ceiling) = ceiling else {
        return Ok(manifest);
    };
    if manifest.agent_type != AgentType::Claude {
        return Ok(manifest);
    }
    match manifest.agent.max_budget_usd {
        Some(asked) if asked > ceiling => Err(JobError::InvalidManifest(ManifestError {
            field: "agent.maxBudgetUsd".into(),
            rule: format!(
                "{asked} is over this host's ceiling of {ceiling} (DELEGATE_MAX_BUDGET_USD)"
            ),
        })),
        Some(_) => Ok(manifest),
        None => {
            manifest.agent.max_budget_usd = Some(ceiling);
            Ok(manifest)
        }
    }
}

/// A repository archive written for a job not stored yet.
pub struct PreparedRepo {
    /// The archive file.
    pub staged: StagedFile,
    /// Its base commit.
    pub base_commit: Option<String>,
}

/// Makes the archive of `manifest.repo` for job `job_id` (blocking: git and
/// the file system). Refusals name `repo.path`.
pub fn prepare_repo(
    store: &Store,
    settings: &Settings,
    job_id: &str,
    manifest: &JobManifest,
) -> Result<Option<PreparedRepo>, JobError> {
    let Some(spec) = &manifest.repo else {
        return Ok(None);
    };
    let refuse = |e: RepoError| match e {
        RepoError::TooLarge { limit } => JobError::TooLarge {
            what: format!(
                "the archive of repository {:?}",
                spec.path.as_deref().unwrap_or("")
            ),
            limit,
        },
        e => JobError::InvalidManifest(ManifestError {
            field: "repo.path".into(),
            rule: e.to_string(),
        }),
    };
    let staged = store.stage_repo(job_id)?;
    let (built, from) = match (&spec.path, &spec.url) {
        (Some(path), _) => {
            let top = repo::resolve_repo(path, &settings.repo_roots).map_err(refuse)?;
            let built = repo::build_archive(&top, staged.path(), settings.max_repo_bytes)
                .map_err(refuse)?;
            (built, top.display().to_string())
        }
        (None, Some(url)) => {
            let refuse_url = |e: RepoError| match e {
                RepoError::TooLarge { limit } => JobError::TooLarge {
                    what: format!("the archive of repository {url}"),
                    limit,
                },
                e => JobError::InvalidManifest(ManifestError {
                    field: "repo.url".into(),
                    rule: e.to_string(),
                }),
            };
            let cache = store.repo_cache_dir()?;
            let work = repo::checkout(url, spec.git_ref.as_deref(), &cache).map_err(refuse_url)?;
            let built = repo::build_archive(&work.dir, staged.path(), settings.max_repo_bytes)
                .map_err(refuse_url)?;
            (built, format!("{url} at {}", work.commit))
        }
        (None, None) => {
            return Err(JobError::InvalidManifest(ManifestError {
                field: "repo".into(),
                rule: "give path or url".into(),
            }));
        }
    };
    tracing::info!(
        job_id,
        repo = %from,
        bytes = built.size,
        files = built.files,
        "repository archived"
    );
    Ok(Some(PreparedRepo {
        staged,
        base_commit: built.base_commit,
    }))
}
