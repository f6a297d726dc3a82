//! The per-VM egress firewall: on real PVE the only thing between a job's
//! VM and the network is the bridge, so the gateway's policy is only real
//! when PVE's own firewall drops everything the VM sends except to the
//! host's callback API and egress gateway.
//!
//! After the clone and before the VM starts (for a job's VM and for a
//! warm-pool VM alike, in `boot`), the provider sets `firewall=1` on
//! `net0` (model, bridge and MAC kept), replaces the VM's rules with
//! `OUT ACCEPT` to each host address and port, and enables the VM's
//! firewall with both policies `DROP`. Every call needs `VM.Config.Network`
//! on `/vms/{vmid}` (the official schema, `tests/data/pve/`); without it
//! [`FirewallMode`] decides whether the job runs unenforced (`auto`) or
//! fails (`required`).
//!
//! VM rules only take effect when the datacenter firewall
//! (`/cluster/firewall/options` `enable`) is on; `doctor` checks that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::client::{FailureKind, Method, Params, PveClient, PveError};

/// The privilege every firewall call needs on `/vms/{vmid}`.
pub const PRIVILEGE: &str = "VM.Config.Network";

/// `DELEGATE_PROXMOX_FIREWALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FirewallMode {
    /// Firewall the VM when the token may; else warn (log, `doctor`, the
    /// provider's description) that egress is not enforced by delegate.
    #[default]
    Auto,
    /// Firewall the VM or fail its provisioning.
    Required,
    /// Leave the VM's firewall alone (the network layout confines VMs).
    Off,
}

impl FirewallMode {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FirewallMode::Auto => "auto",
            FirewallMode::Required => "required",
            FirewallMode::Off => "off",
        }
    }
}

/// What the firewall allows and whether to apply it.
#[derive(Debug, Clone, Default)]
pub struct FirewallSettings {
    /// `DELEGATE_PROXMOX_FIREWALL`.
    pub mode: FirewallMode,
    /// The callback API as guests reach it (`CALLBACK_URL`).
    pub callback_url: Option<String>,
    /// The egress gateway as guests reach it (`DELEGATE_EGRESS_URL`, or the
    /// callback host with the gateway's port); a job's own request wins.
    pub egress_url: Option<String>,
}

/// A destination the VM may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What it is, for the rule's comment.
    pub what: &'static str,
    /// Host name or address as the URL gives it.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Host and port of an `http(s)://host[:port]/...` URL (default ports by
/// scheme); `None` when it has no usable host.
pub fn target_of(what: &'static str, url: &str) -> Option<Target> {
    let host = crate::egress::settings::host_of_url(url);
    if host.is_empty() {
        return None;
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let explicit = authority
        .rsplit_once(':')
        .filter(|(h, _)| !h.contains(':') || h.ends_with(']'))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let port = explicit.unwrap_or(if url.starts_with("https://") { 443 } else { 80 });
    (port != 0).then_some(Target { what, host, port })
}

/// One rule as `POST .../firewall/rules` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `in` or `out`.
    pub direction: &'static str,
    /// `ACCEPT`.
    pub action: &'static str,
    /// A macro (`DNS`) instead of protocol and port.
    pub macro_name: Option<&'static str>,
    /// `tcp`.
    pub proto: Option<&'static str>,
    /// Destination address.
    pub dest: Option<String>,
    /// Destination port.
    pub dport: Option<u16>,
    /// Why the rule is there.
    pub comment: String,
}

impl Rule {
    fn params(&self) -> Params {
        let mut p = Params::new()
            .text("type", self.direction)
            .text("action", self.action)
            .int("enable", 1)
            .text("iface", "net0")
            .text("comment", self.comment.clone());
        if let Some(m) = self.macro_name {
            p = p.text("macro", m);
        }
        if let Some(proto) = self.proto {
            p = p.text("proto", proto);
        }
        if let Some(dest) = &self.dest {
            p = p.text("dest", dest.clone());
        }
        if let Some(port) = self.dport {
            p = p.text("dport", port.to_string());
        }
        p
    }
}

