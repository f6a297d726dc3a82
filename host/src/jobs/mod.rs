//! The job manager: the only owner of job state.
//!
//! MCP tools, the person-facing CLI and the callback API all go through
//! [`manager::JobManager`]; it validates, persists through the store, moves
//! jobs through proto's transition function, schedules provisioning and
//! enforces timeouts, heartbeat leases and cleanup.

pub mod change;
pub mod clock;
mod driver;
pub mod error;
pub mod guest;
pub mod manager;
pub mod metrics;
pub mod model;
pub mod prefix;
pub mod reconcile;
mod recovery;
pub mod resources;
mod scheduler;
pub mod token;

pub use change::{JobChange, JobChangeKind};
pub use error::JobError;
pub use manager::JobManager;
