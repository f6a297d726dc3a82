//! A job's VM size and template, resolved once from its manifest and the
//! host's defaults (`DEFAULT_CPU`, `DEFAULT_MEMORY`, `DEFAULT_DISK`,
//! `DEFAULT_VM_TEMPLATE`), so providers get numbers, not size strings.

use delegate_proto::JobManifest;

use crate::config::Settings;
use crate::provider::VmSize;

/// What the host uses when a manifest leaves something out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDefaults {
    /// Template for manifests that name none.
    pub template: Option<String>,
    /// The size for what `resources` leaves out.
    pub size: VmSize,
}

impl VmDefaults {
    /// The defaults in the host's settings.
    pub fn from_settings(s: &Settings) -> Self {
        VmDefaults {
            template: s.default_vm_template.clone(),
            size: VmSize {
                cpus: s.default_cpu,
                memory_bytes: s.default_memory,
                disk_bytes: s.default_disk,
            },
        }
    }
}

/// The job's VM: its size (each of `resources.cpu`, `.memory`, `.disk`
/// where the manifest gives a valid one, the default otherwise) and its
/// template.
///
/// Manifests are validated when submitted, so an invalid value only
/// reaches here from a row written by an older version; it falls back to
/// the default rather than failing the job.
pub fn resolve(manifest: &JobManifest, defaults: &VmDefaults) -> (VmSize, Option<String>) {
    let r = manifest.resources.as_ref();
    let size = VmSize {
        cpus: r.and_then(|r| r.cpu_count()).unwrap_or(defaults.size.cpus),
        memory_bytes: r
            .and_then(|r| r.memory_bytes())
            .unwrap_or(defaults.size.memory_bytes),
        disk_bytes: r
            .and_then(|r| r.disk_bytes())
            .unwrap_or(defaults.size.disk_bytes),
    };
    let template = manifest
        .vm_template
        .clone()
        .or_else(|| defaults.template.clone());
    (size, template)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn defaults() -> VmDefaults {
        VmDefaults {
            template: Some("base".into()),
            size: VmSize {
                cpus: 2,
                memory_bytes: 2 * GIB,
                disk_bytes: 10 * GIB,
            },
        }
    }

    fn manifest(extra: serde_json::Value) -> JobManifest {
        let mut v = serde_json::json!({"task": "t", "agentType": "script"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn nothing_given_is_all_defaults() {
        let (size, template) = resolve(&manifest(serde_json::json!({})), &defaults());
        assert_eq!(size, defaults().size);
        assert_eq!(template.as_deref(), Some("base"));
    }

    #[test]
    fn each_given_value_wins_on_its_own() {
        let m = manifest(serde_json::json!({
            "resources": {"memory": "512M"},
            "vmTemplate": "other"
        }));
        let (size, template) = resolve(&m, &defaults());
        assert_eq!(
            size,
            VmSize {
                cpus: 2,
                memory_bytes: 512 << 20,
                disk_bytes: 10 * GIB
            }
        );
        assert_eq!(template.as_deref(), Some("other"));
        let m = manifest(serde_json::json!({"resources": {"cpu": 3, "disk": "12G"}}));
        let (size, _) = resolve(&m, &defaults());
        assert_eq!(
            (size.cpus, size.memory_bytes, size.disk_bytes),
            (3, 2 * GIB, 12 * GIB)
        );
    }

    #[test]
    fn sizes_are_exact_bytes_not_rounded_text() {
        // A default that no size suffix spells exactly stays exact.
        let mut d = defaults();
        d.size.memory_bytes = 1_500_000_001;
        let (size, _) = resolve(&manifest(serde_json::json!({})), &d);
        assert_eq!(size.memory_bytes, 1_500_000_001);
    }

    #[test]
    fn invalid_stored_values_fall_back_to_defaults() {
        let m = manifest(serde_json::json!({"resources": {"cpu": 0, "memory": "lots"}}));
        let (size, template) = resolve(
            &m,
            &VmDefaults {
                template: None,
                ..defaults()
            },
        );
        assert_eq!(size, defaults().size);
        assert_eq!(template, None);
    }
}
