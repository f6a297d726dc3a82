//! delegate-host: an MCP server that runs each job in a throwaway VM.
//!
//! Start-up goes `config` → `store` → `provider` → `jobs` (the manager) →
//! `callback` (the API guests report to) → `mcp` (what clients talk to).
#![warn(missing_docs)]

pub mod callback;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod jobs;
pub mod mcp;
pub mod model;
pub mod provider;
pub mod store;
