//! The contract between `delegate-host` and `delegate-guest`.
//!
//! Every type that crosses the wire between the two binaries lives here, with
//! its validation. The crate does no I/O, so both sides (and the tests) share
//! exactly one definition of what a manifest, an event or a result is.

pub mod api;
pub mod bootstrap;
pub mod clock;
pub mod event;
pub mod event_check;
pub mod manifest;
pub mod microvm;
pub mod network;
pub mod outcome;
pub mod repo;
pub mod size;
pub mod state;
pub mod turn;
mod validate;

pub use bootstrap::Bootstrap;
pub use event::{Event, EventBatch, EventKind, EventsAck, LogChunk, LogStream, Phase};
pub use manifest::{
    AgentConfig, AgentType, InputFile, JobManifest, Lifecycle, ManifestError, REDACTED, Resources,
    StatusMode,
};
pub use outcome::{AgentResult, ArtifactEntry, JobResult, OutputTail, OutputTails, ResultStatus};
pub use repo::{ChangedFile, CollectSpec, PatchSummary, RepoSpec};
pub use state::{JobState, TransitionError};
pub use validate::workspace_relative;
