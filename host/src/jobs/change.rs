//! Change notices the manager broadcasts, for MCP progress and resource
//! subscriptions. They say what changed, not the new value: subscribers
//! read the record they need.

/// Something about a job changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobChange {
    /// The job.
    pub job_id: String,
    /// What changed.
    pub kind: JobChangeKind,
}

/// What changed about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobChangeKind {
    /// Its state (submitted, provisioning, running, final).
    State,
    /// Its phase, progress or message.
    Progress,
    /// New log bytes.
    Log,
    /// Artifacts were stored.
    Artifacts,
    /// The guest's result was stored.
    Result,
}
