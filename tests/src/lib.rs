//! Test doubles and helpers shared by the end-to-end tests.

pub mod bench;
pub mod bins;
pub mod git;
pub mod mcp;
pub mod messages_api;
pub mod pve_host;
pub mod pve_sim;
pub mod sockets;
