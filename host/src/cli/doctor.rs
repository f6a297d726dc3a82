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
    let (ok, text, value) = match (settings.provider, &settings.proxmox) {
        (ProviderKind::Proxmox, Some(pve)) => {
            let report =
                crate::provider::proxmox::doctor(pve, settings.default_vm_template.as_deref())
                    .await;
            let checks: Vec<_> = report
                .checks
                .iter()
                .map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
                .collect();
            let missing: Vec<_> = report
                .missing
                .iter()
                .map(|m| json!({"path": m.path, "privilege": m.privilege, "why": m.why}))
                .collect();
            let value = json!({
                "ok": report.ok(),
                "version": report.version,
                "checks": checks,
                "missing_privileges": missing,
            });
            (report.ok(), report.to_string(), value)
        }
        (ProviderKind::Local, _) => checks(local_checks(settings)),
        (ProviderKind::Qemu, _) => checks(qemu_checks(settings)),
        (ProviderKind::Proxmox, None) => checks(vec![(
            "proxmox provider",
            false,
            "no settings (PROXMOX_*)".into(),
        )]),
    };
    if json {
        out::json(&value)?;
    } else {
        out::text(&text)?;
    }
    Ok(if ok { exit::OK } else { exit::FAILURE })
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
