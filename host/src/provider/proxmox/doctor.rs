//! `delegate-host doctor` for Proxmox: checks a setup before the first job
//! and says exactly what is wrong: the API (TLS, credentials, version), the
//! nodes, the template (found, a template, which nodes can clone it, linked
//! or full), pool, storage and bridge, and the token's privileges from
//! `/access/permissions` on every path a job touches, for the PVE version
//! in use (PVE 9 splits the guest agent into `VM.GuestAgent.*`; PVE 8 checks
//! `VM.Monitor`), and whether job VMs' egress is firewalled by delegate
//! ([`super::doctor_firewall`]).

use std::collections::BTreeSet;
use std::fmt;

use super::client::api::Permissions;
use super::client::{PveClient, PveError};
use super::placement::{self, StorageFacts};
use super::settings::ProxmoxSettings;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, or what to do.
    pub detail: String,
}

/// A privilege the token lacks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Missing {
    /// ACL path.
    pub path: String,
    /// Privilege (alternatives joined by `|`).
    pub privilege: String,
    /// What needs it.
    pub why: String,
}

/// Everything `doctor` found.
#[derive(Debug, Clone, Default)]
pub struct DoctorReport {
    /// PVE version, when reachable.
    pub version: Option<String>,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// Missing privileges.
    pub missing: Vec<Missing>,
}

impl DoctorReport {
    /// True when everything passed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok) && self.missing.is_empty()
    }
    fn push(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "[{}] {}: {}",
                if c.ok { " ok " } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        if !self.missing.is_empty() {
            writeln!(f, "missing privileges:")?;
            for m in &self.missing {
                writeln!(f, "  {} on {}  ({})", m.privilege, m.path, m.why)?;
            }
        }
        write!(
            f,
            "{}",
            if self.ok() {
                "proxmox: ready"
            } else {
                "proxmox: NOT ready"
            }
        )
    }
}

/// Privileges effective on `path`: entries on it or, propagated, on an
/// ancestor.
pub fn effective(perms: &Permissions, path: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (p, privs) in perms {
        let ancestor = p == "/" || path.starts_with(&format!("{}/", p.trim_end_matches('/')));
        for (name, propagate) in privs {
            let prop = propagate
                .as_u64()
                .map_or(propagate.as_bool() == Some(true), |n| n != 0);
            if p == path || (ancestor && prop) {
                out.insert(name.clone());
            }
        }
    }
    out
}

/// Runs every check with a client built from the settings.
pub async fn doctor(settings: &ProxmoxSettings, template: Option<&str>) -> DoctorReport {
    match PveClient::new(settings) {
        Ok(client) => doctor_with(&client, settings, template).await,
        Err(e) => {
            let mut r = DoctorReport::default();
            r.push("client", false, e.to_string());
            r
        }
    }
}

/// The error with its causes (TLS problems hide three levels down).
fn chain(e: &PveError) -> String {
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cur = s.source();
    }
    text
}

fn hint(e: &PveError) -> String {
    let text = chain(e);
    if text.contains("certificate")
        || text.contains("fingerprint")
        || text.contains("UnknownIssuer")
    {
        format!(
            "{text}; trust the node's certificate with PROXMOX_FINGERPRINT (its SHA-256, shown \
             under node > System > Certificates) or PROXMOX_CA_FILE (/etc/pve/pve-root-ca.pem)"
        )
    } else {
        text
    }
}

