//! The Proxmox VE provider: throwaway VMs cloned from a template through the
//! PVE REST API directly (no intermediate MCP server).

pub mod client;
pub mod migrate;
pub mod settings;

pub use client::{PveClient, PveError};
pub use settings::{CloneMode, Credentials, ProxmoxArgs, ProxmoxSettings};
