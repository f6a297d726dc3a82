//! The job manager: the only owner of job state.
//!
//! MCP tools, the person-facing CLI and the callback API all go through
//! [`manager::JobManager`]; it validates, persists through the store, moves
//! jobs through proto's transition function, schedules provisioning and
//! enforces timeouts, heartbeat leases and cleanup.
//!
//! The modules form a chain, each using only those before it:
//! `change`, `control`, `metrics`, `token`, `error` → `rules` (which state a job goes
//! to) and `session` (whether a persistent job's VM is still kept) → `state` (what all share; the one `transition` and `on_final`) →
//! `full` (a full data directory ends the job that hit it) → `engine`
//! (scheduler, drivers, recovery, reconciliation) and `poll` (the
//! change notices of a process without the engine, read from the store) →
//! `manager` (the facade; holds the engine if this process runs one, starts
//! the poller if not) → `guest` (the
//! callback API's side of the manager) and `turns` (follow-up turns of
//! persistent jobs: continue, release, and the guest's wait between turns).

pub mod change;
pub mod control;
mod engine;
pub mod error;
pub mod full;
pub mod guest;
mod guest_repo;
mod intake;
pub mod manager;
pub mod metrics;
mod patch;
mod poll;
pub mod prefix;
pub mod resources;
pub mod rules;
pub mod session;
mod state;
pub mod token;
mod turns;

pub use change::{JobChange, JobChangeKind};
pub use error::JobError;
pub use manager::JobManager;
pub use turns::Released;
