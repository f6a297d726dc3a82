//! QEMU settings: [`QemuArgs`] (flags and environment, parsed only)
//! resolved against explicit facts about the machine ([`QemuContext`])
//! into [`QemuSettings`]. Nothing here reads the process environment, so
//! tests resolve with the values they choose.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::image::{ImageBoot, Images};
use super::kernel::{self, Kernel};

/// The QEMU binary looked up on `PATH` when none is given.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// Which accelerator VMs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when a bounded probe shows it works, else TCG.
    #[default]
    Auto,
    /// KVM; the provider refuses to start when it does not work.
    Kvm,
    /// TCG (emulation) without probing KVM.
    Tcg,
}

/// QEMU settings as given on the command line or in the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct QemuArgs {
    /// The QEMU system emulator [default: qemu-system-x86_64 on PATH].
    #[arg(long = "qemu-binary", env = "DELEGATE_QEMU_BINARY")]
    pub binary: Option<PathBuf>,
    /// The kernel micro VMs boot [default: the newest readable /boot/vmlinuz-*].
    #[arg(long = "qemu-kernel", env = "DELEGATE_QEMU_KERNEL")]
    pub kernel: Option<PathBuf>,
    /// The kernel's module directory [default: /lib/modules/<its release>].
    #[arg(long = "qemu-modules", env = "DELEGATE_QEMU_MODULES")]
    pub modules: Option<PathBuf>,
    /// A statically linked delegate-guest, the VM's init
    /// [default: DELEGATE_GUEST_BIN or the one found beside delegate-host, when static].
    #[arg(long = "qemu-guest", env = "DELEGATE_QEMU_GUEST")]
    pub guest: Option<PathBuf>,
    /// Accelerator: auto (KVM after a bounded probe, else TCG), kvm or tcg.
    #[arg(long = "qemu-accel", env = "DELEGATE_QEMU_ACCEL", value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Seconds a VM may take from start to running its job before the job
    /// fails with the end of its console.
    #[arg(
        long = "qemu-boot-timeout",
        env = "DELEGATE_QEMU_BOOT_TIMEOUT",
        default_value_t = DEFAULT_BOOT_TIMEOUT_SECONDS
    )]
    pub boot_timeout_seconds: u64,
    /// A qcow2 image jobs boot (each through an overlay of its own) instead
    /// of a micro VM, unless their vmTemplate names another.
    #[arg(long = "qemu-image", env = "DELEGATE_QEMU_IMAGE")]
    pub image: Option<PathBuf>,
    /// The directory a job's vmTemplate names an image in
    /// (`<dir>/<name>` or `<dir>/<name>.qcow2`).
    #[arg(long = "qemu-image-dir", env = "DELEGATE_QEMU_IMAGE_DIR")]
    pub image_dir: Option<PathBuf>,
    /// How disk images boot: firmware (their own boot loader) or kernel
    /// (this machine's kernel and initrd, root=/dev/vda).
    #[arg(long = "qemu-image-boot", env = "DELEGATE_QEMU_IMAGE_BOOT", value_enum, default_value_t = ImageBoot::Firmware)]
    pub image_boot: ImageBoot,
    /// The initrd for DELEGATE_QEMU_IMAGE_BOOT=kernel
    /// [default: /boot/initrd.img-<the kernel's release>].
    #[arg(long = "qemu-initrd", env = "DELEGATE_QEMU_INITRD")]
    pub initrd: Option<PathBuf>,
}

/// The default of `DELEGATE_QEMU_BOOT_TIMEOUT`: a micro VM is up in ~2 s
/// under KVM and ~5-10 s under TCG; two minutes leaves room for a loaded
/// machine.
pub const DEFAULT_BOOT_TIMEOUT_SECONDS: u64 = 120;

impl Default for QemuArgs {
    /// The same values as an empty command line.
    fn default() -> Self {
        QemuArgs {
            binary: None,
            kernel: None,
            modules: None,
            guest: None,
            accel: AccelChoice::Auto,
            boot_timeout_seconds: DEFAULT_BOOT_TIMEOUT_SECONDS,
            image: None,
            image_dir: None,
            image_boot: ImageBoot::Firmware,
            initrd: None,
        }
    }
}

/// What settings are resolved against, given explicitly.
#[derive(Debug, Clone)]
pub struct QemuContext {
    /// `$PATH`, to find QEMU.
    pub path: Option<OsString>,
    /// Guest binaries to try in order when DELEGATE_QEMU_GUEST is not set
    /// (DELEGATE_GUEST_BIN, beside delegate-host, the workspace's musl
    /// build); the first static one is used.
    pub guest_candidates: Vec<PathBuf>,
    /// The host's data directory: VM state lives under `<data dir>/qemu`,
    /// and the directory is hidden from VMs.
    pub data_dir: PathBuf,
    /// Where kernels are (`/boot`).
    pub boot_dir: PathBuf,
    /// Where module directories are (`/lib/modules`).
    pub modules_root: PathBuf,
}

