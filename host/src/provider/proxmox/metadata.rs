//! How a VM carries its job: pure builders and parsers, no I/O.
//!
//! - `name`: `dlg-<job id>` (a valid DNS name), so a listing shows the job.
//! - `tags`: `delegate;delegate-<instance>`, lower-case, so this host finds
//!   its VMs and leaves other hosts' alone.
//! - `description`: one JSON line `{"delegate":{...}}` with job id, host
//!   instance, created and deadline (unix ms), set already at clone time so
//!   a VM still locked by its clone is recognisably ours.
//! - `smbios1`: the existing uuid kept, `serial` = base64 of the job id
//!   (with `base64=1`, as the schema requires for arbitrary text). The job id
//!   is not secret; the token never goes into the config.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The JSON kept in the description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmMeta {
    /// Job id.
    pub job_id: String,
    /// Host instance (as in the tag).
    pub host_instance: String,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Deadline, unix ms.
    pub deadline_ms: i64,
    /// For an idle warm-pool VM, its class (`TEMPLATE:SIZE`); `job_id` is
    /// then the VM's own pool id. A claimed pool VM keeps it: the store
    /// knows its job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// The extra tag a warm-pool VM carries, for people reading the VM list.
pub const POOL_TAG: &str = "delegate-pool";

/// A pool VM's own id starts with `pool-` (job ids are UUIDs), so its
/// name ([`vm_name`]) starts with this.
pub const POOL_NAME_PREFIX: &str = "dlg-pool-";

#[derive(Serialize, Deserialize)]
struct Wrapper {
    delegate: VmMeta,
}

/// The VM name for a job.
pub fn vm_name(job_id: &str) -> String {
    let clean: String = job_id
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut name = format!("dlg-{}", clean.trim_matches('-'));
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// The description text.
pub fn description(meta: &VmMeta) -> String {
    let json = serde_json::to_string(&Wrapper {
        delegate: meta.clone(),
    })
    .unwrap_or_default();
    format!("{json}\nManaged by delegate-host: destroyed when its job ends.")
}

/// Reads our metadata back from a description (PVE may add `#` comment
/// markers or URL-encode it in older exports; we look for the JSON line).
pub fn parse_description(text: &str) -> Option<VmMeta> {
    text.lines().find_map(|line| {
        let line = line.trim().trim_start_matches('#').trim();
        if !line.starts_with('{') {
            return None;
        }
        serde_json::from_str::<Wrapper>(line)
            .ok()
            .map(|w| w.delegate)
    })
}

/// Whether a `;`/`,`/space separated tag list holds `tag`.
pub fn has_tag(tags: &str, tag: &str) -> bool {
    tags.split([';', ',', ' '])
        .any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// The new `smbios1`: the old uuid kept, serial = job id.
pub fn smbios1(current: Option<&str>, job_id: &str) -> String {
    let uuid = current.and_then(|c| {
        c.split(',')
            .find_map(|kv| kv.strip_prefix("uuid="))
            .map(str::to_string)
    });
    let serial = base64::engine::general_purpose::STANDARD.encode(job_id.as_bytes());
    match uuid {
        Some(u) => format!("uuid={u},serial={serial},base64=1"),
        None => format!("serial={serial},base64=1"),
    }
}

/// Memory in MiB for PVE's `memory` (at least 16, rounded up).
pub fn memory_mib(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024).max(16)
}

/// Size text for `resize` (`12G`, or `12800M` when not whole GiB).
pub fn size_text(bytes: u64) -> String {
    const GIB: u64 = 1024 * 1024 * 1024;
    if bytes.is_multiple_of(GIB) {
        format!("{}G", bytes / GIB)
    } else {
        format!("{}M", bytes.div_ceil(1024 * 1024))
    }
}

/// Reads `size=8G` (or `M`, `T`, `K`, bytes) from a disk's config value.
pub fn disk_size(value: &str) -> Option<u64> {
    let s = value.split(',').find_map(|kv| kv.strip_prefix("size="))?;
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mul: f64 = match unit {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024f64.powi(2),
        "G" => 1024f64.powi(3),
        "T" => 1024f64.powi(4),
        _ => return None,
    };
    Some((n * mul) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "0f4c7e1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn description_round_trips_and_names_are_dns() {
        let m = VmMeta {
            job_id: JOB.into(),
            host_instance: "laptop".into(),
            created_ms: 1,
            deadline_ms: 2,
            pool: None,
        };
        assert_eq!(parse_description(&description(&m)), Some(m.clone()));
        assert!(
            !description(&m).contains("pool"),
            "older hosts read it unchanged"
        );
        let pooled = VmMeta {
            pool: Some("delegate-template:2c4g20g".into()),
            ..m
        };
        assert_eq!(parse_description(&description(&pooled)), Some(pooled));
        assert_eq!(parse_description("hand-written notes"), None);
        assert_eq!(vm_name(JOB), format!("dlg-{JOB}"));
        assert!(vm_name(&"x".repeat(80)).len() <= 63);
    }

    #[test]
    fn smbios_keeps_uuid_and_encodes_serial() {
        let s = smbios1(
            Some("uuid=5d2c9b1e-8f3a-4c6d-9e7f-0a1b2c3d4e5f,manufacturer=QUJD,base64=1"),
            JOB,
        );
        assert!(s.starts_with("uuid=5d2c9b1e-8f3a-4c6d-9e7f-0a1b2c3d4e5f,serial="));
        assert!(s.ends_with(",base64=1"));
        let serial = s.split(',').nth(1).unwrap().trim_start_matches("serial=");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(serial)
            .unwrap();
        assert_eq!(decoded, JOB.as_bytes());
        assert!(smbios1(None, JOB).starts_with("serial="));
    }

    #[test]
    fn sizes() {
        assert_eq!(memory_mib(2 * 1024 * 1024 * 1024), 2048);
        assert_eq!(memory_mib(1), 16);
        assert_eq!(size_text(10 * 1024 * 1024 * 1024), "10G");
        assert_eq!(size_text(1536 * 1024 * 1024), "1536M");
        assert_eq!(
            disk_size("ceph:vm-1-disk-0,size=8G"),
            Some(8 * 1024 * 1024 * 1024)
        );
        assert_eq!(
            disk_size("local:1/x.qcow2,size=512M,ssd=1"),
            Some(512 * 1024 * 1024)
        );
        assert!(has_tag("delegate;delegate-host", "delegate-host"));
        assert!(!has_tag("delegate;delegate-hostx", "delegate-host"));
    }
}
