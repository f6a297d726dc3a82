//! The callback API between guest and host: version, paths, headers, limits
//! and the bodies that are not events or results.
//!
//! ```text
//! GET  /v1/jobs/{id}/manifest   -> JobSpec
//! POST /v1/jobs/{id}/events     EventBatch -> EventsAck
//! PUT  /v1/jobs/{id}/artifacts  tar.gz stream -> ArtifactsAck
//! GET  /v1/jobs/{id}/repo       -> tar.gz of the job's repository
//! PUT  /v1/jobs/{id}/patch      git diff --binary stream -> PatchAck
//! POST /v1/jobs/{id}/result     JobResult -> ResultAck
//! GET  /v1/jobs/{id}/control?wait=<seconds>   -> ControlAnswer
//! ```
//! `control` is a long poll the guest keeps open beside its event uplink:
//! the host answers at once when the job must stop (cancelled, timed out,
//! lease lost: any final state), else after at most `wait` seconds (capped
//! at [`MAX_CONTROL_WAIT_SECS`]) with `continue`, and the guest asks again.
//! One request per job is held at a time; a newer one answers the older
//! with `continue`.
//! Every request carries `Authorization: Bearer <job token>` and
//! [`PROTOCOL_HEADER`].

use serde::{Deserialize, Serialize};

use crate::{ArtifactEntry, JobManifest, JobState};

/// The protocol version both sides speak; the host refuses others.
pub const PROTOCOL_VERSION: u32 = 1;
/// Header carrying [`PROTOCOL_VERSION`].
pub const PROTOCOL_HEADER: &str = "x-delegate-protocol";
/// Largest `POST events` body the host accepts.
pub const MAX_EVENTS_BODY: usize = 8 * 1024 * 1024;
/// Most events in one batch.
pub const MAX_EVENTS_PER_BATCH: usize = 4096;
/// Header on the `GET repo` answer naming the repository's base commit.
pub const BASE_COMMIT_HEADER: &str = "x-delegate-base-commit";
/// Largest `POST result` body the host accepts (tails are bounded).
pub const MAX_RESULT_BODY: usize = 2 * 1024 * 1024;

/// `/v1/jobs/{id}/manifest`
pub fn manifest_path(job_id: &str) -> String {
    format!("/v1/jobs/{job_id}/manifest")
}

/// `/v1/jobs/{id}/events`
pub fn events_path(job_id: &str) -> String {
    format!("/v1/jobs/{job_id}/events")
}

/// `/v1/jobs/{id}/artifacts`
pub fn artifacts_path(job_id: &str) -> String {
    format!("/v1/jobs/{job_id}/artifacts")
}

/// `/v1/jobs/{id}/result`
pub fn result_path(job_id: &str) -> String {
    format!("/v1/jobs/{job_id}/result")
}

/// `/v1/jobs/{id}/control?wait=<wait_secs>`
pub fn control_path(job_id: &str, wait_secs: u64) -> String {
    format!("/v1/jobs/{job_id}/control?wait={wait_secs}")
}

/// Longest wait a control request may ask for; a longer one is cut to this.
/// Under the 60 s idle timeouts common in proxies and NATs.
pub const MAX_CONTROL_WAIT_SECS: u64 = 30;

/// Query of `GET control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlQuery {
    /// Seconds the host may hold the request when nothing happens (0: answer
    /// at once); none means [`MAX_CONTROL_WAIT_SECS`].
    pub wait: Option<u64>,
}

/// What the host tells a guest to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// Keep running; ask again.
    Continue,
    /// Stop the job now: SIGTERM to its tree, SIGKILL after the grace, then
    /// collect artifacts and report as usual.
    Stop,
}

/// Answer to `GET control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAnswer {
    /// What to do.
    pub action: ControlAction,
    /// The job's state on the host when it answered (for a stop, why:
    /// `cancelled`, `timeout`, `failed` after a lost lease, ...).
    pub state: JobState,
}

