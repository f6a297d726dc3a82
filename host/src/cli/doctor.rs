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
        (ProviderKind::Local, _) => {
            let Some(local) = settings.local.clone() else {
                println!("[FAIL] local provider: no settings (DELEGATE_GUEST_BIN)");
                return Ok(exit::FAILURE);
            };
            let guest = local.guest_bin.display().to_string();
            match LocalProvider::new(local) {
                Ok(provider) => {
                    println!("[ok] local provider: delegate-guest at {guest}");
                    println!("[ok] isolation: {}", provider.isolation().describe());
                    Ok(exit::OK)
                }
                Err(e) => {
                    println!("[FAIL] local provider: {e}");
                    Ok(exit::FAILURE)
                }
            }
        }
        (ProviderKind::Proxmox, None) => {
            println!("[FAIL] proxmox provider: no settings (PROXMOX_*)");
            Ok(exit::FAILURE)
        }
    }
}
