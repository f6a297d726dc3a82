//! The Proxmox VE provider: throwaway VMs cloned from a template through the
//! PVE REST API directly (no intermediate MCP server).
//!
//! `settings` (+ `migrate`) turn flags and environment into
//! [`ProxmoxSettings`]; `client` speaks the API; `placement` and `vmid`
//! decide where and under which id a VM is made; `metadata` is what a VM
//! carries so a restarted host finds it; `provider`, `cleanup` and `liveness` implement
//! the [`crate::provider::Provider`] trait; `firewall` confines a VM's
//! network to the host's callback and gateway; `doctor` checks a setup.

pub mod cleanup;
pub mod client;
pub mod doctor;
pub mod doctor_firewall;
pub mod doctor_pool;
pub mod firewall;
mod liveness;
pub mod metadata;
pub mod migrate;
pub mod placement;
mod pool;
pub mod provider;
pub mod settings;
pub mod vmid;

pub use client::{PveClient, PveError};
pub use doctor::{DoctorReport, doctor};
pub use firewall::{FirewallMode, FirewallSettings};
pub use provider::{ProxmoxProvider, TaskTimeouts};
pub use settings::{CloneMode, Credentials, ProxmoxArgs, ProxmoxSettings, TlsSettings};
