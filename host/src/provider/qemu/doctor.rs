//! `delegate-host doctor` for the qemu provider: QEMU and its 9p support,
//! the kernel and its modules, the static guest, `/dev/kvm`, the disk
//! images when any are configured, the accelerator the provider would
//! use (after the same bounded KVM probe, or its kept outcome), and
//! whether warm pools can fill.

use std::process::Command;

use super::image::ImageBoot;
use super::settings::{AccelChoice, QemuSettings};
use super::{QemuProvider, modules};
use crate::pool::PoolClass;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, or what to do.
    pub detail: String,
}

fn check(name: &'static str, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            name,
            ok: false,
            detail,
        },
    }
}

fn qemu_output(settings: &QemuSettings, args: &[&str]) -> Result<String, String> {
    let out = Command::new(&settings.binary)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", settings.binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {}: {}",
            settings.binary.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs every check (the last one builds the provider: the initramfs and
/// the KVM probe, up to 15 s).
pub fn run(settings: &QemuSettings) -> Vec<Check> {
    let mut checks = vec![
        check(
            "QEMU",
            qemu_output(settings, &["--version"]).map(|v| {
                format!(
                    "{}: {}",
                    settings.binary.display(),
                    v.lines().next().unwrap_or("").trim()
                )
            }),
        ),
        check(
            "virtio-9p",
            qemu_output(settings, &["-device", "help"]).and_then(|devices| {
                if devices.contains("virtio-9p-pci") {
                    Ok("QEMU has virtio-9p-pci (the machine's root is shared read-only)".into())
                } else {
                    Err("this QEMU lacks virtio-9p-pci (built without virtfs)".into())
                }
            }),
        ),
        check(
            "kernel",
            Ok(format!(
                "{} (release {})",
                settings.kernel.image.display(),
                settings.kernel.release
            )),
        ),
        check(
            "modules",
            modules::resolve(
                &settings.kernel.modules,
                modules::REQUIRED,
                modules::OPTIONAL,
            )
            .map(|m| {
                format!(
                    "{} module files from {}",
                    m.len(),
                    settings.kernel.modules.display()
                )
            })
            .map_err(|e| e.to_string()),
        ),
        check(
            "guest",
            Ok(format!("{} (static)", settings.guest.display())),
        ),
    ];
    checks.push(kvm_device(settings));
    checks.push(boot_disk_tools(settings));
    if settings.images.configured() {
        checks.push(check("images", images(settings)));
    }
    if checks.iter().all(|c| c.ok) {
        checks.push(check(
            "accelerator",
            QemuProvider::new(settings.clone())
                .map(|p| p.summary())
                .map_err(|e| e.to_string()),
        ));
    }
    checks
}

/// How micro VMs boot: from the shared boot disk, or with `-kernel` (a
/// warning, not a failure: they work either way).
fn boot_disk_tools(settings: &QemuSettings) -> Check {
    let detail = match (&settings.boot_disk_tools, settings.mkfs.is_some()) {
        (Ok(_), true) => {
            "micro VMs boot from a shared read-only disk (mkfs.fat, mcopy, syslinux)".to_string()
        }
        (Ok(_), false) => {
            "micro VMs boot with -kernel: without mkfs.ext4 their command lines differ".to_string()
        }
        (Err(missing), _) => format!(
            "micro VMs boot with -kernel, which QEMU keeps an 8 MiB copy of per VM: {missing} \
             is missing (Debian: dosfstools mtools syslinux)"
        ),
    };
    check("boot disk", Ok(detail))
}

/// Whether `DELEGATE_POOL` can ever fill here: a pool VM waits for its
/// bootstrap on a virtio-serial port, so the kernel needs `virtio_console`
/// (a module or built in); and every pool VM, paused, keeps its memory on
/// this machine (`mem_total`: its `MemTotal`, when known).
pub fn pools(settings: &QemuSettings, classes: &[PoolClass], mem_total: Option<u64>) -> Check {
    check(
        "warm pools",
        pools_fit(&settings.kernel.modules, classes, mem_total),
    )
}

fn pools_fit(
    module_dir: &std::path::Path,
    classes: &[PoolClass],
    mem_total: Option<u64>,
) -> Result<String, String> {
    modules::resolve(module_dir, &["virtio_console"], &[]).map_err(|e| {
        format!("pool VMs get their bootstrap over virtio-serial, and {e}; they can never start")
    })?;
    let vms: usize = classes.iter().map(|c| c.target).sum();
    let memory: u64 = classes
        .iter()
        .map(|c| c.size.memory_bytes.saturating_mul(c.target as u64))
        .sum();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match mem_total {
        Some(total) if memory > total => Err(format!(
            "{vms} pool VMs ask for {:.1} GiB, more than this machine's {:.1} GiB: they can \
             never all be ready; shrink DELEGATE_POOL",
            gib(memory),
            gib(total)
        )),
        _ => Ok(format!(
            "{vms} pool VMs, {:.1} GiB of memory held while they wait",
            gib(memory)
        )),
    }
}

/// `/dev/kvm`: without it VMs run under TCG, which is a failure only when
/// KVM was demanded.
fn kvm_device(settings: &QemuSettings) -> Check {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    match (opened, settings.accel) {
        (Ok(_), _) => check(
            "KVM",
            Ok("/dev/kvm opens (the probe below boots a VM)".into()),
        ),
        (Err(e), AccelChoice::Kvm) => check(
            "KVM",
            Err(format!(
                "/dev/kvm cannot be opened ({e}) and DELEGATE_QEMU_ACCEL=kvm"
            )),
        ),
        (Err(e), _) => check(
            "KVM",
            Ok(format!(
                "/dev/kvm cannot be opened ({e}): VMs run under TCG (emulation, much slower)"
            )),
        ),
    }
}

/// The configured images: each readable by `qemu-img` as qcow2, and the
/// initrd when they boot this machine's kernel.
fn images(settings: &QemuSettings) -> Result<String, String> {
    let images = &settings.images;
    let qemu_img = images
        .qemu_img
        .as_deref()
        .ok_or("qemu-img is missing (Debian: apt-get install qemu-utils)")?;
    let mut found = Vec::new();
    if let Some(image) = &images.default {
        found.push(image.clone());
    }
    if let Some(dir) = &images.dir {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let mut in_dir: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "qcow2"))
            .collect();
        in_dir.sort();
        if in_dir.is_empty() {
            return Err(format!("no *.qcow2 image in {}", dir.display()));
        }
        found.extend(in_dir);
    }
    let mut described = Vec::new();
    for image in &found {
        let size =
            super::image::virtual_size_blocking(qemu_img, image).map_err(|e| e.to_string())?;
        described.push(format!("{} ({} MiB)", image.display(), size >> 20));
    }
    let boot = match (images.boot, &images.initrd) {
        (ImageBoot::Kernel, Some(initrd)) => format!(
            "booted with {} and {}",
            settings.kernel.image.display(),
            initrd.display()
        ),
        _ => "booted by their own boot loader".into(),
    };
    Ok(format!("{}; {boot}", described.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::parse_pool;

    #[test]
    fn pools_need_virtio_console_and_fit_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let dep = dir.path().join("modules.dep");
        std::fs::write(&dep, "kernel/drivers/char/virtio_console.ko.xz:\n").unwrap();
        let classes = parse_pool("micro:1c1g2g=2,micro:2c2g4g=1").unwrap();
        let gib = 1u64 << 30;
        let ok = pools_fit(dir.path(), &classes, Some(8 * gib)).unwrap();
        assert!(ok.contains("3 pool VMs, 4.0 GiB"), "{ok}");
        assert!(pools_fit(dir.path(), &classes, None).is_ok());
        let err = pools_fit(dir.path(), &classes, Some(3 * gib)).unwrap_err();
        assert!(err.contains("never all be ready"), "{err}");
        std::fs::write(&dep, "kernel/drivers/net/virtio_net.ko:\n").unwrap();
        let err = pools_fit(dir.path(), &classes, Some(8 * gib)).unwrap_err();
        assert!(err.contains("virtio_console"), "{err}");
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/char/virtio_console.ko\n",
        )
        .unwrap();
        assert!(pools_fit(dir.path(), &classes, Some(8 * gib)).is_ok());
    }
}