impl QemuContext {
    /// The usual places on this machine, with the given `PATH`, guest and
    /// data directory.
    pub fn standard(
        path: Option<OsString>,
        guest_candidates: Vec<PathBuf>,
        data_dir: &Path,
    ) -> Self {
        QemuContext {
            path,
            guest_candidates,
            data_dir: data_dir.to_path_buf(),
            boot_dir: PathBuf::from("/boot"),
            modules_root: PathBuf::from("/lib/modules"),
        }
    }
}

/// Resolved QEMU settings.
#[derive(Debug, Clone)]
pub struct QemuSettings {
    /// The QEMU binary.
    pub binary: PathBuf,
    /// The kernel and its modules.
    pub kernel: Kernel,
    /// The static guest binary (init and callback relay).
    pub guest: PathBuf,
    /// The accelerator choice.
    pub accel: AccelChoice,
    /// Longest boot.
    pub boot_timeout: Duration,
    /// `<data dir>/qemu`: the initramfs and one directory per VM.
    pub state_dir: PathBuf,
    /// Host paths hidden from VMs (the data directory).
    pub hide: Vec<PathBuf>,
    /// `mkfs.ext4` for workspace disks (`None`: workspaces are tmpfs).
    pub mkfs: Option<PathBuf>,
    /// The programs that build the micro VMs' boot disk, or the first one
    /// missing (VMs then boot with `-kernel`).
    pub boot_disk_tools: Result<super::bootdisk::Tools, &'static str>,
    /// Disk images for jobs that boot one.
    pub images: Images,
}

/// `name` in a directory of `path` (the machine's `$PATH`), else in the
/// sbin directories a user's `$PATH` often lacks: the one lookup for every
/// program the provider runs besides QEMU.
pub fn find_program(path: Option<&OsString>, name: &str) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.into_iter()
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl QemuSettings {
    /// The effective values as `(variable, value)` pairs, for `config`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let accel = match self.accel {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        };
        let shown = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "(not set)".to_string(), |p| p.display().to_string())
        };
        vec![
            ("DELEGATE_QEMU_BINARY", self.binary.display().to_string()),
            (
                "DELEGATE_QEMU_KERNEL",
                format!("{} ({})", self.kernel.image.display(), self.kernel.release),
            ),
            (
                "DELEGATE_QEMU_MODULES",
                self.kernel.modules.display().to_string(),
            ),
            ("DELEGATE_QEMU_GUEST", self.guest.display().to_string()),
            ("DELEGATE_QEMU_ACCEL", accel.to_string()),
            (
                "DELEGATE_QEMU_BOOT_TIMEOUT",
                self.boot_timeout.as_secs().to_string(),
            ),
            ("DELEGATE_QEMU_IMAGE", shown(&self.images.default)),
            ("DELEGATE_QEMU_IMAGE_DIR", shown(&self.images.dir)),
            (
                "DELEGATE_QEMU_IMAGE_BOOT",
                self.images.boot.as_str().to_string(),
            ),
            ("DELEGATE_QEMU_INITRD", shown(&self.images.initrd)),
        ]
    }
}

/// A QEMU setting that failed validation.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct QemuSettingsError {
    /// The environment variable naming the setting.
    pub setting: &'static str,
    /// What is wrong and what would be right.
    pub message: String,
}

