//! PVE's JSON as it really arrives: numbers sometimes as strings, booleans
//! as 0/1 (or "0"/"1", or true/false), fields missing when unset. The
//! helpers here accept all of those; the typed answers below use them.
//! Parameters go the other way through [`Params`]: everything as form text,
//! booleans as `1`/`0`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Form or query parameters, in order, already rendered as PVE expects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params(Vec::new())
    }
    /// A text parameter.
    pub fn text(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.push((key.to_string(), value.into()));
        self
    }
    /// An integer parameter.
    pub fn int(mut self, key: &str, value: impl Into<i64>) -> Self {
        self.0.push((key.to_string(), value.into().to_string()));
        self
    }
    /// A boolean parameter, sent as `1` or `0`.
    pub fn flag(mut self, key: &str, value: bool) -> Self {
        self.0
            .push((key.to_string(), if value { "1" } else { "0" }.into()));
        self
    }
    /// A text parameter when present.
    pub fn opt_text(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.text(key, v),
            None => self,
        }
    }
    /// Whether nothing was set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An unsigned number sent as a number or as a string of digits.
pub fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        U(u64),
        F(f64),
        S(String),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(None),
        Some(N::U(n)) => Ok(Some(n)),
        Some(N::F(f)) if f >= 0.0 && f.is_finite() => Ok(Some(f as u64)),
        Some(N::F(f)) => Err(serde::de::Error::custom(format!("{f} is not a count"))),
        Some(N::S(s)) if s.trim().is_empty() => Ok(None),
        Some(N::S(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| *f >= 0.0 && f.is_finite())
            .map(|f| Some(f as u64))
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a number"))),
    }
}

/// A float sent as a number or a string.
pub fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        F(f64),
        S(String),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(None),
        Some(N::F(f)) => Ok(Some(f)),
        Some(N::S(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number"))),
    }
}

/// A boolean sent as `1`/`0`, `"1"`/`"0"` or `true`/`false`; absent is false.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Num(i64),
        Text(String),
    }
    match Option::<Flag>::deserialize(d)? {
        None => Ok(false),
        Some(Flag::Bool(b)) => Ok(b),
        Some(Flag::Num(n)) => Ok(n != 0),
        Some(Flag::Text(s)) => match s.trim() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not a boolean"
            ))),
        },
    }
}

/// `GET /version`.
#[derive(Debug, Clone, Deserialize)]
pub struct Version {
    /// `x.y`.
    #[serde(default)]
    pub release: String,
    /// The pve-manager package version, e.g. `9.0.8`.
    #[serde(default)]
    pub version: String,
}

impl Version {
    /// The major release (8, 9, ...), when it can be read.
    pub fn major(&self) -> Option<u32> {
        let text = if self.release.is_empty() {
            &self.version
        } else {
            &self.release
        };
        text.split('.').next()?.trim().parse().ok()
    }
}

/// One item of `GET /nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub node: String,
    /// `online`, `offline` or `unknown`.
    #[serde(default)]
    pub status: String,
    /// Memory in bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub maxmem: Option<u64>,
    /// Used memory in bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub mem: Option<u64>,
}

