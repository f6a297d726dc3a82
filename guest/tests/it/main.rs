//! The guest's integration tests, one module per area, linked into one test
//! binary. `callback_upload.rs` beside this directory is the one test kept in
//! a binary of its own (it says why).

mod support;

mod artifacts;
mod budget;
mod callback;
mod callback_bootstrap;
mod callback_control;
mod callback_e2e;
mod callback_idle;
mod callback_uplink;
mod claude;
mod egress_env;
mod exit_codes;
mod files_env;
mod full_disk;
mod output;
mod remote;
mod standalone;
mod status;
mod supervision;
mod workspace_view;
