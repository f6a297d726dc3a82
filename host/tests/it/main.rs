//! The host's integration tests, one module per area, linked into one test
//! binary.

mod support;

mod callback_conns;
mod callback_control;
mod callback_memory;
mod callback_security;
mod cancel_latency;
mod cli_habits;
mod config_file;
mod disk_full;
mod egress_conns;
mod egress_gateway;
mod guest_flood;
mod job_limits;
mod link_cut;
mod local_limits;
mod local_sandbox;
mod manager_lifecycle;
mod manager_restart;
mod qemu_image;
mod qemu_pool;
mod qemu_vm;
mod release_archive;
mod repo_patch;
mod store_artifacts;
mod store_basics;
mod store_damage;
mod store_turns;
mod systemd_unit;
mod tool_schemas;
mod turns;
mod vm_gone;
