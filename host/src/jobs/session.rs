//! A persistent job's session: its first job (turn 1, whose VM is kept)
//! and the follow-up turns that run in that VM. This decides, from the
//! session's records alone, whether the VM is still kept and until when;
//! the engine destroys it when not, `continue_job` starts a turn only while
//! it is, and the guest waiting between turns is released when it is not.

use std::time::Duration;

use delegate_proto::outcome::ErrorKind;
use delegate_proto::{JobState, Lifecycle};

use crate::model::{JobRecord, UnixMs};

/// Whether a session's VM is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// The first job is not persistent: its VM ends with it.
    NotPersistent,
    /// A turn is pending or running in it (the idle time-to-live does not
    /// run while one does).
    InUse {
        /// That turn's job.
        job_id: String,
        /// Its number.
        turn: u32,
    },
    /// Kept and idle until this time (the last turn's end plus
    /// `DELEGATE_PERSISTENT_TTL`).
    Until(UnixMs),
    /// No longer kept, and why (for people).
    Gone(String),
}

impl Keep {
    /// Whether the VM is to stay.
    pub fn kept(&self) -> bool {
        matches!(self, Keep::InUse { .. } | Keep::Until(_))
    }
}

/// Decides for `session` (first turn first, as `Store::session_jobs` reads
/// it) at `now`, with the idle time-to-live `ttl`.
pub fn keep(session: &[JobRecord], ttl: Duration, now: UnixMs) -> Keep {
    let Some(first) = session.first() else {
        return Keep::Gone("the job has no record".into());
    };
    if first.manifest.lifecycle() != Lifecycle::Persistent {
        return Keep::NotPersistent;
    }
    if let Some(live) = session.iter().find(|r| !r.state.is_final()) {
        return Keep::InUse {
            job_id: live.id.clone(),
            turn: live.turn,
        };
    }
    if first.vm.is_none() || first.vm_destroyed {
        return Keep::Gone("its VM was destroyed".into());
    }
    if first.released_at.is_some() {
        return Keep::Gone("its VM was released".into());
    }
    // A cancel and a lost guest both promise the VM is destroyed, for a
    // follow-up turn as for the first.
    if let Some(ended) = session.iter().find(|r| ends_session(r)) {
        let how = if ended.state == JobState::Cancelled {
            "was cancelled"
        } else {
            "lost its guest"
        };
        return Keep::Gone(format!("turn {} {how}, which ends its VM", ended.turn));
    }
    let idle_since = session
        .iter()
        .filter_map(|r| r.completed_at)
        .max()
        .unwrap_or(first.created_at);
    let until = idle_since.saturating_add(ttl.as_millis() as i64);
    if until <= now {
        return Keep::Gone(format!(
            "its VM was idle for {} s (DELEGATE_PERSISTENT_TTL) and was destroyed",
            ttl.as_secs()
        ));
    }
    Keep::Until(until)
}

/// Whether this turn's end ends the session's VM.
pub fn ends_session(turn: &JobRecord) -> bool {
    turn.state == JobState::Cancelled || turn.error_kind == Some(ErrorKind::Lost)
}

/// The Claude Code session the next turn resumes: the newest one a turn's
/// result recorded.
pub fn resume_session_id(session: &[JobRecord]) -> Option<String> {
    session
        .iter()
        .rev()
        .find_map(|r| r.result.as_ref()?.agent_result.as_ref()?.session_id.clone())
}

#[cfg(test)]
mod tests {
    use delegate_proto::JobManifest;

    use super::*;
    use crate::provider::{Isolation, VmRef};

    const TTL: Duration = Duration::from_secs(60);

    fn rec(turn: u32, state: JobState, completed_at: Option<UnixMs>) -> JobRecord {
        let manifest = JobManifest::from_value(serde_json::json!({
            "task": "t", "agentType": "script", "lifecycle": "persistent"
        }))
        .unwrap();
        JobRecord {
            completed_at,
            vm: (turn == 1).then(|| VmRef {
                provider: "local".into(),
                id: "vm".into(),
                node: None,
            }),
            isolation: Isolation::ProcessSandbox,
            session_id: (turn > 1).then(|| "t1".into()),
            turn,
            ..JobRecord::blank(&format!("t{turn}"), state, manifest)
        }
    }

    #[test]
    fn the_ttl_counts_from_the_last_turns_end_and_not_while_one_runs() {
        let first = rec(1, JobState::Success, Some(1_000));
        assert_eq!(
            keep(std::slice::from_ref(&first), TTL, 2_000),
            Keep::Until(61_000)
        );
        assert!(
            matches!(keep(std::slice::from_ref(&first), TTL, 61_000), Keep::Gone(w) if w.contains("DELEGATE_PERSISTENT_TTL"))
        );
        let running = rec(2, JobState::Running, None);
        assert_eq!(
            keep(&[first.clone(), running], TTL, 999_999),
            Keep::InUse {
                job_id: "t2".into(),
                turn: 2
            }
        );
        let done = rec(2, JobState::Failed, Some(50_000));
        assert_eq!(keep(&[first, done], TTL, 100_000), Keep::Until(110_000));
    }

    #[test]
    fn release_destroy_cancel_lost_and_ephemeral_end_it() {
        let first = rec(1, JobState::Success, Some(1_000));
        let mut released = first.clone();
        released.released_at = Some(2_000);
        assert!(matches!(keep(&[released], TTL, 3_000), Keep::Gone(w) if w.contains("released")));
        let mut destroyed = first.clone();
        destroyed.vm_destroyed = true;
        assert!(!keep(&[destroyed], TTL, 3_000).kept());
        let cancelled = rec(2, JobState::Cancelled, Some(2_000));
        assert!(
            matches!(keep(&[first.clone(), cancelled], TTL, 3_000), Keep::Gone(w) if w.contains("turn 2 was cancelled"))
        );
        let mut lost = rec(2, JobState::Failed, Some(2_000));
        lost.error_kind = Some(ErrorKind::Lost);
        assert!(!keep(&[first.clone(), lost], TTL, 3_000).kept());
        let mut ephemeral = first;
        ephemeral.manifest.lifecycle = None;
        assert_eq!(keep(&[ephemeral], TTL, 3_000), Keep::NotPersistent);
    }

    #[test]
    fn the_newest_recorded_claude_session_is_resumed() {
        let mut first = rec(1, JobState::Success, Some(1));
        first.result = Some(crate::model::StoredResult {
            exit_code: Some(0),
            signal: None,
            duration_ms: 1,
            output: Default::default(),
            agent_result: Some(delegate_proto::AgentResult {
                session_id: Some("s-1".into()),
                ..Default::default()
            }),
            error: None,
            patch: None,
            turn_patch: None,
        });
        let second = rec(2, JobState::Failed, Some(2));
        assert_eq!(resume_session_id(&[first, second]), Some("s-1".into()));
    }
}
