//! `doctor`: checks that the configured provider can run jobs here, before
//! the first job finds out. Proxmox gets the full check of the API, the
//! template, storage, bridge and the token's privileges; the local
//! provider checks the guest binary and the namespaces it needs.

use serde_json::json;

use crate::config::{ProviderKind, Settings};
use crate::provider::local::LocalProvider;
use crate::provider::{Isolation, Provider};

use super::exit::{self, CliError};
use super::out;

/// Runs the checks; exit 0 when everything passed, 1 otherwise. With
/// `json`: `{ok, checks: [{name, ok, detail}], missing_privileges: [...]}`.
pub async fn run(settings: &Settings, json: bool) -> Result<u8, CliError> {
    let (ok, text, value) = report(settings).await;
    let (text, value) = with_provider_pick(settings, text, value);
    if json {
        out::json(&value)?;
    } else {
        out::text(&text)?;
    }
    Ok(if ok { exit::OK } else { exit::FAILURE })
}

/// The checks' verdict, the report as text and as JSON.
pub async fn report(settings: &Settings) -> (bool, String, serde_json::Value) {
    match (settings.provider, &settings.proxmox) {
        (ProviderKind::Proxmox, Some(pve)) => {
            let mut report =
                crate::provider::proxmox::doctor(pve, settings.default_vm_template.as_deref())
                    .await;
            if !settings.pool.is_empty()
                && report.version.is_some()
                && let Ok(client) = crate::provider::proxmox::PveClient::new(pve)
            {
                report.checks.extend(
                    crate::provider::proxmox::doctor_pool::pool_checks(
                        &client,
                        pve,
                        &settings.pool,
                        settings.max_running,
                    )
                    .await,
                );
            }
            let mut list: Vec<_> = report
                .checks
                .iter()
                .map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
                .collect();
            let missing: Vec<_> = report
                .missing
                .iter()
                .map(|m| json!({"path": m.path, "privilege": m.privilege, "why": m.why}))
                .collect();
            let (space_ok, space_text, space_value) = checks(vec![
                egress_check(settings, Confinement::ProxmoxFirewall),
                data_dir_check(settings),
            ]);
            list.extend(
                space_value["checks"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            let ok = report.ok() && space_ok;
            let value = json!({
                "ok": ok,
                "version": report.version,
                "checks": list,
                "missing_privileges": missing,
            });
            (ok, format!("{report}{space_text}"), value)
        }
        (ProviderKind::Local, _) => {
            let mut list = local_checks(settings);
            list.push(data_dir_check(settings));
            checks(list)
        }
        (ProviderKind::Qemu, _) => {
            let mut list = qemu_checks(settings);
            list.push(egress_check(settings, Confinement::QemuForwards));
            list.push(data_dir_check(settings));
            checks(list)
        }
        (ProviderKind::Proxmox, None) => checks(vec![(
            "proxmox provider",
            false,
            "no settings (PROXMOX_*)".into(),
        )]),
    }
}

/// Says which provider `auto` picked and why, above the checks.
fn with_provider_pick(
    settings: &Settings,
    text: String,
    mut value: serde_json::Value,
) -> (String, serde_json::Value) {
    let Some(why) = &settings.provider_pick else {
        return (text, value);
    };
    let picked = settings.provider.as_str();
    value["provider"] = json!({"auto": true, "picked": picked, "why": why});
    (
        format!("provider: auto picked {picked}: {why}\n{text}"),
        value,
    )
}

fn local_checks(settings: &Settings) -> Vec<(&'static str, bool, String)> {
    let Some(local) = settings.local.clone() else {
        return vec![(
            "local provider",
            false,
            "no settings (DELEGATE_GUEST_BIN)".into(),
        )];
    };
    let guest = local.guest_bin.display().to_string();
    match LocalProvider::new(local) {
        Ok(provider) => vec![
            ("local provider", true, format!("delegate-guest at {guest}")),
            (
                "isolation",
                true,
                provider.isolation().describe().to_string(),
            ),
            egress_check(
                settings,
                match provider.isolation() {
                    Isolation::ProcessSandbox => Confinement::SandboxLoopback,
                    _ => Confinement::None,
                },
            ),
        ],
        Err(e) => vec![("local provider", false, e.to_string())],
    }
}

fn qemu_checks(settings: &Settings) -> Vec<(&'static str, bool, String)> {
    match &settings.qemu {
        None => vec![(
            "qemu provider",
            false,
            "no settings (DELEGATE_QEMU_*)".into(),
        )],
        Some(qemu) => {
            let mut checks = crate::provider::qemu::doctor::run(qemu);
            if !settings.pool.is_empty() {
                let total = crate::config::machine_memory(&crate::resolve::ProcessMachine);
                checks.push(crate::provider::qemu::doctor::pools(
                    qemu,
                    &settings.pool,
                    total,
                ));
            }
            checks
                .into_iter()
                .map(|c| (c.name, c.ok, c.detail))
                .collect()
        }
    }
}

/// What keeps a provider's jobs from going around the egress gateway.
enum Confinement {
    /// The local sandbox: loopback only, the gateway's socket bound in.
    SandboxLoopback,
    /// QEMU user networking with `restrict=on` and two forwards.
    QemuForwards,
    /// Proxmox: the per-VM PVE firewall when the token may set it (the
    /// provider's `egress firewall` check says), else the network layout.
    ProxmoxFirewall,
    /// No confinement at all (unsandboxed local jobs).
    None,
}

/// Whether the gateway is the jobs' only way out on this provider, and
/// what is missing where it is not. Never a failure: jobs still run.
fn egress_check(settings: &Settings, how: Confinement) -> (&'static str, bool, String) {
    const NAME: &str = "egress";
    let Some(listen) = settings.egress.listen else {
        return (
            NAME,
            true,
            "no gateway (DELEGATE_EGRESS_LISTEN unset): manifests with network are refused and \
             jobs reach nothing but their callback"
                .into(),
        );
    };
    let detail = match how {
        Confinement::SandboxLoopback => "enforced: a sandbox has only its own loopback, and the \
             gateway's socket (callback/egress.sock in the data directory) is its one way out"
            .to_string(),
        Confinement::QemuForwards => "enforced: QEMU user networking with restrict=on forwards \
             only 10.0.2.100:80 (callback) and 10.0.2.100:3128 (gateway)"
            .to_string(),
        Confinement::ProxmoxFirewall => format!(
            "enforced by each VM's PVE firewall where the `egress firewall` line says so; \
             otherwise the VMs' network must let them reach only this host's callback ({}) and \
             gateway port {} (see packer/README.md), or a VM that can route elsewhere can skip \
             the proxy",
            settings.callback_url,
            listen.port()
        ),
        Confinement::None => "NOT enforced: unsandboxed jobs are plain processes with this \
             machine's network; the proxy variables are advice"
            .to_string(),
    };
    (NAME, true, detail)
}

/// Free space below which `doctor` fails the data directory: a job's logs
/// alone may take `DELEGATE_MAX_LOG_BYTES` per stream.
const LOW_SPACE: u64 = 256 << 20;

/// The data directory's free space (the host stores every job's logs,
/// events and artifacts there; a full one fails the jobs that write).
fn data_dir_check(settings: &Settings) -> (&'static str, bool, String) {
    let dir = &settings.data_dir;
    // A data directory not made yet is judged by the nearest existing parent.
    let probe = dir.ancestors().find(|p| p.exists()).unwrap_or(dir);
    match crate::store::disk_space(probe) {
        Ok(space) => {
            let ok = space.free >= LOW_SPACE;
            let mut detail = format!("{}: {space}", dir.display());
            if !ok {
                detail.push_str(&format!(
                    "; below {}: jobs fail when it fills",
                    delegate_proto::size::format_size(LOW_SPACE)
                ));
            }
            ("data directory", ok, detail)
        }
        Err(e) => ("data directory", false, e.to_string()),
    }
}

/// Checks as text lines and as JSON.
fn checks(list: Vec<(&'static str, bool, String)>) -> (bool, String, serde_json::Value) {
    let ok = list.iter().all(|(_, ok, _)| *ok);
    let text: String = list
        .iter()
        .map(|(name, ok, detail)| {
            let mark = if *ok { "ok" } else { "FAIL" };
            format!("[{mark}] {name}: {detail}\n")
        })
        .collect();
    let items: Vec<_> = list
        .iter()
        .map(|(name, ok, detail)| json!({"name": name, "ok": ok, "detail": detail}))
        .collect();
    (ok, text, json!({"ok": ok, "checks": items}))
}
