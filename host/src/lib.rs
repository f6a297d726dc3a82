//! delegate-host: an MCP server that runs each job in a throwaway VM.
//!
//! Start-up goes `config` → `store` → `provider` → `jobs` (the manager) →
//! `callback` (the API guests report to) → `mcp` (what clients talk to).

pub mod callback;
pub mod cli;
pub mod config;
pub mod engine;
pub mod jobs;
pub mod mcp;
pub mod provider;
pub mod store;
