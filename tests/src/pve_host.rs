//! delegate-host on the PVE simulator: an engine in this process (the
//! Proxmox provider with settings for the simulator), or the environment
//! of a `delegate-host` process; VMs that run the real `delegate-guest
//! boot`. Shared by the Proxmox tests and benchmarks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use delegate_host::config::Settings;
use delegate_host::engine::{Engine, start_engine_with};
use delegate_host::pool::parse_pool;
use delegate_host::provider::proxmox::settings::TlsSettings;
use delegate_host::provider::proxmox::{
    CloneMode, Credentials, FirewallSettings, ProxmoxProvider, ProxmoxSettings, PveClient,
};
use delegate_host::resolve::Secret;
use delegate_host::retry::RetryPolicy;
use tokio_util::sync::CancellationToken;

use crate::bins::bins;
use crate::mcp::HostEnv;
use crate::pve_sim::{self, GuestCommand, PveSim};

/// The real runner, as the template's `.path` unit starts it.
pub fn real_guest() -> GuestCommand {
    GuestCommand {
        program: bins().guest.clone(),
        args: vec![
            "boot".into(),
            "--bootstrap".into(),
            "{bootstrap}".into(),
            "--workspace".into(),
            "{root}/workspace".into(),
            "--no-drop-privileges".into(),
        ],
        env: vec![("DELEGATE_GUEST_NO_CGROUP".into(), "1".into())],
    }
}

/// The simulator's own API token.
pub fn sim_token() -> Credentials {
    Credentials::Token {
        id: pve_sim::TOKEN_ID.into(),
        secret: Secret::new(pve_sim::TOKEN_SECRET),
    }
}

/// TLS that trusts the simulator by its certificate's fingerprint.
pub fn sim_tls(sim: &PveSim) -> TlsSettings {
    TlsSettings {
        fingerprints: vec![sim.fingerprint],
        ..TlsSettings::default()
    }
}

/// Proxmox settings for the simulator: linked clones on Ceph, VMIDs
/// 90000-90999, at most `clones_per_node` clones at once per node.
pub fn proxmox_settings(sim: &PveSim, instance: &str, clones_per_node: usize) -> ProxmoxSettings {
    ProxmoxSettings {
        url: sim.url.clone(),
        credentials: sim_token(),
        tls: sim_tls(sim),
        nodes: None,
        pool: Some("delegate".into()),
        storage: Some("ceph".into()),
        bridge: None,
        vmid_range: 90000..=90999,
        clone: CloneMode::Auto,
        agent_wait: Duration::from_secs(120),
        max_clones_per_node: clones_per_node,
        max_clones_per_storage: 12,
        clone_lock_grace: Duration::from_secs(600),
        instance: instance.into(),
        firewall: FirewallSettings::default(),
        origins: vec![],
    }
}

/// The provider over `settings`, with the default retry policy.
pub fn proxmox_provider(settings: ProxmoxSettings) -> ProxmoxProvider {
    proxmox_provider_with(settings, RetryPolicy::default())
}

/// The provider over `settings`, its client retrying by `retry`.
pub fn proxmox_provider_with(settings: ProxmoxSettings, retry: RetryPolicy) -> ProxmoxProvider {
    let client = PveClient::build(
        &settings.url,
        settings.credentials.clone(),
        &settings.tls,
        retry,
    )
    .expect("a client for the simulator");
    ProxmoxProvider::with_client(client, settings)
}

/// The environment of a `delegate-host` process on the simulator: the
/// simulator's token and fingerprint, pool `delegate`, instance
/// `instance`, 1 GiB VMs of `delegate-template`, the callback API on
/// loopback port `port`.
pub fn serve_env(sim: &PveSim, instance: &str, port: u16) -> HostEnv {
    let mut env = HostEnv::new();
    env.set("DELEGATE_PROVIDER", "proxmox")
        .set("PROXMOX_URL", sim.url.clone())
        .set("PROXMOX_TOKEN_ID", pve_sim::TOKEN_ID)
        .set("PROXMOX_TOKEN_SECRET", pve_sim::TOKEN_SECRET)
        .set("PROXMOX_FINGERPRINT", sim.fingerprint_text())
        .set("PROXMOX_POOL", "delegate")
        .set("PROXMOX_INSTANCE", instance)
        .set("PROXMOX_AGENT_WAIT_SECONDS", "60")
        .set("DEFAULT_VM_TEMPLATE", "delegate-template")
        .set("DEFAULT_MEMORY", "1G")
        .set("CALLBACK_PORT", port.to_string())
        .set("CALLBACK_URL", format!("http://127.0.0.1:{port}"));
    env
}

/// Host settings for jobs of 1 CPU, 1 GiB memory and 8 GiB disk on
/// `delegate-template`, with the warm pools `pool` (`DELEGATE_POOL`'s
/// syntax, empty for none) and up to `jobs` VMs at once.
pub fn host_settings(data_dir: &Path, pool: &str, jobs: usize) -> Settings {
    let mut settings = Settings::builder(data_dir).build().expect("settings");
    settings.default_vm_template = Some("delegate-template".into());
    settings.default_cpu = 1;
    settings.default_memory = 1 << 30;
    settings.default_disk = 8 << 30;
    settings.max_running = jobs;
    settings.max_provisioning = jobs;
    settings.cleanup_interval = Duration::from_secs(1);
    settings.pool = parse_pool(pool).expect("a pool");
    settings
}

/// Starts an engine with `settings` on the simulator.
pub async fn start(sim: &PveSim, instance: &str, settings: Settings) -> Engine {
    start_with(proxmox_settings(sim, instance, 4), settings).await
}

/// Starts an engine with `settings` on the provider over `proxmox`.
pub async fn start_with(proxmox: ProxmoxSettings, settings: Settings) -> Engine {
    let provider = proxmox_provider(proxmox);
    start_engine_with(settings, Arc::new(provider), CancellationToken::new())
        .await
        .expect("engine")
}
