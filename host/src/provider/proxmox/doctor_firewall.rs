//! `doctor`'s egress check: whether delegate's per-VM firewall (see
//! [`super::firewall`]) confines job VMs, or only the network layout does,
//! and what is missing for the firewall to hold.

use super::client::api::Permissions;
use super::client::{FailureKind, PveClient};
use super::doctor::{Missing, effective};
use super::firewall::{FirewallMode, PRIVILEGE};
use super::settings::ProxmoxSettings;

/// The check's outcome: passed, what holds, and a privilege to grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressCheck {
    /// False when the setting cannot be met (`required` without the
    /// privilege, or a firewall PVE does not apply).
    pub ok: bool,
    /// Which confinement holds and why.
    pub detail: String,
    /// The privilege to grant, when `required` lacks it.
    pub missing: Option<Missing>,
}

/// Checks `DELEGATE_PROXMOX_FIREWALL` against the token's privileges on new
/// VMs and the datacenter firewall (VM rules do nothing while it is off).
pub async fn check(client: &PveClient, s: &ProxmoxSettings, perms: &Permissions) -> EgressCheck {
    let layout = "jobs' egress is confined only by the network layout (see README, \
                  \"Egress per provider\")";
    let mode = s.firewall.mode;
    if mode == FirewallMode::Off {
        return EgressCheck {
            ok: true,
            detail: format!("DELEGATE_PROXMOX_FIREWALL=off: {layout}"),
            missing: None,
        };
    }
    let vm_path = format!("/vms/{}", s.vmid_range.start());
    let mut have = effective(perms, &vm_path);
    let mut where_ = vm_path;
    if let Some(pool) = &s.pool {
        let pool_path = format!("/pool/{pool}");
        have.extend(effective(perms, &pool_path));
        where_ = format!("{where_} or {pool_path}");
    }
    if !have.contains(PRIVILEGE) {
        let required = mode == FirewallMode::Required;
        return EgressCheck {
            ok: !required,
            detail: format!(
                "{} lacks {PRIVILEGE} on {where_}: egress is NOT enforced by delegate; {layout}{}",
                client.principal(),
                if required {
                    " (DELEGATE_PROXMOX_FIREWALL=required: jobs will fail)"
                } else {
                    ""
                }
            ),
            missing: required.then(|| Missing {
                path: where_.clone(),
                privilege: PRIVILEGE.into(),
                why: "firewall job VMs (DELEGATE_PROXMOX_FIREWALL=required)".into(),
            }),
        };
    }
    let options: Result<serde_json::Value, _> = client
        .get("/cluster/firewall/options", Default::default())
        .await;
    match options {
        Ok(o) if o.get("enable").and_then(serde_json::Value::as_i64) == Some(1) => EgressCheck {
            ok: true,
            detail: "delegate firewalls each job VM (net0 firewall=1, policies DROP, OUT \
                     ACCEPT only to the callback API and the egress gateway); the \
                     datacenter firewall is enabled"
                .into(),
            missing: None,
        },
        Ok(_) => EgressCheck {
            ok: false,
            detail: "the datacenter firewall is disabled (/cluster/firewall/options \
                     enable is not 1), so PVE ignores the VM rules delegate sets: enable it \
                     (Datacenter → Firewall → Options), with the node firewalls left on"
                .into(),
            missing: None,
        },
        Err(e) => EgressCheck {
            ok: false,
            detail: format!(
                "cannot read /cluster/firewall/options ({}{e}): make sure the datacenter \
                 firewall is enabled, or VM rules have no effect",
                if e.kind() == FailureKind::Forbidden {
                    "needs Sys.Audit on /: "
                } else {
                    ""
                }
            ),
            missing: None,
        },
    }
}