/// `/v1/jobs/{id}/repo`
pub fn repo_path(job_id: &str) -> String {
    format!("/v1/jobs/{job_id}/repo")
}

/// `/v1/jobs/{id}/patch`
pub fn patch_path(job_id: &str) -> String {
    format!("/v1/jobs/{job_id}/patch")
}

/// Route templates for the host's router, in axum's syntax.
pub mod routes {
    /// Manifest route.
    pub const MANIFEST: &str = "/v1/jobs/{id}/manifest";
    /// Events route.
    pub const EVENTS: &str = "/v1/jobs/{id}/events";
    /// Artifacts route.
    pub const ARTIFACTS: &str = "/v1/jobs/{id}/artifacts";
    /// Result route.
    pub const RESULT: &str = "/v1/jobs/{id}/result";
    /// Control (long poll) route.
    pub const CONTROL: &str = "/v1/jobs/{id}/control";
    /// Repository archive route.
    pub const REPO: &str = "/v1/jobs/{id}/repo";
    /// Patch upload route.
    pub const PATCH: &str = "/v1/jobs/{id}/patch";
}

/// Job ids are UUIDs in practice; anything of letters, digits and `-` up to
/// 64 characters is accepted so ids can never form a path or a query.
pub fn is_valid_job_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Answer to `GET manifest`: the manifest and what the host decided for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job id.
    pub job_id: String,
    /// The manifest as submitted (secrets included: the guest needs them).
    pub manifest: JobManifest,
    /// Effective timeout for the agent, in seconds, after the host applied
    /// its default and subtracted the time already spent provisioning.
    pub timeout_seconds: u64,
    /// How often to send heartbeats.
    pub heartbeat_interval_seconds: u64,
    /// Largest artifact upload the host accepts.
    pub max_artifact_bytes: u64,
    /// The host's egress gateway, when it runs one (older hosts send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::network::EgressSpec>,
    /// For a follow-up turn of a persistent job: which turn this is (older
    /// hosts and first turns send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<crate::turn::TurnSpec>,
}

/// Answer to `PUT artifacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactsAck {
    /// Bytes of the stored tar.gz.
    pub size: u64,
    /// SHA-256 of the stored tar.gz.
    pub sha256: String,
    /// The files in it.
    pub entries: Vec<ArtifactEntry>,
}

/// Answer to `PUT patch`: what the host stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchAck {
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of what was stored.
    pub sha256: String,
}

/// Answer to `POST result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultAck {
    /// The job's state after the result was applied. A result that arrives
    /// after a timeout or a cancel is stored but does not change the state.
    pub state: JobState,
}

/// Body of every error the callback API returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable code: `unauthorized`, `not_found`, `too_large`, `bad_request`,
    /// `conflict`, `unsupported_protocol`, `busy`, `internal`.
    pub code: String,
    /// For people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_cannot_form_paths() {
        assert!(is_valid_job_id("0f4c7e1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"));
        for bad in ["", "../x", "a/b", "a?b", "a b", &"a".repeat(65)] {
            assert!(!is_valid_job_id(bad), "{bad}");
        }
    }

    #[test]
    fn paths_match_routes() {
        assert_eq!(manifest_path("j"), routes::MANIFEST.replace("{id}", "j"));
        assert_eq!(events_path("j"), routes::EVENTS.replace("{id}", "j"));
        assert_eq!(artifacts_path("j"), routes::ARTIFACTS.replace("{id}", "j"));
        assert_eq!(result_path("j"), routes::RESULT.replace("{id}", "j"));
        assert_eq!(
            control_path("j", 5),
            format!("{}?wait=5", routes::CONTROL.replace("{id}", "j"))
        );
        assert_eq!(repo_path("j"), routes::REPO.replace("{id}", "j"));
        assert_eq!(patch_path("j"), routes::PATCH.replace("{id}", "j"));
    }
}