/// Runs every check with a given client.
pub async fn doctor_with(
    client: &PveClient,
    s: &ProxmoxSettings,
    template: Option<&str>,
) -> DoctorReport {
    let mut r = DoctorReport::default();
    let version = match client.version().await {
        Ok(v) => v,
        Err(e) => {
            r.push("API", false, format!("{}: {}", s.url, hint(&e)));
            return r;
        }
    };
    let major = version.major().unwrap_or(9);
    r.version = Some(version.version.clone());
    r.push(
        "API",
        true,
        format!(
            "{} as {}, Proxmox VE {}",
            s.url,
            client.principal(),
            version.version
        ),
    );

    let res = match client.resources(None).await {
        Ok(res) => res,
        Err(e) => {
            r.push("cluster", false, e.to_string());
            return r;
        }
    };
    let online: Vec<String> = res
        .iter()
        .filter(|x| x.kind == "node" && x.status.as_deref() == Some("online"))
        .filter_map(|x| x.node.clone())
        .collect();
    match &s.nodes {
        Some(list) => {
            let down: Vec<&String> = list.iter().filter(|n| !online.contains(n)).collect();
            r.push(
                "nodes",
                down.is_empty(),
                if down.is_empty() {
                    format!("PROXMOX_NODES all online: {}", list.join(","))
                } else {
                    format!(
                        "not online or unknown: {down:?} (online: {})",
                        online.join(",")
                    )
                },
            );
        }
        None => r.push(
            "nodes",
            !online.is_empty(),
            format!("online: {}", online.join(",")),
        ),
    }

    let facts = StorageFacts::from_resources(&res);
    let mut template_storages = BTreeSet::new();
    let mut template_ids = Vec::new();
    let mut bridges = BTreeSet::new();
    match template {
        None => r.push("template", false, "DEFAULT_VM_TEMPLATE is not set"),
        Some(t) => {
            let found = placement::find_templates(&res, t);
            if found.is_empty() {
                r.push(
                    "template",
                    false,
                    format!("no template named or numbered {t:?} is visible (VM.Audit?)"),
                );
            }
            for (vmid, node) in found {
                template_ids.push(vmid);
                match client.vm_config(&node, vmid).await {
                    Ok(cfg) => {
                        let copy = placement::describe_copy(vmid, &node, &cfg, &facts);
                        let hosts =
                            placement::hosts_for(&copy, &facts, &online, s.nodes.as_deref());
                        template_storages.extend(copy.storages.iter().cloned());
                        bridges.extend(cfg.bridges());
                        let agent = cfg
                            .text("agent")
                            .is_some_and(|a| a.starts_with('1') || a.contains("enabled=1"));
                        r.push(
                            &format!("template {vmid} on {node}"),
                            copy.is_template && !hosts.is_empty() && agent,
                            format!(
                                "{}; storages {:?}; clone: {}; nodes that can host it: {}{}",
                                if copy.is_template {
                                    "a template"
                                } else {
                                    "NOT a template (full clones only)"
                                },
                                copy.storages,
                                if copy.is_template && copy.linked_ok {
                                    "linked"
                                } else {
                                    "full"
                                },
                                if hosts.is_empty() {
                                    "none".into()
                                } else {
                                    hosts.join(",")
                                },
                                if agent {
                                    ""
                                } else {
                                    "; guest agent NOT enabled (set agent: 1)"
                                }
                            ),
                        );
                    }
                    Err(e) => r.push(&format!("template {vmid}"), false, e.to_string()),
                }
            }
        }
    }
    if let Some(pool) = &s.pool {
        let ok = res.iter().any(|x| x.pool.as_deref() == Some(pool))
            || client
                .get::<Vec<serde_json::Value>>("/pools", super::client::Params::new())
                .await
                .is_ok_and(|p| p.iter().any(|x| x["poolid"] == pool.as_str()));
        r.push(
            "pool",
            ok,
            if ok {
                pool.clone()
            } else {
                format!("{pool} does not exist or is not visible")
            },
        );
    }
    if let Some(st) = &s.storage {
        let ok = facts.nodes.contains_key(st);
        r.push(
            "storage",
            ok,
            if ok {
                st.clone()
            } else {
                format!("{st} does not exist or is not visible")
            },
        );
    }
    if let Some(b) = &s.bridge {
        let ok = bridges.is_empty() || bridges.contains(b);
        r.push(
            "bridge",
            ok,
            if ok {
                b.clone()
            } else {
                format!("the template's NICs use {bridges:?}, not {b}")
            },
        );
    }

    let perms = match client.permissions(None).await {
        Ok(p) => p,
        Err(e) => {
            r.push("permissions", false, e.to_string());
            return r;
        }
    };
    r.missing = missing_privileges(
        &perms,
        s,
        major,
        &template_ids,
        &template_storages,
        &bridges,
    );
    r.push(
        "privileges",
        r.missing.is_empty(),
        if r.missing.is_empty() {
            format!("{} has every privilege a job needs", client.principal())
        } else {
            format!(
                "{} lacks {} privilege(s), listed below",
                client.principal(),
                r.missing.len()
            )
        },
    );
    let egress = super::doctor_firewall::check(client, s, &perms).await;
    if let Some(m) = egress.missing {
        r.missing.push(m);
    }
    r.push("egress firewall", egress.ok, egress.detail);
    r
}

