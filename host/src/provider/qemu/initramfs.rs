//! The micro VM's initramfs, built by the host at start: the static
//! `delegate-guest` as `/init`, the kernel modules it loads (flat under
//! `/modules`, listed in load order in `/modules.load`), and `/dev/console`
//! so init has a console before devtmpfs is mounted.

use std::io::{BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::cpio::CpioWriter;
use super::modules::ModuleFile;

/// Why the initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The guest binary is dynamically linked: it would find no libraries
    /// in the initramfs.
    #[error(
        "{} is dynamically linked; the qemu provider needs a static delegate-guest as the VM's init \
         (cargo build --release -p delegate-guest --target x86_64-unknown-linux-musl, then \
         DELEGATE_QEMU_GUEST=target/x86_64-unknown-linux-musl/release/delegate-guest)",
        .0.display()
    )]
    NotStatic(PathBuf),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitramfsError {
    let path = path.to_path_buf();
    move |source| InitramfsError::Io { what, path, source }
}

/// True when `path` is an ELF executable without a program interpreter
/// (`PT_INTERP`), i.e. statically linked. Only 64-bit little-endian ELF
/// is understood: the provider runs x86_64 VMs.
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let mut head = vec![0u8; 64];
    if f.read(&mut head)? < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Ok(false);
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(head[0x20..0x28].try_into().unwrap_or([0; 8])) as usize;
    let phentsize = u16_at(&head, 0x36);
    let phnum = u16_at(&head, 0x38);
    if phentsize < 4 || phnum == 0 {
        return Ok(false);
    }
    let mut all = Vec::new();
    std::fs::File::open(path)?
        .take((phoff + phentsize * phnum) as u64)
        .read_to_end(&mut all)?;
    if all.len() < phoff + phentsize * phnum {
        return Ok(false);
    }
    const PT_INTERP: u32 = 3;
    Ok((0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(all[o..o + 4].try_into().unwrap_or([0; 4])) != PT_INTERP
    }))
}

/// Writes the initramfs to `out` (0600, replaced atomically).
pub fn build(guest: &Path, modules: &[ModuleFile], out: &Path) -> Result<(), InitramfsError> {
    if !is_static_elf(guest).map_err(io("reading", guest))? {
        return Err(InitramfsError::NotStatic(guest.to_path_buf()));
    }
    let tmp = out.with_extension("tmp");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    let write = |w: &mut CpioWriter<_>| -> std::io::Result<()> {
        for dir in ["dev", "proc", "sys", "modules"] {
            w.dir(dir, 0o755)?;
        }
        w.char_dev("dev/console", 0o600, 5, 1)?;
        let mut list = String::new();
        for m in modules {
            let base = m.relative.rsplit('/').next().unwrap_or(&m.relative);
            let name = format!("modules/{base}");
            let data = std::fs::read(&m.path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", m.path.display())))?;
            w.file(&name, 0o644, &data)?;
            list.push_str(&name);
            list.push('\n');
        }
        w.file("modules.load", 0o644, list.as_bytes())?;
        let init = std::fs::read(guest)?;
        w.file("init", 0o755, &init)
    };
    write(&mut w).map_err(io("writing", &tmp))?;
    w.finish().map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, out).map_err(io("renaming into", out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_not_static_and_junk_is_not_elf() {
        // The test binary itself is dynamically linked (glibc).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"#!/bin/sh\n").unwrap();
        assert!(!is_static_elf(&junk).unwrap());
        let err = build(&me, &[], &dir.path().join("i.img")).unwrap_err();
        assert!(matches!(err, InitramfsError::NotStatic(_)), "{err}");
    }
}
