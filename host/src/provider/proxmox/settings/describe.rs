//! Showing resolved settings (`delegate-host config`, secrets masked) and
//! the tags they give VMs.

use super::{Credentials, ProxmoxSettings, format_fingerprint};

impl ProxmoxSettings {
    /// The effective settings with secrets masked, for `delegate-host config`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("PROXMOX_URL", self.url.clone())];
        match &self.credentials {
            Credentials::Token { id, .. } => {
                out.push(("PROXMOX_TOKEN_ID", id.clone()));
                out.push(("PROXMOX_TOKEN_SECRET", delegate_proto::REDACTED.into()));
            }
            Credentials::Ticket { user, .. } => {
                out.push(("PROXMOX_USER", user.clone()));
                out.push(("PROXMOX_PASSWORD", delegate_proto::REDACTED.into()));
            }
        }
        if let Some(ca) = &self.tls.ca_file {
            out.push(("PROXMOX_CA_FILE", ca.display().to_string()));
        }
        if !self.tls.fingerprints.is_empty() {
            let list: Vec<String> = self
                .tls
                .fingerprints
                .iter()
                .map(format_fingerprint)
                .collect();
            out.push(("PROXMOX_FINGERPRINT", list.join(",")));
        }
        out.push(("PROXMOX_INSECURE", u8::from(self.tls.insecure).to_string()));
        out.push((
            "PROXMOX_NODES",
            self.nodes
                .as_ref()
                .map_or_else(|| "(all online)".to_string(), |n| n.join(",")),
        ));
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        out.push(("PROXMOX_POOL", opt(&self.pool)));
        out.push(("PROXMOX_STORAGE", opt(&self.storage)));
        out.push(("PROXMOX_BRIDGE", opt(&self.bridge)));
        out.push((
            "PROXMOX_VMID_RANGE",
            format!("{}-{}", self.vmid_range.start(), self.vmid_range.end()),
        ));
        out.push(("PROXMOX_CLONE", self.clone.as_str().into()));
        out.push((
            "PROXMOX_AGENT_WAIT_SECONDS",
            self.agent_wait.as_secs().to_string(),
        ));
        out.push((
            "PROXMOX_MAX_CLONES_PER_NODE",
            self.max_clones_per_node.to_string(),
        ));
        out.push((
            "PROXMOX_MAX_CLONES_PER_STORAGE",
            self.max_clones_per_storage.to_string(),
        ));
        out.push((
            "PROXMOX_CLONE_LOCK_GRACE_SECONDS",
            self.clone_lock_grace.as_secs().to_string(),
        ));
        out.push(("PROXMOX_INSTANCE", self.instance.clone()));
        out.push((
            "DELEGATE_PROXMOX_FIREWALL",
            self.firewall.mode.as_str().into(),
        ));
        out
    }

    /// The tags every VM of this host carries: `delegate;delegate-<instance>`.
    pub fn tags(&self) -> String {
        format!("delegate;{}", self.instance_tag())
    }

    /// The tag naming this host instance.
    pub fn instance_tag(&self) -> String {
        format!("delegate-{}", self.instance)
    }
}
