//! The host's integration tests, one module per area, linked into one test
//! binary.

mod support;

mod callback_security;
mod cli_habits;
mod local_sandbox;
mod manager_lifecycle;
mod manager_restart;
mod repo_patch;
mod store_artifacts;
mod store_basics;
mod tool_schemas;
