//! `DELEGATE_POOL`: `TEMPLATE:SIZE=COUNT` entries separated by commas, such
//! as `delegate-template:2c4g20g=3,delegate-template:4c8g40g=1`. `SIZE` is
//! CPUs with `c`, then memory and disk as sizes with a binary unit
//! (`4g` = 4 GiB, `512m`, `1.5t`). A job takes a pool VM only when its
//! template and all three numbers match a class exactly: a VM bigger than
//! asked would be a different machine than the job asked for.

use std::fmt;

use delegate_proto::size::parse_size;

use crate::provider::VmSize;

/// One pool: a template and a size, and how many idle VMs to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolClass {
    /// The template's name or VMID, as a manifest's `vmTemplate` names it.
    pub template: String,
    /// The VM size.
    pub size: VmSize,
    /// Idle VMs to keep ready.
    pub target: usize,
    /// The size as written (`2c4g20g`), for keys, logs and metrics.
    pub size_text: String,
}

impl PoolClass {
    /// `TEMPLATE:SIZE`: the class's name in the store, on VMs and in metrics.
    pub fn key(&self) -> String {
        format!("{}:{}", self.template, self.size_text)
    }

    /// Whether a job with this template and size may take this class's VMs.
    pub fn fits(&self, template: Option<&str>, size: VmSize) -> bool {
        template == Some(self.template.as_str()) && size == self.size
    }
}

/// Why `DELEGATE_POOL` did not parse; always names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {index} ({entry:?}): {reason}")]
pub struct PoolSpecError {
    /// 1-based position of the entry.
    pub index: usize,
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Most VMs one class may keep idle: a guard against a typo (`=30` for
/// `=3`) cloning a cluster full.
pub const MAX_PER_CLASS: usize = 64;

/// Parses `DELEGATE_POOL`. Empty text is no pool.
pub fn parse_pool(text: &str) -> Result<Vec<PoolClass>, PoolSpecError> {
    let mut out: Vec<PoolClass> = Vec::new();
    for (i, raw) in text.split(',').enumerate() {
        let entry = raw.trim();
        if entry.is_empty() {
            continue;
        }
        let err = |reason: String| PoolSpecError {
            index: i + 1,
            entry: entry.to_string(),
            reason,
        };
        let (class, count) = entry.rsplit_once('=').ok_or_else(|| {
            err("expected TEMPLATE:SIZE=COUNT, like delegate-template:2c4g20g=3".into())
        })?;
        let (template, size_text) = class.trim().rsplit_once(':').ok_or_else(|| {
            err("expected TEMPLATE:SIZE before `=`, like delegate-template:2c4g20g".into())
        })?;
        let template = template.trim();
        if template.is_empty() {
            return Err(err("the template name is empty".into()));
        }
        let size_text = size_text.trim().to_ascii_lowercase();
        let size = parse_class_size(&size_text).map_err(err)?;
        let target: usize = count
            .trim()
            .parse()
            .map_err(|_| err(format!("{:?} is not a count of VMs", count.trim())))?;
        if target == 0 || target > MAX_PER_CLASS {
            return Err(err(format!(
                "the count must be 1..={MAX_PER_CLASS}, got {target}"
            )));
        }
        let class = PoolClass {
            template: template.to_string(),
            size,
            target,
            size_text,
        };
        if out
            .iter()
            .any(|c| c.template == class.template && c.size == class.size)
        {
            return Err(err(format!("{} is named twice", class.key())));
        }
        out.push(class);
    }
    Ok(out)
}

/// `2c4g20g` → 2 CPUs, 4 GiB memory, 20 GiB disk.
fn parse_class_size(text: &str) -> Result<VmSize, String> {
    let bad = |why: &str| {
        format!(
            "size {text:?} {why}: write CPUs with `c`, then memory and disk with a unit, \
             like 2c4g20g (2 CPUs, 4 GiB memory, 20 GiB disk)"
        )
    };
    let (cpus, rest) = text.split_once('c').ok_or_else(|| bad("has no `c`"))?;
    let cpus: u32 = cpus
        .parse()
        .map_err(|_| bad("does not start with a CPU count"))?;
    if cpus == 0 || u64::from(cpus) > delegate_proto::manifest::MAX_CPU {
        return Err(bad(&format!(
            "asks for {cpus} CPUs (1..={})",
            delegate_proto::manifest::MAX_CPU
        )));
    }
    // The memory's unit ends at the first digit of the disk.
    let unit_end = rest
        .char_indices()
        .skip_while(|(_, c)| c.is_ascii_digit() || *c == '.')
        .find(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .ok_or_else(|| bad("lacks a disk size"))?;
    let (memory, disk) = rest.split_at(unit_end);
    let unit_only = |s: &str| s.chars().any(|c| c.is_ascii_alphabetic());
    if !unit_only(memory) || !unit_only(disk) {
        return Err(bad("needs a unit on memory and disk"));
    }
    let memory_bytes = parse_size(memory).map_err(|e| bad(&format!("has a bad memory: {e}")))?;
    let disk_bytes = parse_size(disk).map_err(|e| bad(&format!("has a bad disk: {e}")))?;
    if memory_bytes == 0 || disk_bytes == 0 {
        return Err(bad("has a zero size"));
    }
    Ok(VmSize {
        cpus,
        memory_bytes,
        disk_bytes,
    })
}

impl fmt::Display for PoolClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key(), self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn parses_classes() {
        let p = parse_pool("delegate-template:2c4g20g=3, 9000:4c8g40g=1,").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].template, "delegate-template");
        assert_eq!(
            p[0].size,
            VmSize {
                cpus: 2,
                memory_bytes: 4 * GIB,
                disk_bytes: 20 * GIB
            }
        );
        assert_eq!(p[0].target, 3);
        assert_eq!(p[0].key(), "delegate-template:2c4g20g");
        assert_eq!(p[1].template, "9000");
        assert_eq!(p[1].size.cpus, 4);
        let m = parse_pool("t:1c512m1.5t=2").unwrap();
        assert_eq!(m[0].size.memory_bytes, 512 << 20);
        assert_eq!(m[0].size.disk_bytes, 3 * (1u64 << 40) / 2);
        assert!(parse_pool("  ").unwrap().is_empty());
        assert!(p[0].fits(Some("delegate-template"), p[0].size));
        assert!(!p[0].fits(Some("other"), p[0].size));
        assert!(!p[0].fits(None, p[0].size));
    }

    #[test]
    fn errors_name_the_entry() {
        for (text, index, needle) in [
            ("t:2c4g20g=3,t:2c4g=1", 2, "disk"),
            ("t:2c4g20g", 1, "TEMPLATE:SIZE=COUNT"),
            ("2c4g20g=1", 1, "TEMPLATE:SIZE"),
            (":2c4g20g=1", 1, "template name is empty"),
            ("t:0c4g20g=1", 1, "0 CPUs"),
            ("t:2c4x20g=1", 1, "bad memory"),
            ("t:2c4g20g=0", 1, "1..="),
            ("t:2c4g20g=lots", 1, "not a count"),
            ("t:2c4g20g=1,t:2c4096m20g=2", 2, "named twice"),
            ("t:2c4 20=1", 1, "unit"),
        ] {
            let e = parse_pool(text).unwrap_err();
            assert_eq!(e.index, index, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
            assert!(e.to_string().contains("entry"), "{text}: {e}");
        }
    }
}
