//! Disk-image mode: a job boots a qcow2 image (such as the template the
//! Packer config builds) through a copy-on-write overlay of its own in the
//! VM's directory, so the image itself is never written and the overlay
//! goes with the VM. Which image: the manifest's `vmTemplate` names one in
//! `DELEGATE_QEMU_IMAGE_DIR`, else `DELEGATE_QEMU_IMAGE`; with neither the
//! job runs in a micro VM.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The `qemu-img` program looked up on `PATH` when an image is configured.
pub const QEMU_IMG: &str = "qemu-img";

/// How an image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ImageBoot {
    /// The image's own boot loader (a Packer-built disk with GRUB).
    #[default]
    Firmware,
    /// The machine's kernel and initrd with `root=/dev/vda`: for an image
    /// that is a bare file system without a boot loader.
    Kernel,
}

impl ImageBoot {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageBoot::Firmware => "firmware",
            ImageBoot::Kernel => "kernel",
        }
    }
}

/// Where jobs' images come from.
#[derive(Debug, Clone, Default)]
pub struct Images {
    /// `DELEGATE_QEMU_IMAGE`: the image of jobs that name no template.
    pub default: Option<PathBuf>,
    /// `DELEGATE_QEMU_IMAGE_DIR`: where `vmTemplate` names are looked up.
    pub dir: Option<PathBuf>,
    /// How images boot.
    pub boot: ImageBoot,
    /// The initrd for [`ImageBoot::Kernel`].
    pub initrd: Option<PathBuf>,
    /// `qemu-img`, found when an image is configured.
    pub qemu_img: Option<PathBuf>,
}

/// Why a job's image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The template names something other than a plain file name.
    #[error(
        "vmTemplate {0:?} is not an image name: it may not contain '/', '\\0' or start with '.'"
    )]
    BadName(String),
    /// A template was named but there is no image directory.
    #[error(
        "vmTemplate {0:?} names a disk image, but DELEGATE_QEMU_IMAGE_DIR is not set; \
         set it, or leave vmTemplate out for a micro VM"
    )]
    NoDir(String),
    /// Neither `<name>` nor `<name>.qcow2` is in the directory.
    #[error("no image {name:?} in {}: neither {name} nor {name}.qcow2 is a file", .dir.display())]
    Missing {
        /// The template.
        name: String,
        /// The image directory.
        dir: PathBuf,
    },
    /// `qemu-img` failed or is missing.
    #[error("{0}")]
    QemuImg(String),
}

impl Images {
    /// Whether any job may use an image.
    pub fn configured(&self) -> bool {
        self.default.is_some() || self.dir.is_some()
    }

    /// The image a job with `template` boots; `None` for a micro VM.
    pub fn for_job(&self, template: Option<&str>) -> Result<Option<PathBuf>, ImageError> {
        let Some(name) = template else {
            return Ok(self.default.clone());
        };
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
            return Err(ImageError::BadName(name.to_string()));
        }
        let Some(dir) = &self.dir else {
            return Err(ImageError::NoDir(name.to_string()));
        };
        [dir.join(name), dir.join(format!("{name}.qcow2"))]
            .into_iter()
            .find(|p| p.is_file())
            .map(Some)
            .ok_or_else(|| ImageError::Missing {
                name: name.to_string(),
                dir: dir.clone(),
            })
    }
}

/// `qemu-img` on `PATH`.
pub fn find_qemu_img(path: Option<&OsString>) -> Option<PathBuf> {
    super::settings::find_program(path, QEMU_IMG)
}