fn invalid(setting: &'static str, message: impl Into<String>) -> QemuSettingsError {
    QemuSettingsError {
        setting,
        message: message.into(),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl QemuArgs {
    /// Checks the values against `ctx`.
    pub fn resolve(&self, ctx: &QemuContext) -> Result<QemuSettings, QemuSettingsError> {
        let binary = match &self.binary {
            Some(b) if is_executable(b) => b.clone(),
            Some(b) => {
                return Err(invalid(
                    "DELEGATE_QEMU_BINARY",
                    format!("{} is not an executable file", b.display()),
                ));
            }
            None => ctx
                .path
                .as_ref()
                .and_then(|p| {
                    std::env::split_paths(p)
                        .map(|d| d.join(QEMU_BINARY))
                        .find(|c| is_executable(c))
                })
                .ok_or_else(|| {
                    invalid(
                        "DELEGATE_QEMU_BINARY",
                        format!(
                            "{QEMU_BINARY} is not on PATH; install QEMU \
                             (Debian: apt-get install qemu-system-x86) or set DELEGATE_QEMU_BINARY"
                        ),
                    )
                })?,
        };
        let image = match &self.kernel {
            Some(k) => k.clone(),
            None => kernel::newest_in(&ctx.boot_dir).ok_or_else(|| {
                invalid(
                    "DELEGATE_QEMU_KERNEL",
                    format!(
                        "no readable {}/vmlinuz-* (some distributions keep kernels 0600: \
                         copy one somewhere readable, or install linux-image-amd64); set \
                         DELEGATE_QEMU_KERNEL",
                        ctx.boot_dir.display()
                    ),
                )
            })?,
        };
        let kernel = kernel::describe(&image, self.modules.as_deref(), &ctx.modules_root)
            .map_err(|e| invalid("DELEGATE_QEMU_KERNEL", e.to_string()))?;
        if !kernel.modules.join("modules.dep").is_file() {
            return Err(invalid(
                "DELEGATE_QEMU_MODULES",
                format!(
                    "{} has no modules.dep for kernel {}; install that kernel's modules or set \
                     DELEGATE_QEMU_MODULES",
                    kernel.modules.display(),
                    kernel.release
                ),
            ));
        }
        let guest = match &self.guest {
            Some(g) => match super::initramfs::is_static_elf(g) {
                Ok(true) => g.clone(),
                Ok(false) => {
                    return Err(invalid(
                        "DELEGATE_QEMU_GUEST",
                        super::initramfs::InitramfsError::NotStatic(g.clone()).to_string(),
                    ));
                }
                Err(e) => {
                    return Err(invalid(
                        "DELEGATE_QEMU_GUEST",
                        format!("{}: {e}", g.display()),
                    ));
                }
            },
            None => ctx
                .guest_candidates
                .iter()
                .find(|c| super::initramfs::is_static_elf(c).unwrap_or(false))
                .cloned()
                .ok_or_else(|| {
                    let tried: Vec<String> = ctx
                        .guest_candidates
                        .iter()
                        .map(|c| c.display().to_string())
                        .collect();
                    invalid(
                        "DELEGATE_QEMU_GUEST",
                        format!(
                            "no static delegate-guest found (tried: {}); build one: cargo build \
                             --release -p delegate-guest --target x86_64-unknown-linux-musl",
                            if tried.is_empty() {
                                "nothing".into()
                            } else {
                                tried.join(", ")
                            }
                        ),
                    )
                })?,
        };
        if self.boot_timeout_seconds == 0 {
            return Err(invalid("DELEGATE_QEMU_BOOT_TIMEOUT", "must be at least 1"));
        }
        let images = self.images(ctx, &kernel)?;
        Ok(QemuSettings {
            binary,
            kernel,
            guest,
            accel: self.accel,
            boot_timeout: Duration::from_secs(self.boot_timeout_seconds),
            state_dir: ctx.data_dir.join("qemu"),
            hide: vec![ctx.data_dir.clone()],
            mkfs: find_program(ctx.path.as_ref(), "mkfs.ext4"),
            boot_disk_tools: super::bootdisk::Tools::find(ctx.path.as_ref()),
            images,
        })
    }

    /// The image settings: each path checked, `qemu-img` found when any
    /// image is configured, the initrd when images boot the kernel.
    fn images(&self, ctx: &QemuContext, kernel: &Kernel) -> Result<Images, QemuSettingsError> {
        if let Some(image) = &self.image
            && !image.is_file()
        {
            return Err(invalid(
                "DELEGATE_QEMU_IMAGE",
                format!("{} is not a file (a qcow2 disk image)", image.display()),
            ));
        }
        if let Some(dir) = &self.image_dir
            && !dir.is_dir()
        {
            return Err(invalid(
                "DELEGATE_QEMU_IMAGE_DIR",
                format!("{} is not a directory", dir.display()),
            ));
        }
        let mut images = Images {
            default: self.image.clone(),
            dir: self.image_dir.clone(),
            boot: self.image_boot,
            initrd: None,
            qemu_img: None,
        };
        if !images.configured() {
            return Ok(images);
        }
        images.qemu_img = Some(super::image::find_qemu_img(ctx.path.as_ref()).ok_or_else(
            || {
                invalid(
                    "DELEGATE_QEMU_IMAGE",
                    "disk images need qemu-img on PATH for each job's overlay \
                 (Debian: apt-get install qemu-utils)",
                )
            },
        )?);
        if self.image_boot == ImageBoot::Kernel {
            let initrd = self
                .initrd
                .clone()
                .unwrap_or_else(|| ctx.boot_dir.join(format!("initrd.img-{}", kernel.release)));
            if std::fs::File::open(&initrd).is_err() {
                return Err(invalid(
                    "DELEGATE_QEMU_INITRD",
                    format!(
                        "{} cannot be read; DELEGATE_QEMU_IMAGE_BOOT=kernel boots the \
                         kernel with an initrd that mounts root=/dev/vda",
                        initrd.display()
                    ),
                ));
            }
            images.initrd = Some(initrd);
        }
        Ok(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_setting_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = QemuContext {
            path: Some(OsString::from(dir.path())),
            guest_candidates: Vec::new(),
            data_dir: dir.path().join("data"),
            boot_dir: dir.path().join("boot"),
            modules_root: dir.path().join("modules"),
        };
        let err = QemuArgs::default().resolve(&ctx).unwrap_err();
        assert_eq!(err.setting, "DELEGATE_QEMU_BINARY");
        let args = QemuArgs {
            binary: Some(PathBuf::from("/bin/sh")),
            ..QemuArgs::default()
        };
        let err = args.resolve(&ctx).unwrap_err();
        assert_eq!(err.setting, "DELEGATE_QEMU_KERNEL");
        assert!(err.message.contains("boot"), "{err}");
        let args = QemuArgs {
            binary: Some(PathBuf::from("/bin/sh")),
            kernel: Some(PathBuf::from("/bin/sh")),
            ..QemuArgs::default()
        };
        let err = args.resolve(&ctx).unwrap_err();
        assert!(err.message.contains("bzImage"), "{err}");
    }
}
