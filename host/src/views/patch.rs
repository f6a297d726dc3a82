//! The patch as `get_job_result` and `delegate-host result` show it: its
//! summary, where to read it, how to apply it, and the text itself when it
//! is small enough to read inline.

use schemars::JsonSchema;
use serde::Serialize;

use super::resources;
use crate::jobs::JobManager;
use crate::model::JobRecord;

/// Patches up to this size are included in `get_job_result` as text.
pub const INLINE_PATCH_BYTES: u64 = 32 * 1024;

/// One changed path.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChangedFileView {
    /// Path relative to the repository.
    pub path: String,
    /// `added`, `modified`, `deleted`, `mode` or `type`.
    pub change: String,
    /// Lines added (absent for binary files).
    pub added: Option<u64>,
    /// Lines removed (absent for binary files).
    pub removed: Option<u64>,
}

/// The job's patch against the repository it was given.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PatchView {
    /// Bytes of the patch.
    pub size: u64,
    /// SHA-256 of the patch, lower-case hex.
    pub sha256: String,
    /// The commit the repository was at.
    pub base_commit: Option<String>,
    /// Every changed path.
    pub files: Vec<ChangedFileView>,
    /// The MCP resource holding the whole patch (resources/read).
    pub uri: String,
    /// How to take the change.
    pub apply_hint: String,
    /// The patch itself, when it is at most 32 KiB.
    pub text: Option<String>,
}

impl PatchView {
    /// The summary of `record`'s patch, without its text.
    pub fn of(record: &JobRecord) -> Option<PatchView> {
        let p = record.result.as_ref()?.patch.as_ref()?;
        Some(Self::summary(record, p, false))
    }

    /// The summary of a follow-up turn's own patch (against the previous
    /// turn's end), without its text.
    pub fn of_turn(record: &JobRecord) -> Option<PatchView> {
        let p = record.result.as_ref()?.turn_patch.as_ref()?;
        Some(Self::summary(record, p, true))
    }

    fn summary(record: &JobRecord, p: &delegate_proto::PatchSummary, turn: bool) -> PatchView {
        let apply = if turn {
            format!(
                "delegate-host apply {} --turn --path <repository> (on a repository that has the \
                 previous turns' changes)",
                record.id
            )
        } else {
            format!(
                "delegate-host apply {} --path <repository> (or git apply the text or the resource)",
                record.id
            )
        };
        PatchView {
            size: p.size,
            sha256: p.sha256.clone(),
            base_commit: p.base_commit.clone(),
            files: p
                .files
                .iter()
                .map(|f| ChangedFileView {
                    path: f.path.clone(),
                    change: f.change.clone(),
                    added: f.added,
                    removed: f.removed,
                })
                .collect(),
            uri: if turn {
                resources::turn_patch_uri(&record.id)
            } else {
                resources::patch_uri(&record.id)
            },
            apply_hint: if p.files.is_empty() {
                "the job changed nothing".into()
            } else {
                apply
            },
            text: None,
        }
    }

    /// Adds the patch's text when it is small enough.
    pub fn inline(self, jobs: &JobManager, job_id: &str) -> PatchView {
        self.inline_from(|max| jobs.read_patch(job_id, max))
    }

    /// Adds a turn patch's text when it is small enough.
    pub fn inline_turn(self, jobs: &JobManager, job_id: &str) -> PatchView {
        self.inline_from(|max| jobs.read_turn_patch(job_id, max))
    }

    fn inline_from(
        mut self,
        read: impl FnOnce(u64) -> Result<Vec<u8>, crate::jobs::JobError>,
    ) -> PatchView {
        if self.size <= INLINE_PATCH_BYTES
            && let Ok(bytes) = read(INLINE_PATCH_BYTES)
            && let Ok(text) = String::from_utf8(bytes)
        {
            self.text = Some(text);
        }
        self
    }
}
