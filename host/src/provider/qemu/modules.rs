//! Which kernel module files a micro VM needs, in load order, from the
//! kernel's own `modules.dep` and `modules.builtin` (so the same code
//! works for any distribution's kernel: what is built in is skipped, what
//! is a module comes with its dependencies).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules the VM cannot boot without: the PCI transport, virtio-9p for
/// the root, overlayfs, fw_cfg for the bootstrap, the network card.
pub const REQUIRED: &[&str] = &[
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "qemu_fw_cfg",
    "virtio_net",
];
/// Modules used when present: the entropy device (a faster start for the
/// runner's TLS library), the workspace disk (virtio-blk, ext4 and the
/// checksum ext4 asks the crypto API for at mount time), and virtio-serial
/// (virtio_console), the port a pool VM gets its bootstrap on.
pub const OPTIONAL: &[&str] = &[
    "virtio_rng",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "virtio_console",
];

/// Why the module list could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// A file of the module directory could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A required module is neither a module nor built in.
    #[error(
        "kernel module {0} is neither in modules.dep nor built in; this kernel cannot run micro VMs"
    )]
    Missing(String),
}

/// A module file to load: where it is, and its path relative to the
/// module directory (kept inside the initramfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Absolute path on this machine.
    pub path: PathBuf,
    /// Path relative to the module directory, e.g. `kernel/fs/9p/9p.ko`.
    pub relative: String,
}

/// The canonical name of a module file: `kernel/net/9p/9pnet_virtio.ko.xz`
/// is `9pnet_virtio`; dashes and underscores are the same to the kernel.
pub fn module_name(relative: &str) -> String {
    let base = relative.rsplit('/').next().unwrap_or(relative);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// The module files for `required` and `optional` modules and everything
/// they depend on, dependencies first.
pub fn resolve(
    dir: &Path,
    required: &[&str],
    optional: &[&str],
) -> Result<Vec<ModuleFile>, ModulesError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| ModulesError::Read { path, source })
    };
    let dep = read("modules.dep")?;
    // Older module directories may lack modules.builtin: then nothing is
    // known to be built in.
    let builtin = read("modules.builtin").unwrap_or_default();
    let order = load_order(&dep, &builtin, required, optional)?;
    Ok(order
        .into_iter()
        .map(|relative| ModuleFile {
            path: dir.join(&relative),
            relative,
        })
        .collect())
}

/// [`resolve`] on the files' text.
pub fn load_order(
    dep: &str,
    builtin: &str,
    required: &[&str],
    optional: &[&str],
) -> Result<Vec<String>, ModulesError> {
    // name -> (file, its dependencies' files)
    let mut table: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep.lines() {
        let Some((file, deps)) = line.split_once(':') else {
            continue;
        };
        let file = file.trim().to_string();
        let deps = deps.split_whitespace().map(str::to_string).collect();
        table.insert(module_name(&file), (file, deps));
    }
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let by_file: BTreeMap<&str, &Vec<String>> =
        table.values().map(|(f, d)| (f.as_str(), d)).collect();

    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let wanted = required
        .iter()
        .map(|m| (m, true))
        .chain(optional.iter().map(|m| (m, false)));
    for (name, needed) in wanted {
        let name = name.replace('-', "_");
        match table.get(&name) {
            Some((file, _)) => visit(file, &by_file, &mut seen, &mut order),
            None if builtin.contains(&name) || !needed => {}
            None => return Err(ModulesError::Missing(name)),
        }
    }
    Ok(order)
}

/// Depth first, dependencies before the module (modules.dep lists a
/// module's whole closure, but its order is not guaranteed to be a load
/// order).
fn visit(
    file: &str,
    by_file: &BTreeMap<&str, &Vec<String>>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(file.to_string()) {
        return;
    }
    if let Some(deps) = by_file.get(file) {
        for d in deps.iter() {
            visit(d, by_file, seen, order);
        }
    }
    order.push(file.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
";

    #[test]
    fn dependencies_come_first_once_and_builtins_are_skipped() {
        let order = load_order(
            DEP,
            "kernel/fs/overlayfs/overlay.ko\n",
            &["virtio_pci", "9p", "overlay"],
            &["virtio_rng"],
        )
        .unwrap();
        let pos = |m: &str| order.iter().position(|f| module_name(f) == m).unwrap();
        assert!(pos("virtio_ring") < pos("virtio"));
        assert!(pos("virtio") < pos("virtio_pci"));
        assert!(pos("netfs") < pos("fscache"));
        assert!(pos("fscache") < pos("9p"));
        assert!(pos("9pnet") < pos("9p"));
        assert_eq!(order.len(), 9, "{order:?}");
        let unique: BTreeSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len());
    }

    #[test]
    fn a_missing_required_module_is_named() {
        let err = load_order(DEP, "", &["virtio_net"], &[]).unwrap_err();
        assert!(err.to_string().contains("virtio_net"), "{err}");
        assert_eq!(module_name("kernel/x/virtio-net.ko.zst"), "virtio_net");
    }
}
