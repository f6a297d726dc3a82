//! The micro VM's kernel and initramfs on a small read-only FAT disk that
//! the VM's BIOS (SeaBIOS) boots through syslinux, in place of QEMU's
//! `-kernel`/`-initrd`. QEMU keeps its own copy of a `-kernel` image in its
//! heap for the VM's whole life (to boot it again on reset): 8 MiB of
//! Debian's kernel per VM. A disk is read through the page cache every VM
//! shares. On an idle micro VM under TCG, QEMU's private memory beside the
//! guest's RAM and TCG's cache went from 21.9 to 14.5 MiB, and the boot
//! took no longer.
//!
//! Built once at start with `mkfs.fat` (dosfstools), `mcopy` (mtools) and
//! `syslinux`, none of which needs root. Where one is missing the provider
//! boots with `-kernel` as before (`doctor` says which).

use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The programs that build a boot disk.
#[derive(Debug, Clone)]
pub struct Tools {
    mkfs_fat: PathBuf,
    mcopy: PathBuf,
    syslinux: PathBuf,
}

impl Tools {
    /// All three on the machine's `PATH` or in the sbin directories, or
    /// the name of the first one missing.
    pub fn find(path: Option<&OsString>) -> Result<Tools, &'static str> {
        let find = |name: &'static str| super::settings::find_program(path, name).ok_or(name);
        Ok(Tools {
            mkfs_fat: find("mkfs.fat")?,
            mcopy: find("mcopy")?,
            syslinux: find("syslinux")?,
        })
    }
}

/// The syslinux configuration: boot `vmlinuz` with `initrd` and `cmdline`
/// at once, with no prompt.
fn config(cmdline: &str) -> String {
    format!(
        "DEFAULT micro\nPROMPT 0\nTIMEOUT 0\nLABEL micro\n  LINUX vmlinuz\n  INITRD initrd\n  APPEND {cmdline}\n"
    )
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        // mtools refuses odd geometries unless told not to check.
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|e| format!("running {shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes the boot disk to `out` (0600, replaced atomically): a FAT file
/// system just large enough for the kernel, the initramfs and syslinux.
pub fn build(
    tools: &Tools,
    kernel: &Path,
    initramfs: &Path,
    cmdline: &str,
    out: &Path,
) -> Result<(), String> {
    if cmdline.contains('\n') {
        return Err("the kernel command line holds a line break".into());
    }
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("reading {}: {e}", p.display()))
    };
    // 1 KiB blocks: both files, and 2 MiB for the FAT, syslinux and slack.
    let blocks = (size(kernel)? + size(initramfs)?).div_ceil(1024) + 2048;
    let tmp = out.with_extension("tmp");
    let cfg = out.with_extension("cfg");
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|f| f.set_len(blocks * 1024))
        .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let built = (|| {
        run(Command::new(&tools.mkfs_fat)
            .args(["-n", "DELEGATE"])
            .arg(&tmp))?;
        std::fs::write(&cfg, config(cmdline))
            .map_err(|e| format!("writing {}: {e}", cfg.display()))?;
        for (from, to) in [
            (kernel, "::vmlinuz"),
            (initramfs, "::initrd"),
            (cfg.as_path(), "::syslinux.cfg"),
        ] {
            run(Command::new(&tools.mcopy)
                .arg("-i")
                .arg(&tmp)
                .arg(from)
                .arg(to))?;
        }
        run(Command::new(&tools.syslinux).arg("--install").arg(&tmp))
    })();
    let _ = std::fs::remove_file(&cfg);
    if let Err(e) = built {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("renaming into {}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_boots_at_once_with_the_command_line() {
        let c = config("console=ttyS0 rdinit=/init delegate.workspace_disk");
        assert!(c.contains("PROMPT 0\nTIMEOUT 0\n"));
        assert!(c.ends_with("  APPEND console=ttyS0 rdinit=/init delegate.workspace_disk\n"));
    }

    /// Needs dosfstools, mtools and syslinux (CI installs them).
    #[test]
    fn a_boot_disk_holds_the_kernel_the_initramfs_and_the_command_line() {
        let tools = Tools::find(std::env::var_os("PATH").as_ref()).unwrap_or_else(|missing| {
            panic!("{missing} is missing: apt-get install dosfstools mtools syslinux")
        });
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        let initramfs = dir.path().join("initramfs.img");
        std::fs::write(&kernel, vec![0x4bu8; 300_000]).unwrap();
        std::fs::write(&initramfs, vec![0x1eu8; 200_000]).unwrap();
        let out = dir.path().join("boot.img");
        build(
            &tools,
            &kernel,
            &initramfs,
            "console=ttyS0 delegate.x",
            &out,
        )
        .unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&out).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let mtype = |name: &str| {
            let out = Command::new("mtype")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(&out)
                .arg(format!("::{name}"))
                .output()
                .unwrap();
            assert!(out.status.success(), "mtype {name}: {out:?}");
            out.stdout
        };
        assert_eq!(mtype("vmlinuz"), vec![0x4bu8; 300_000]);
        assert_eq!(mtype("initrd"), vec![0x1eu8; 200_000]);
        let cfg = String::from_utf8(mtype("syslinux.cfg")).unwrap();
        assert!(cfg.contains("APPEND console=ttyS0 delegate.x\n"), "{cfg}");
        assert!(!mtype("ldlinux.sys").is_empty(), "syslinux is installed");
        // A rebuild replaces it; a line break in the command line is refused.
        build(&tools, &kernel, &initramfs, "console=ttyS0", &out).unwrap();
        assert!(
            String::from_utf8(mtype("syslinux.cfg"))
                .unwrap()
                .contains("APPEND console=ttyS0\n")
        );
        let err = build(&tools, &kernel, &initramfs, "a\nb", &out).unwrap_err();
        assert!(err.contains("line break"), "{err}");
    }
}
