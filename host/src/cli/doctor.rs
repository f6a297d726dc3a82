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
            let built = settings
                .local
                .clone()
                .ok_or_else(|| "no settings (DELEGATE_GUEST_BIN)".to_string())
                .and_then(|l| {
                    let guest = l.guest_bin.display().to_string();
                    LocalProvider::new(l)
                        .map(|p| (p, guest))
                        .map_err(|e| e.to_string())
                });
            match built {
                Ok((provider, guest)) => {
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
