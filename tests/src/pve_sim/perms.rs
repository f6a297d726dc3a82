//! Users, API tokens and their privileges, and the evaluation of the
//! schema's `permissions.check` expressions (`perm`, `and`, `or`, `any`,
//! `require_param`) exactly as written there, so PVE 9's guest-agent split
//! (`VM.GuestAgent.*`) and PVE 8's `VM.Monitor` come from the schema itself.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// A privilege grant on a path.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `/`, `/vms/100`, `/pool/delegate`, `/storage/local-lvm`, ...
    pub path: String,
    /// Privilege names.
    pub privs: BTreeSet<String>,
    /// Whether the grant applies below the path too.
    pub propagate: bool,
}

/// Who is calling and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `user@realm` or `user@realm!token`.
    pub id: String,
    /// Bypasses every check (root@pam and its tokens).
    pub superuser: bool,
    /// Grants.
    pub grants: Vec<Grant>,
}

impl Principal {
    /// Every privilege, everywhere.
    pub fn root(id: &str) -> Self {
        Principal {
            id: id.to_string(),
            superuser: true,
            grants: Vec::new(),
        }
    }

    /// A principal with the given grants.
    pub fn with_grants(id: &str, grants: Vec<Grant>) -> Self {
        Principal {
            id: id.to_string(),
            superuser: false,
            grants,
        }
    }

    /// Privileges effective on `path`: the grants on the path itself and the
    /// propagating grants on its ancestors. (PVE lets the most specific ACL
    /// win per role; the union is close enough for the privileges we model,
    /// which are only ever added.)
    pub fn privileges(&self, path: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for g in &self.grants {
            let applies = g.path == path
                || (g.propagate
                    && (g.path == "/"
                        || path.starts_with(&format!("{}/", g.path.trim_end_matches('/')))));
            if applies {
                out.extend(g.privs.iter().cloned());
            }
        }
        out
    }

    /// Whether `privilege` holds on `path`.
    pub fn has(&self, path: &str, privilege: &str) -> bool {
        self.superuser || self.privileges(path).contains(privilege)
    }

    /// `GET /access/permissions` for this principal.
    pub fn dump(&self, path: Option<&str>) -> BTreeMap<String, BTreeMap<String, Value>> {
        let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        if let Some(p) = path {
            let privs = if self.superuser {
                ALL_PRIVS.iter().map(|s| s.to_string()).collect()
            } else {
                self.privileges(p)
            };
            out.insert(
                p.to_string(),
                privs.into_iter().map(|k| (k, Value::from(1))).collect(),
            );
            return out;
        }
        if self.superuser {
            out.insert(
                "/".into(),
                ALL_PRIVS
                    .iter()
                    .map(|s| (s.to_string(), Value::from(1)))
                    .collect(),
            );
        }
        for g in &self.grants {
            let entry = out.entry(g.path.clone()).or_default();
            for p in &g.privs {
                entry.insert(p.clone(), Value::from(u8::from(g.propagate)));
            }
        }
        out
    }
}

/// The privileges we model (for root's dump).
pub const ALL_PRIVS: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
    "Pool.Allocate",
    "Pool.Audit",
    "SDN.Use",
    "Sys.Audit",
    "Sys.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Monitor",
    "VM.PowerMgmt",
];

/// A failed check: what was needed where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The path.
    pub path: String,
    /// The privileges (any of them would have done when several).
    pub privs: Vec<String>,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Permission check failed ({}, {})",
            self.path,
            self.privs.join("|")
        )
    }
}