/// The rules for `targets` whose hosts resolved to `addrs` (one list per
/// target). A target given by name also needs DNS: the guest resolves the
/// name in its callback and proxy URLs, so `OUT DNS(ACCEPT)` is added then
/// (to any resolver: PVE's rules cannot name the VM's DHCP-given one).
pub fn rules_for(targets: &[Target], addrs: &[Vec<IpAddr>]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for (t, ips) in targets.iter().zip(addrs) {
        for ip in ips {
            let rule = Rule {
                direction: "out",
                action: "ACCEPT",
                macro_name: None,
                proto: Some("tcp"),
                dest: Some(ip.to_string()),
                dport: Some(t.port),
                comment: format!("delegate: {} {}:{}", t.what, t.host, t.port),
            };
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    if targets.iter().any(|t| t.host.parse::<IpAddr>().is_err()) {
        rules.push(Rule {
            direction: "out",
            action: "ACCEPT",
            macro_name: Some("DNS"),
            proto: None,
            dest: None,
            dport: None,
            comment: "delegate: name resolution for the host's URLs".into(),
        });
    }
    rules
}

/// A NIC's config (`virtio=MAC,bridge=vmbr0,...`) with `firewall=1`, every
/// other option kept.
pub fn with_firewall_flag(net: &str) -> String {
    let mut parts: Vec<String> = net
        .split(',')
        .filter(|p| !p.is_empty() && !p.starts_with("firewall="))
        .map(str::to_string)
        .collect();
    parts.push("firewall=1".into());
    parts.join(",")
}

/// Failures of applying the firewall.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The token lacks the privilege (PVE answered 403).
    #[error("the Proxmox token lacks {PRIVILEGE} on /vms/{vmid} ({source})")]
    Forbidden {
        /// The VM.
        vmid: u32,
        /// PVE's answer.
        source: PveError,
    },
    /// Any other failure of `stage`.
    #[error("{stage} for VM {vmid}: {source}")]
    Api {
        /// What was being done.
        stage: &'static str,
        /// The VM.
        vmid: u32,
        /// PVE's answer.
        source: PveError,
    },
    /// No destination to allow: the firewall would cut the guest off.
    #[error("no callback URL to allow through VM {vmid}'s firewall")]
    NoTargets {
        /// The VM.
        vmid: u32,
    },
    /// A host name in the URLs did not resolve.
    #[error("resolving {host} for VM {vmid}'s firewall rules: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The VM.
        vmid: u32,
        /// Why.
        source: std::io::Error,
    },
}

impl FirewallError {
    /// True when the privilege is missing (auto mode carries on).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, FirewallError::Forbidden { .. })
    }
}

fn api(stage: &'static str, vmid: u32) -> impl FnOnce(PveError) -> FirewallError {
    move |source| {
        if source.kind() == FailureKind::Forbidden {
            FirewallError::Forbidden { vmid, source }
        } else {
            FirewallError::Api {
                stage,
                vmid,
                source,
            }
        }
    }
}

async fn resolve(host: &str, port: u16, vmid: u32) -> Result<Vec<IpAddr>, FirewallError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let mut ips: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| FirewallError::Resolve {
            host: host.to_string(),
            vmid,
            source,
        })?
        .map(|a| a.ip())
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// Firewalls VM `vmid` on `node` so it reaches only `targets`.
pub async fn apply(
    client: &PveClient,
    node: &str,
    vmid: u32,
    targets: &[Target],
) -> Result<(), FirewallError> {
    if targets.is_empty() {
        return Err(FirewallError::NoTargets { vmid });
    }
    let mut addrs = Vec::new();
    for t in targets {
        addrs.push(resolve(&t.host, t.port, vmid).await?);
    }
    let rules = rules_for(targets, &addrs);
    let base = format!("/nodes/{node}/qemu/{vmid}");

    let cfg = client
        .vm_config(node, vmid)
        .await
        .map_err(api("reading the config", vmid))?;
    if let Some(net0) = cfg.text("net0") {
        client
            .set_config(
                node,
                vmid,
                Params::new().text("net0", with_firewall_flag(&net0)),
            )
            .await
            .map_err(api("setting firewall=1 on net0", vmid))?;
    }

    // A clone inherits its template's VM firewall: start from no rules.
    let existing: Vec<serde_json::Value> = client
        .get(&format!("{base}/firewall/rules"), Params::new())
        .await
        .map_err(api("listing firewall rules", vmid))?;
    let mut positions: Vec<i64> = existing
        .iter()
        .filter_map(|r| r.get("pos").and_then(serde_json::Value::as_i64))
        .collect();
    positions.sort_unstable_by(|a, b| b.cmp(a));
    for pos in positions {
        client
            .call(
                Method::Delete,
                &format!("{base}/firewall/rules/{pos}"),
                Params::new(),
            )
            .await
            .map_err(api("deleting an inherited firewall rule", vmid))?;
    }
    // PVE inserts a rule without `pos` first: add them last to first.
    for rule in rules.iter().rev() {
        client
            .call(
                Method::Post,
                &format!("{base}/firewall/rules"),
                rule.params(),
            )
            .await
            .map_err(api("adding a firewall rule", vmid))?;
    }
    // dhcp=1: PVE's DHCP exception, so a VM whose address comes from DHCP
    // still gets one under policy_out DROP.
    client
        .call(
            Method::Put,
            &format!("{base}/firewall/options"),
            Params::new()
                .int("enable", 1)
                .text("policy_in", "DROP")
                .text("policy_out", "DROP")
                .int("dhcp", 1),
        )
        .await
        .map_err(api("enabling the VM firewall", vmid))?;
    Ok(())
}

