//! Follow-up turns of a persistent job: what a guest whose VM is kept asks
//! between turns, and what it is told about the turn it runs.
//!
//! ```text
//! GET /v1/jobs/{session}/turns/next?after=<turn>&wait=<seconds>  -> NextTurn
//! PUT /v1/jobs/{id}/patch?against=previous   the turn's own change
//! ```
//! `{session}` is the first job of the session (turn 1), whose token every
//! turn shares. The host holds the request until a turn after `after` is
//! ready (`run`), the kept VM is released or expired (`release`: the guest
//! exits), or `wait` seconds (at most [`crate::api::MAX_CONTROL_WAIT_SECS`])
//! pass (`wait`: ask again).

use serde::{Deserialize, Serialize};

/// `/v1/jobs/{session}/turns/next?after=<after>&wait=<wait_secs>`
pub fn next_turn_path(session_id: &str, after: u32, wait_secs: u64) -> String {
    format!("/v1/jobs/{session_id}/turns/next?after={after}&wait={wait_secs}")
}

/// `/v1/jobs/{id}/patch?against=previous`
pub fn turn_patch_path(job_id: &str) -> String {
    format!("/v1/jobs/{job_id}/patch?against=previous")
}

/// Route template of [`next_turn_path`], in axum's syntax.
pub const NEXT_TURN_ROUTE: &str = "/v1/jobs/{id}/turns/next";

/// Query of `GET turns/next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextTurnQuery {
    /// The last turn the guest ran (1 after the first job).
    pub after: u32,
    /// Seconds the host may hold the request.
    pub wait: Option<u64>,
}

/// Query of `PUT patch`: which patch this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchQuery {
    /// Absent: against the repository's base; `previous`: against the end
    /// of the previous turn.
    pub against: Option<PatchAgainst>,
}

/// What a patch is made against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchAgainst {
    /// The delivered repository.
    Base,
    /// The workspace as the previous turn left it.
    Previous,
}

/// What the host tells a guest waiting between turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextTurnAction {
    /// Run the turn named in the answer.
    Run,
    /// Nothing yet; ask again.
    Wait,
    /// The VM is no longer kept: exit.
    Release,
}

/// Answer to `GET turns/next`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextTurn {
    /// What to do.
    pub action: NextTurnAction,
    /// With `run`: the turn's job id (its manifest, events and result go
    /// to that id, with the session's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// With `run`: the turn's number (2 for the first follow-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u32>,
    /// With `wait`: until when the VM is kept if no turn comes (unix
    /// milliseconds). A guest that cannot reach its host past this (and a
    /// grace) exits on its own, so no VM outlives its time-to-live by
    /// much when no engine runs to destroy it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_until_ms: Option<u64>,
}

/// Part of a turn's `JobSpec`: where the turn stands in its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnSpec {
    /// The session's first job.
    pub session_id: String,
    /// This turn's number (2, 3, ...).
    pub number: u32,
    /// The Claude Code session to resume (`claude --resume`), from the
    /// previous turn's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_routes() {
        assert_eq!(
            next_turn_path("s", 2, 5),
            format!("{}?after=2&wait=5", NEXT_TURN_ROUTE.replace("{id}", "s"))
        );
        assert_eq!(
            turn_patch_path("j"),
            format!("{}?against=previous", crate::api::patch_path("j"))
        );
        let q: PatchQuery = serde_json::from_str(r#"{"against":"previous"}"#).unwrap();
        assert_eq!(q.against, Some(PatchAgainst::Previous));
    }
}
