//! `doctor`: checks that the configured provider can run jobs here, before
//! the first job finds out. Proxmox gets the full check of the API, the
//! template, storage, bridge and the token's privileges; the local
//! provider checks the guest binary and the namespaces it needs.

use serde_json::json;

use crate::config::{ProviderKind, Settings};
use crate::provider::Provider;
use crate::provider::local::LocalProvider;

use super::exit::{self, CliError};
use super::out;

/// Runs the checks; exit 0 when everything passed, 1 otherwise. With
/// `json`: `{ok, checks: [{name, ok, detail}], missing_privileges: [...]}`.
pub async fn run(settings: &Settings, json: bool) -> Result<u8, CliError> {
    let (ok, text, value) = report(settings).await;
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
            let report =
                crate::provider::proxmox::doctor(pve, settings.default_vm_template.as_deref())
                    .await;
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
            let (space_ok, space_text, space_value) = checks(vec![data_dir_check(settings)]);
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
        Some(qemu) => crate::provider::qemu::doctor::run(qemu)
            .into_iter()
            .map(|c| (c.name, c.ok, c.detail))
            .collect(),
    }
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
