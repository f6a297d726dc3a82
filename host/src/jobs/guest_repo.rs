//! The callback API's repository and patch: the archive made at submit,
//! handed to the job's guest, and the patch the guest sends back.

use std::path::PathBuf;

use delegate_proto::api::PatchAck;
use delegate_proto::turn::PatchAgainst;

use super::change::JobChangeKind;
use super::guest::GuestError;
use super::manager::JobManager;
use crate::store::StagedFile;

impl JobManager {
    /// `GET repo`: the archive of the job's repository and its base commit.
    pub async fn guest_repo(&self, job_id: &str) -> Result<(PathBuf, Option<String>), GuestError> {
        let id = job_id.to_string();
        let found = self
            .shared
            .store
            .run(move |s| Ok::<_, GuestError>(s.repo_archive(&id)))
            .await?;
        found.ok_or_else(|| {
            GuestError::BadRequest(format!("job {job_id} was submitted without a repository"))
        })
    }

    /// The file a patch upload streams into, and the size cap (the
    /// artifacts' cap: a patch is one more thing a job sends back).
    pub async fn guest_stage_patch(
        &self,
        job_id: &str,
        against: PatchAgainst,
    ) -> Result<(StagedFile, u64), GuestError> {
        let id = job_id.to_string();
        let staged = self
            .shared
            .store
            .run(move |s| match against {
                PatchAgainst::Base => s.stage_patch(&id),
                PatchAgainst::Previous => s.stage_turn_patch(&id),
            })
            .await?;
        Ok((staged, self.shared.settings.max_artifact_bytes))
    }

    /// `PUT patch`, once the upload is complete: keeps it.
    pub async fn guest_commit_patch(
        &self,
        job_id: &str,
        staged: StagedFile,
        size: u64,
        sha256: String,
    ) -> Result<PatchAck, GuestError> {
        self.shared
            .store
            .run(move |s| s.commit_patch(staged))
            .await?;
        tracing::info!(job_id, size, "patch stored");
        self.shared.notify(job_id, JobChangeKind::Artifacts);
        Ok(PatchAck { size, sha256 })
    }
}