/// Whether delegate enforces egress on this host's VMs: as last seen (for
/// the provider's description) and per VM (for the status of the job that
/// runs in it, pool VMs included).
#[derive(Debug, Default)]
pub struct FirewallState(Mutex<Seen>);

#[derive(Debug, Default)]
struct Seen {
    last: Option<String>,
    unenforced: HashMap<u32, String>,
}

impl FirewallState {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers why VM `vmid` went unfirewalled (`None`: it was firewalled).
    pub fn record(&self, vmid: u32, unenforced: Option<String>) {
        let mut seen = self.seen();
        match &unenforced {
            Some(why) => seen.unenforced.insert(vmid, why.clone()),
            None => seen.unenforced.remove(&vmid),
        };
        seen.last = unenforced;
    }

    /// Why egress is not enforced, when the last VM went unfirewalled.
    pub fn unenforced(&self) -> Option<String> {
        self.seen().last.clone()
    }

    /// Why egress is not enforced for VM `vmid`, when it went unfirewalled.
    pub fn unenforced_for(&self, vmid: u32) -> Option<String> {
        self.seen().unenforced.get(&vmid).cloned()
    }

    /// Forgets VM `vmid` (destroyed).
    pub fn forget(&self, vmid: u32) {
        self.seen().unenforced.remove(&vmid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_default_and_explicit_ports() {
        let t = target_of("callback", "http://10.0.0.5:8765/api").expect("target");
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 8765));
        let t = target_of("callback", "https://host.example/x").expect("target");
        assert_eq!((t.host.as_str(), t.port), ("host.example", 443));
        let t = target_of("gateway", "http://[fd00::1]:3128").expect("target");
        assert_eq!((t.host.as_str(), t.port), ("fd00::1", 3128));
        assert!(target_of("gateway", "http://10.0.0.5:0").is_none());
    }

    #[test]
    fn net0_keeps_its_options_and_gets_the_flag_once() {
        assert_eq!(
            with_firewall_flag("virtio=BC:24:11:00:28:01,bridge=vmbr0"),
            "virtio=BC:24:11:00:28:01,bridge=vmbr0,firewall=1"
        );
        assert_eq!(
            with_firewall_flag("virtio=AA:BB,firewall=0,bridge=vmbr1,tag=5"),
            "virtio=AA:BB,bridge=vmbr1,tag=5,firewall=1"
        );
    }

    #[test]
    fn names_add_dns_and_addresses_do_not() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let by_ip = [Target {
            what: "callback",
            host: "10.0.0.5".into(),
            port: 8765,
        }];
        let rules = rules_for(&by_ip, &[vec![ip("10.0.0.5")]]);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].dest.as_deref(), Some("10.0.0.5"));
        assert_eq!(rules[0].dport, Some(8765));
        let by_name = [Target {
            what: "gateway",
            host: "host.lan".into(),
            port: 3128,
        }];
        let rules = rules_for(&by_name, &[vec![ip("10.0.0.5"), ip("10.0.0.6")]]);
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[2].macro_name, Some("DNS"));
    }
}
