//! delegate-host: an MCP server that runs each job in a throwaway VM.
//!
//! Start-up goes `config` → `store` → `provider` → `jobs` (the manager) →
//! `callback` (the API guests report to) → `mcp` (what clients talk to);
//! `egress` (the gateway jobs' traffic leaves through) starts beside `callback`.
//! `resolve` (the machine settings are read from, their error, secrets)
//! sits below both `config` and `provider`; `retry` is the one backoff policy;
//! `net` serves the listeners' connections (timeouts, caps, descriptors);
//! `counted` (a stream that reports its bytes) serves `net` and `egress`.

pub mod callback;
pub mod cli;
pub mod clock;
pub mod config;
pub mod counted;
pub mod egress;
pub mod engine;
pub mod jobs;
pub mod mcp;
pub mod memory;
pub mod model;
pub mod net;
pub mod pool;
pub mod provider;
pub mod repo;
pub mod resolve;
pub mod retry;
pub mod store;
pub mod views;
