//! End-to-end tests, one module per area, linked into one test binary; their
//! support is this package's library (`delegate_tests`).

mod claude_real;
mod cli_live;
mod fault_restart;
mod host_fds;
mod mcp_cancel;
mod mcp_cli;
mod mcp_egress;
mod mcp_http;
mod mcp_http_conns;
mod mcp_jobs;
mod mcp_limits;
mod mcp_notify;
mod mcp_repo;
mod mcp_restart;
mod mcp_shared;
mod mcp_tools;
mod mcp_turns;
mod pve_client;
mod pve_e2e;
mod pve_firewall;
mod pve_pool;
mod pve_provider;
mod pve_smoke;
mod same_world;
mod sandbox_containment;