async fn run(qemu_img: &Path, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, ImageError> {
    let out = tokio::process::Command::new(qemu_img)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| ImageError::QemuImg(format!("running {}: {e}", qemu_img.display())))?;
    if !out.status.success() {
        let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        return Err(ImageError::QemuImg(format!(
            "{} {} failed ({}): {}",
            qemu_img.display(),
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

fn info_args(image: &Path) -> [&std::ffi::OsStr; 5] {
    [
        "info".as_ref(),
        "--output=json".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        image.as_os_str(),
    ]
}

/// `virtual-size` from `qemu-img info --output=json`.
fn parse_virtual_size(info: &[u8], image: &Path) -> Result<u64, ImageError> {
    let info: serde_json::Value = serde_json::from_slice(info)
        .map_err(|e| ImageError::QemuImg(format!("qemu-img info {}: {e}", image.display())))?;
    info.get("virtual-size")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| {
            ImageError::QemuImg(format!(
                "qemu-img info {} names no virtual-size",
                image.display()
            ))
        })
}

/// The virtual size of a qcow2 image in bytes.
pub async fn virtual_size(qemu_img: &Path, image: &Path) -> Result<u64, ImageError> {
    let out = run(qemu_img, &info_args(image)).await?;
    parse_virtual_size(&out, image)
}

/// [`virtual_size`] for code outside the runtime (`doctor`).
pub fn virtual_size_blocking(qemu_img: &Path, image: &Path) -> Result<u64, ImageError> {
    let out = std::process::Command::new(qemu_img)
        .args(info_args(image))
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ImageError::QemuImg(format!("running {}: {e}", qemu_img.display())))?;
    if !out.status.success() {
        return Err(ImageError::QemuImg(format!(
            "{} info {} failed ({}): {}",
            qemu_img.display(),
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_virtual_size(&out.stdout, image)
}

/// Creates `overlay` over `image`: `disk_bytes` large, but never smaller
/// than the image (a smaller overlay would cut its file system off).
/// Returns the overlay's size.
pub async fn create_overlay(
    qemu_img: &Path,
    image: &Path,
    overlay: &Path,
    disk_bytes: u64,
) -> Result<u64, ImageError> {
    let base = virtual_size(qemu_img, image).await?;
    let size = disk_bytes.max(base);
    // An absolute backing path: the overlay lives elsewhere.
    let image = std::path::absolute(image)
        .map_err(|e| ImageError::QemuImg(format!("{}: {e}", image.display())))?;
    let size_arg = size.to_string();
    run(
        qemu_img,
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            image.as_os_str(),
            overlay.as_os_str(),
            size_arg.as_ref(),
        ],
    )
    .await?;
    // qemu-img creates it 0644; the job's disk is nobody else's business.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(overlay, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ImageError::QemuImg(format!("chmod {}: {e}", overlay.display())))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_a_file_name_in_the_image_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.qcow2"), b"").unwrap();
        std::fs::write(dir.path().join("exact"), b"").unwrap();
        let images = Images {
            default: Some(PathBuf::from("/images/default.qcow2")),
            dir: Some(dir.path().to_path_buf()),
            ..Images::default()
        };
        assert_eq!(
            images.for_job(None).unwrap(),
            Some(PathBuf::from("/images/default.qcow2"))
        );
        assert_eq!(
            images.for_job(Some("base")).unwrap(),
            Some(dir.path().join("base.qcow2"))
        );
        assert_eq!(
            images.for_job(Some("exact")).unwrap(),
            Some(dir.path().join("exact"))
        );
        for bad in ["../base", "a/b", ".hidden", "", "x\0y"] {
            assert!(
                matches!(images.for_job(Some(bad)), Err(ImageError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            images.for_job(Some("absent")),
            Err(ImageError::Missing { .. })
        ));
        let no_dir = Images::default();
        assert_eq!(no_dir.for_job(None).unwrap(), None);
        assert!(matches!(
            no_dir.for_job(Some("base")),
            Err(ImageError::NoDir(_))
        ));
    }

    /// Needs qemu-img (qemu-utils), as disk-image mode does.
    #[tokio::test]
    async fn an_overlay_is_never_smaller_than_its_image() {
        let qemu_img = find_qemu_img(std::env::var_os("PATH").as_ref())
            .expect("qemu-img on PATH (Debian: qemu-utils)");
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("base.qcow2");
        let out = std::process::Command::new(&qemu_img)
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg("64M")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let small = dir.path().join("small.qcow2");
        let size = create_overlay(&qemu_img, &image, &small, 16 << 20)
            .await
            .unwrap();
        assert_eq!(size, 64 << 20);
        assert_eq!(virtual_size(&qemu_img, &small).await.unwrap(), 64 << 20);
        let big = dir.path().join("big.qcow2");
        create_overlay(&qemu_img, &image, &big, 1 << 30)
            .await
            .unwrap();
        assert_eq!(virtual_size(&qemu_img, &big).await.unwrap(), 1 << 30);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&big).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The image itself is only read.
        assert_eq!(virtual_size_blocking(&qemu_img, &image).unwrap(), 64 << 20);
        let missing = dir.path().join("absent.qcow2");
        let err = create_overlay(&qemu_img, &missing, &dir.path().join("x"), 1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("absent.qcow2"), "{err}");
    }
}
