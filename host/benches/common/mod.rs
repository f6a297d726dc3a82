//! What several benches share (a directory, so cargo does not take it for
//! a bench of its own).

use std::path::Path;

/// `delegate-host serve` (or `DELEGATE_HOST_BIN`) on `data` with the local
/// provider, none of the caller's delegate settings, and a callback on a
/// free loopback port: a server for MCP figures that runs no job.
pub fn serve_command(data: &Path) -> tokio::process::Command {
    let bin = std::env::var("DELEGATE_HOST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_delegate-host").to_string());
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("serve");
    for (key, _) in std::env::vars() {
        if [
            "DELEGATE_",
            "CALLBACK_",
            "HEARTBEAT_",
            "PROXMOX_",
            "RUST_LOG",
        ]
        .iter()
        .any(|p| key.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    // The local provider wants an executable guest; no job runs here.
    let exe = std::env::current_exe().expect("bench executable");
    cmd.env("DELEGATE_DATA_DIR", data)
        .env("DELEGATE_PROVIDER", "local")
        .env("DELEGATE_GUEST_BIN", exe)
        .env("CALLBACK_HOST", "127.0.0.1")
        .env("CALLBACK_PORT", "0")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    cmd
}
