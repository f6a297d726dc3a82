//! `DELEGATE_PROVIDER=auto`, the default: a real VM per job where this
//! machine can run one fast, else the local sandbox.
//!
//! The `qemu` provider is picked when `/dev/kvm` opens, QEMU, a kernel and
//! a static guest are there, and the bounded KVM probe boots a VM (its
//! outcome is kept for the machine's boot, so only the first start after a
//! reboot pays for it, at most 15 s where nested KVM hangs). Under TCG a
//! job would start ten times slower than in the sandbox, so without KVM
//! `auto` picks `local`. The choice and why are said at start, by `config`
//! and by `doctor`.

use crate::provider::qemu::{Accel, AccelDecision, QemuSettings, QemuSettingsError};

use super::ProviderKind;

/// The value of `DELEGATE_PROVIDER` that picks for itself.
pub const AUTO: &str = "auto";

/// What `auto` picked and why.
#[derive(Debug)]
pub struct Pick {
    /// `qemu` or `local`.
    pub kind: ProviderKind,
    /// The QEMU settings, when `qemu` was picked.
    pub qemu: Option<QemuSettings>,
    /// Why, in words: "qemu micro VMs with KVM (KVM probe passed in 900 ms)".
    pub reason: String,
}

fn local(why: String) -> Pick {
    Pick {
        kind: ProviderKind::Local,
        qemu: None,
        reason: format!("the local sandbox: {why}"),
    }
}

/// Picks from the facts, cheapest first: whether `/dev/kvm` opens, whether
/// the QEMU settings resolve, and only then the probe (`probe` boots a VM
/// or reads its kept outcome).
pub fn pick(
    kvm_device: Result<(), String>,
    qemu: impl FnOnce() -> Result<QemuSettings, QemuSettingsError>,
    probe: impl FnOnce(&QemuSettings) -> Result<AccelDecision, String>,
) -> Pick {
    if let Err(why) = kvm_device {
        return local(format!("no KVM ({why})"));
    }
    let settings = match qemu() {
        Ok(s) => s,
        Err(e) => return local(format!("KVM is there but QEMU is not ready ({e})")),
    };
    match probe(&settings) {
        Ok(d) if d.accel == Accel::Kvm => Pick {
            kind: ProviderKind::Qemu,
            reason: format!(
                "qemu: a micro VM per job with KVM (kernel {}; {})",
                settings.kernel.release, d.reason
            ),
            qemu: Some(settings),
        },
        Ok(d) => local(format!("KVM does not work here ({})", d.reason)),
        Err(why) => local(format!("the qemu provider cannot start ({why})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::qemu::{AccelChoice, Images, Kernel, QemuArgs, QemuContext};

    fn unresolvable() -> Result<QemuSettings, QemuSettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let ctx = QemuContext {
            path: None,
            guest_candidates: Vec::new(),
            data_dir: dir.path().join("data"),
            boot_dir: dir.path().join("boot"),
            modules_root: dir.path().join("modules"),
        };
        QemuArgs::default().resolve(&ctx)
    }

    #[test]
    fn without_kvm_nothing_else_is_looked_at() {
        let p = pick(
            Err("/dev/kvm cannot be opened: no such device".into()),
            || panic!("QEMU is not resolved without KVM"),
            |_| panic!("no probe without KVM"),
        );
        assert_eq!(p.kind, ProviderKind::Local);
        assert!(p.qemu.is_none());
        assert!(p.reason.contains("no KVM"), "{}", p.reason);
    }

    #[test]
    fn kvm_without_qemu_is_the_local_sandbox() {
        let p = pick(Ok(()), unresolvable, |_| panic!("no probe without QEMU"));
        assert_eq!(p.kind, ProviderKind::Local);
        assert!(p.reason.contains("DELEGATE_QEMU_BINARY"), "{}", p.reason);
    }

    /// Settings as if QEMU and a kernel were there (the probe is what is
    /// tested; it is given).
    fn ready() -> QemuSettings {
        QemuSettings {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            kernel: Kernel {
                image: "/boot/vmlinuz-6.1.0-57-amd64".into(),
                release: "6.1.0-57-amd64".into(),
                modules: "/lib/modules/6.1.0-57-amd64".into(),
            },
            guest: "/usr/local/bin/delegate-guest".into(),
            accel: AccelChoice::Auto,
            boot_timeout: std::time::Duration::from_secs(120),
            state_dir: "/data/qemu".into(),
            hide: Vec::new(),
            mkfs: None,
            boot_disk_tools: Err("mkfs.fat"),
            images: Images::default(),
        }
    }

    #[test]
    fn the_probe_decides() {
        let settings = ready();
        let hung = |_: &QemuSettings| {
            Ok(AccelDecision {
                accel: Accel::Tcg,
                reason: "KVM probe: a KVM guest did not boot within 15 s".into(),
            })
        };
        let p = pick(Ok(()), || Ok(settings.clone()), hung);
        assert_eq!(p.kind, ProviderKind::Local);
        assert!(p.reason.contains("did not boot"), "{}", p.reason);
        let passed = |_: &QemuSettings| {
            Ok(AccelDecision {
                accel: Accel::Kvm,
                reason: "KVM probe passed in 900 ms".into(),
            })
        };
        let p = pick(Ok(()), || Ok(settings.clone()), passed);
        assert_eq!(p.kind, ProviderKind::Qemu);
        assert!(p.qemu.is_some());
        assert!(p.reason.contains("900 ms"), "{}", p.reason);
        let broken = |_: &QemuSettings| Err("initramfs: no space".to_string());
        let p = pick(Ok(()), || Ok(settings.clone()), broken);
        assert_eq!(p.kind, ProviderKind::Local);
    }
}