/// One item of `GET /cluster/resources`.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    /// `node`, `storage`, `qemu`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `qemu/100`, `node/pve1`, `storage/pve1/local-lvm`.
    #[serde(default)]
    pub id: String,
    /// The node.
    #[serde(default)]
    pub node: Option<String>,
    /// VMID of guests.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub vmid: Option<u64>,
    /// Guest or node name.
    #[serde(default)]
    pub name: Option<String>,
    /// Status text.
    #[serde(default)]
    pub status: Option<String>,
    /// Whether a guest is a template.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub template: bool,
    /// Guest tags, `;`-separated.
    #[serde(default)]
    pub tags: Option<String>,
    /// The guest's config lock.
    #[serde(default)]
    pub lock: Option<String>,
    /// Storage id.
    #[serde(default)]
    pub storage: Option<String>,
    /// Storage type (`lvmthin`, `zfspool`, `dir`, ...).
    #[serde(default)]
    pub plugintype: Option<String>,
    /// Storage content types.
    #[serde(default)]
    pub content: Option<String>,
    /// Memory (nodes, guests).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub maxmem: Option<u64>,
    /// Used memory.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub mem: Option<u64>,
    /// Pool of a guest.
    #[serde(default)]
    pub pool: Option<String>,
    /// Storage shared flag (present on some versions).
    #[serde(default, deserialize_with = "lenient_bool")]
    pub shared: bool,
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current`.
#[derive(Debug, Clone, Deserialize)]
pub struct VmStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Config lock.
    #[serde(default)]
    pub lock: Option<String>,
    /// QMP status.
    #[serde(default)]
    pub qmpstatus: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<String>,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub template: bool,
    /// Whether the agent is enabled in the config.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub agent: bool,
}

/// One item of `GET /nodes/{node}/storage`.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageInfo {
    /// Storage id.
    pub storage: String,
    /// Type: `lvmthin`, `zfspool`, `rbd`, `dir`, `nfs`, `lvm`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Content types, comma-separated.
    #[serde(default)]
    pub content: String,
    /// Shared flag.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub shared: bool,
    /// Accessible now.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub active: bool,
    /// Enabled in config.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub enabled: bool,
    /// Free bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub avail: Option<u64>,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// `OK`, `WARNINGS: n` or the error text, once stopped.
    #[serde(default)]
    pub exitstatus: Option<String>,
}

/// One line of a task log.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskLogLine {
    /// Line number.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub n: Option<u64>,
    /// Text.
    #[serde(default)]
    pub t: String,
}

/// A VM's configuration: kept as a map (it has ~100 optional keys) with
/// accessors for the few we read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VmConfig(pub BTreeMap<String, serde_json::Value>);

impl VmConfig {
    /// A key as text (numbers rendered).
    pub fn text(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(u8::from(*b).to_string()),
            _ => None,
        }
    }
    /// Whether the VM is a template.
    pub fn is_template(&self) -> bool {
        matches!(self.text("template").as_deref(), Some("1" | "true"))
    }
    /// The config lock, if any.
    pub fn lock(&self) -> Option<String> {
        self.text("lock")
    }
    /// Disks (`scsi0`, `virtio0`, ...) with their volume ids, boot disk first
    /// when `boot`/`bootdisk` names one. CD-ROMs and cloud-init drives are
    /// left out.
    pub fn disks(&self) -> Vec<(String, String)> {
        const BUSES: [&str; 4] = ["scsi", "virtio", "sata", "ide"];
        let mut out: Vec<(String, String)> = self
            .0
            .keys()
            .filter(|k| {
                BUSES.iter().any(|b| {
                    k.strip_prefix(b)
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
                })
            })
            .filter_map(|k| {
                let v = self.text(k)?;
                if v.contains("media=cdrom") || v.contains("cloudinit") {
                    return None;
                }
                let volid = v.split(',').next()?.to_string();
                Some((k.clone(), volid))
            })
            .collect();
        let boot = self.boot_disk();
        out.sort_by_key(|(k, _)| (Some(k) != boot.as_ref(), k.clone()));
        out
    }
    fn boot_disk(&self) -> Option<String> {
        if let Some(order) = self.text("boot")
            && let Some(list) = order.strip_prefix("order=")
        {
            return list.split(';').next().map(str::to_string);
        }
        self.text("bootdisk")
    }
    /// Storage ids of all disks.
    pub fn storages(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .disks()
            .into_iter()
            .filter_map(|(_, volid)| volid.split_once(':').map(|(s, _)| s.to_string()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
    /// Bridges of all NICs.
    pub fn bridges(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix("net")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            })
            .filter_map(|(_, v)| v.as_str())
            .flat_map(|v| v.split(','))
            .filter_map(|kv| kv.strip_prefix("bridge="))
            .map(str::to_string)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_booleans_in_every_spelling() {
        let r: Resource = serde_json::from_str(
            r#"{"type":"qemu","id":"qemu/100","vmid":"100","template":"1","maxmem":"2147483648","mem":1.5e3}"#,
        )
        .unwrap();
        assert_eq!(r.vmid, Some(100));
        assert!(r.template);
        assert_eq!(r.maxmem, Some(2_147_483_648));
        assert_eq!(r.mem, Some(1500));
        let r: Resource =
            serde_json::from_str(r#"{"type":"qemu","template":0,"vmid":101}"#).unwrap();
        assert!(!r.template);
        let r: Resource = serde_json::from_str(r#"{"type":"qemu","template":true}"#).unwrap();
        assert!(r.template);
        assert!(serde_json::from_str::<Resource>(r#"{"type":"qemu","vmid":"x"}"#).is_err());
    }

    #[test]
    fn params_render_booleans_as_digits() {
        let p = Params::new()
            .flag("full", true)
            .flag("purge", false)
            .int("newid", 90000);
        assert_eq!(
            p.0,
            vec![
                ("full".to_string(), "1".to_string()),
                ("purge".into(), "0".into()),
                ("newid".into(), "90000".into())
            ]
        );
    }

    #[test]
    fn config_disks_storages_bridges() {
        let c: VmConfig = serde_json::from_str(
            r#"{"scsi0":"local-lvm:base-9000-disk-0,size=8G","ide2":"local-lvm:vm-9000-cloudinit,media=cdrom",
                "virtio1":"ceph:vm-9000-disk-1,size=1G","boot":"order=scsi0;net0","net0":"virtio=AA:BB,bridge=vmbr0,firewall=1",
                "template":1,"scsihw":"virtio-scsi-pci"}"#,
        )
        .unwrap();
        assert!(c.is_template());
        assert_eq!(c.disks()[0].0, "scsi0");
        assert_eq!(c.disks().len(), 2);
        assert_eq!(c.storages(), vec!["ceph".to_string(), "local-lvm".into()]);
        assert_eq!(c.bridges(), vec!["vmbr0".to_string()]);
    }

    #[test]
    fn version_major() {
        let v: Version =
            serde_json::from_str(r#"{"release":"8.4","version":"8.4.1","repoid":"abc"}"#).unwrap();
        assert_eq!(v.major(), Some(8));
    }
}