fn substitute(template: &str, params: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')? + start;
        out.push_str(params.get(&rest[start + 1..end])?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Evaluates a `permissions` object (`{"check": [...]}`, `{"user": "all"}`).
pub fn check(
    permissions: &Value,
    who: &Principal,
    params: &BTreeMap<String, String>,
) -> Result<(), Denied> {
    match permissions.get("check") {
        Some(expr) => eval(expr, who, params),
        None => Ok(()),
    }
}

fn eval(expr: &Value, who: &Principal, params: &BTreeMap<String, String>) -> Result<(), Denied> {
    let Some(list) = expr.as_array() else {
        return Ok(());
    };
    match list.first().and_then(Value::as_str) {
        Some("perm") => {
            let template = list.get(1).and_then(Value::as_str).unwrap_or("/");
            let privs: Vec<String> = list
                .get(2)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let mut any = false;
            let mut i = 3;
            while i < list.len() {
                match list[i].as_str() {
                    Some("any") => any = list.get(i + 1).is_some_and(|v| v != 0 && v != "0"),
                    Some("require_param") => {
                        let name = list.get(i + 1).and_then(Value::as_str).unwrap_or("");
                        if !params.contains_key(name) {
                            return Err(Denied {
                                path: template.to_string(),
                                privs,
                            });
                        }
                    }
                    _ => {}
                }
                i += 2;
            }
            let path = substitute(template, params).unwrap_or_else(|| template.to_string());
            let ok = if any {
                privs.iter().any(|p| who.has(&path, p))
            } else {
                privs.iter().all(|p| who.has(&path, p))
            };
            if ok {
                Ok(())
            } else {
                Err(Denied { path, privs })
            }
        }
        Some("and") => {
            for e in &list[1..] {
                eval(e, who, params)?;
            }
            Ok(())
        }
        Some("or") => {
            let mut first = None;
            for e in &list[1..] {
                match eval(e, who, params) {
                    Ok(()) => return Ok(()),
                    Err(d) => {
                        first.get_or_insert(d);
                    }
                }
            }
            first.map_or(Ok(()), Err)
        }
        // userid-param, userid-group, ...: not used by the endpoints we serve.
        _ => Ok(()),
    }
}

/// The privileges our provider's token needs, per path, for a PVE version:
/// what a correctly set-up role grants (used to seed the simulator).
pub fn delegate_role(pve8: bool) -> BTreeSet<String> {
    let mut privs: BTreeSet<String> = [
        "VM.Allocate",
        "VM.Audit",
        "VM.Clone",
        "VM.Config.CPU",
        "VM.Config.Memory",
        "VM.Config.Disk",
        "VM.Config.Options",
        "VM.PowerMgmt",
        "Datastore.AllocateSpace",
        "Datastore.Audit",
        "SDN.Use",
        "Sys.Audit",
        "Pool.Audit",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if pve8 {
        privs.insert("VM.Monitor".into());
    } else {
        privs.insert("VM.GuestAgent.Audit".into());
        privs.insert("VM.GuestAgent.FileWrite".into());
    }
    privs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pve_sim::schema::schema;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn grant(path: &str, privs: &[&str]) -> Grant {
        Grant {
            path: path.into(),
            privs: privs.iter().map(|s| s.to_string()).collect(),
            propagate: true,
        }
    }

    #[test]
    fn file_write_needs_the_guest_agent_privilege_on_pve9_and_monitor_on_pve8() {
        let (ep, _) = schema()
            .route("POST", "/nodes/n/qemu/100/agent/file-write")
            .unwrap();
        let p = params(&[("node", "n"), ("vmid", "100")]);
        let v9 =
            Principal::with_grants("a@pve!t", vec![grant("/vms", &["VM.GuestAgent.FileWrite"])]);
        let v8 = Principal::with_grants("a@pve!t", vec![grant("/vms", &["VM.Monitor"])]);
        assert!(check(&ep.permissions, &v9, &p).is_ok());
        assert!(check(&ep.permissions, &v8, &p).is_err());
        let old = ep.permissions_v8.as_ref().unwrap();
        assert!(check(old, &v8, &p).is_ok());
        assert!(check(old, &v9, &p).is_err());
    }

    #[test]
    fn clone_needs_clone_and_allocate_on_new_id_or_pool() {
        let (ep, _) = schema().route("POST", "/nodes/n/qemu/9000/clone").unwrap();
        let who = Principal::with_grants(
            "a@pve!t",
            vec![
                grant("/vms/9000", &["VM.Clone"]),
                grant("/pool/jobs", &["VM.Allocate"]),
            ],
        );
        let with_pool = params(&[("vmid", "9000"), ("newid", "90000"), ("pool", "jobs")]);
        assert!(check(&ep.permissions, &who, &with_pool).is_ok());
        let without = params(&[("vmid", "9000"), ("newid", "90000")]);
        let d = check(&ep.permissions, &who, &without).unwrap_err();
        assert_eq!(d.path, "/vms/90000");
        assert_eq!(
            d.to_string(),
            "Permission check failed (/vms/90000, VM.Allocate)"
        );
    }
}
