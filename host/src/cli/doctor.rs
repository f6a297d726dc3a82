//! `doctor`: checks that the configured provider can run jobs here, before
//! the first job finds out. Proxmox gets the full check of the API, the
//! template, storage, bridge and the token's privileges; the local
//! provider checks the guest binary and the namespaces it needs.

use crate::config::{ProviderKind, Settings};
use crate::provider::Provider;
use crate::provider::local::LocalProvider;

use super::exit::{self, CliError};

/// Runs the checks; exit 0 when everything passed, 1 otherwise.
pub async fn run(settings: &Settings) -> Result<u8, CliError> {
    match (settings.provider, &settings.proxmox) {
        (ProviderKind::Proxmox, Some(pve)) => {
            let report =
                crate::provider::proxmox::doctor(pve, settings.default_vm_template.as_deref())
                    .await;
            print!("{report}");
            Ok(if report.ok() { exit::OK } else { exit::FAILURE })
        }
        (ProviderKind::Local, _) => match LocalProvider::from_settings(settings) {
            Ok(provider) => {
                let guest = settings
                    .guest_bin
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                println!("[ok] local provider: delegate-guest at {guest}");
                println!("[ok] isolation: {}", provider.isolation().describe());
                Ok(exit::OK)
            }
            Err(e) => {
                println!("[FAIL] local provider: {e}");
                Ok(exit::FAILURE)
            }
        },
        (ProviderKind::Qemu, _) => {
            let Some(qemu) = &settings.qemu else {
                println!("[FAIL] qemu provider: its settings were not resolved");
                return Ok(exit::FAILURE);
            };
            let checks = crate::provider::qemu::doctor::run(qemu);
            for c in &checks {
                let mark = if c.ok { "ok" } else { "FAIL" };
                println!("[{mark}] {}: {}", c.name, c.detail);
            }
            Ok(if checks.iter().all(|c| c.ok) {
                exit::OK
            } else {
                exit::FAILURE
            })
        }
        (ProviderKind::Proxmox, None) => {
            println!("[FAIL] proxmox provider: its settings were not resolved");
            Ok(exit::FAILURE)
        }
    }
}
