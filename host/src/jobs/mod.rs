//! The job manager: the only owner of job state.
//!
//! MCP tools, the person-facing CLI and the callback API all go through
//! [`manager::JobManager`]; it validates, persists through the store, moves
//! jobs through proto's transition function, schedules provisioning and
//! enforces timeouts, heartbeat leases and cleanup.
//!
//! The modules form a chain, each using only those before it:
//! `change`, `metrics`, `token`, `error` → `rules` (which state a job goes
//! to) → `state` (what all share; the one `transition` and `on_final`) →
//! `engine` (scheduler, drivers, recovery, reconciliation) → `manager` (the
//! facade; holds the engine if this process runs one) → `guest` (the
//! callback API's side of the manager).

pub mod change;
mod engine;
pub mod error;
pub mod guest;
mod guest_repo;
mod intake;
pub mod manager;
pub mod metrics;
mod patch;
pub mod prefix;
pub mod resources;
pub mod rules;
mod state;
pub mod token;

pub use change::{JobChange, JobChangeKind};
pub use error::JobError;
pub use manager::JobManager;
