//! `delegate-host doctor` for the qemu provider: QEMU and its 9p support,
//! the kernel and its modules, the static guest, and the accelerator the
//! provider would use (after the same bounded KVM probe).

use std::process::Command;

use super::settings::QemuSettings;
use super::{QemuProvider, modules};

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