/// What the token lacks on each path a job touches.
pub fn missing_privileges(
    perms: &Permissions,
    s: &ProxmoxSettings,
    major: u32,
    templates: &[u32],
    template_storages: &BTreeSet<String>,
    bridges: &BTreeSet<String>,
) -> Vec<Missing> {
    let mut out = Vec::new();
    let mut need = |path: &str, have: &BTreeSet<String>, alts: &[&str], why: &str| {
        if !alts.iter().any(|a| have.contains(*a)) {
            out.push(Missing {
                path: path.to_string(),
                privilege: alts.join("|"),
                why: why.to_string(),
            });
        }
    };
    for t in templates {
        let path = format!("/vms/{t}");
        let have = effective(perms, &path);
        need(&path, &have, &["VM.Clone"], "clone the template");
        need(&path, &have, &["VM.Audit"], "read the template's config");
    }
    // New VMs inherit from /vms and from their pool.
    let vm_path = format!("/vms/{}", s.vmid_range.start());
    let mut have = effective(perms, &vm_path);
    let mut where_ = vm_path.clone();
    if let Some(pool) = &s.pool {
        let pool_path = format!("/pool/{pool}");
        have.extend(effective(perms, &pool_path));
        where_ = format!("{vm_path} or {pool_path}");
    }
    let vm_needs: [(&[&str], &str); 7] = [
        (&["VM.Allocate"], "create and destroy job VMs"),
        (&["VM.Audit"], "read job VMs' status"),
        (&["VM.Config.CPU"], "set cores"),
        (&["VM.Config.Memory"], "set memory"),
        (&["VM.Config.Disk"], "grow the disk"),
        (&["VM.Config.Options"], "set tags, description, smbios1"),
        (&["VM.PowerMgmt"], "start and stop"),
    ];
    for (alts, why) in vm_needs {
        need(&where_, &have, alts, why);
    }
    if major >= 9 {
        need(
            &where_,
            &have,
            &["VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted"],
            "ping the guest agent (PVE 9)",
        );
        need(
            &where_,
            &have,
            &["VM.GuestAgent.FileWrite", "VM.GuestAgent.Unrestricted"],
            "write the bootstrap with file-write (PVE 9)",
        );
    } else {
        need(
            &where_,
            &have,
            &["VM.Monitor"],
            "use the guest agent (PVE 8)",
        );
    }
    let mut storages: BTreeSet<String> = template_storages.clone();
    if let Some(st) = &s.storage {
        storages.insert(st.clone());
    }
    for st in storages {
        let path = format!("/storage/{st}");
        let have = effective(perms, &path);
        need(
            &path,
            &have,
            &["Datastore.AllocateSpace"],
            "allocate clone disks",
        );
    }
    let mut nets: BTreeSet<String> = bridges.clone();
    if let Some(b) = &s.bridge {
        nets.insert(b.clone());
    }
    for b in nets {
        let path = format!("/sdn/zones/localnetwork/{b}");
        let have = effective(perms, &path);
        need(
            &path,
            &have,
            &["SDN.Use"],
            "attach the clone's NIC to the bridge",
        );
    }
    out.sort();
    out
}
