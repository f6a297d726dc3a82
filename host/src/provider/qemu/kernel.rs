//! The machine's own kernel for micro VMs: the newest readable
//! `/boot/vmlinuz-*` (or a given one), its version read from the bzImage
//! header, and the module directory of that version.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A kernel and its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The bzImage.
    pub image: PathBuf,
    /// Its release, e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// `/lib/modules/<release>` (or the given directory).
    pub modules: PathBuf,
}

/// The newest kernel image under `boot` that this process can read
/// (Ubuntu keeps them 0600: then none is found and the user must name one).
pub fn newest_in(boot: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(boot).ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            let path = e.path();
            std::fs::File::open(&path).ok()?;
            Some((version_key(&version), path))
        })
        .max()
        .map(|(_, p)| p)
}

/// Orders versions by their numbers: `6.10.0` after `6.9.12`.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The release string stored in a bzImage's setup header (the
/// `kernel_version` field at 0x20e points at it, relative to 0x200), as
/// `file` and the boot loaders read it.
pub fn release_of(image: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(image)?;
    let mut hdr = [0u8; 0x210];
    f.read_exact(&mut hdr)?;
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", image.display()),
        )
    };
    if &hdr[0x202..0x206] != b"HdrS" {
        return Err(invalid("not a bzImage (no HdrS setup header)"));
    }
    let ptr = u16::from_le_bytes([hdr[0x20e], hdr[0x20f]]) as u64;
    if ptr == 0 {
        return Err(invalid("the setup header names no kernel version"));
    }
    f.seek(SeekFrom::Start(ptr + 0x200))?;
    let mut text = [0u8; 256];
    let n = f.read(&mut text)?;
    let s = String::from_utf8_lossy(&text[..n]);
    s.split(|c: char| c.is_whitespace() || c == '\0')
        .next()
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .ok_or_else(|| invalid("empty kernel version"))
}

/// The kernel `image` with its module directory: `modules` when given,
/// else `<modules_root>/<release>`.
pub fn describe(
    image: &Path,
    modules: Option<&Path>,
    modules_root: &Path,
) -> std::io::Result<Kernel> {
    let release = release_of(image)?;
    let modules = modules
        .map(Path::to_path_buf)
        .unwrap_or_else(|| modules_root.join(&release));
    Ok(Kernel {
        image: image.to_path_buf(),
        release,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(release: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let at = 0x300;
        b[at..at + release.len()].copy_from_slice(release.as_bytes());
        b
    }

    #[test]
    fn reads_the_release_and_picks_the_newest_readable_image() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["6.9.12-amd64", "6.10.0-1-amd64", "5.10.0-9-amd64"] {
            std::fs::write(
                dir.path().join(format!("vmlinuz-{v}")),
                fake_bzimage(&format!("{v} (debian-kernel@lists.debian.org) #1 SMP")),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("config-7.0.0"), "").unwrap();
        let newest = newest_in(dir.path()).unwrap();
        assert!(newest.ends_with("vmlinuz-6.10.0-1-amd64"), "{newest:?}");
        let k = describe(&newest, None, Path::new("/lib/modules")).unwrap();
        assert_eq!(k.release, "6.10.0-1-amd64");
        assert_eq!(k.modules, Path::new("/lib/modules/6.10.0-1-amd64"));
        std::fs::write(dir.path().join("junk"), b"not a kernel").unwrap();
        assert!(release_of(&dir.path().join("junk")).is_err());
        assert_eq!(newest_in(&dir.path().join("none")), None);
    }
}
