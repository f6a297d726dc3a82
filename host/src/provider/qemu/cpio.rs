//! A writer for the cpio "newc" format, the one format the kernel unpacks
//! as an initramfs. It is a header of hex fields, the name and the data,
//! each padded to four bytes: smaller to write here than a dependency (the
//! `cpio` crate's writer buffers whole files and is little used), and the
//! entries are few and known.

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// Writes entries in order; the kernel creates them as it reads them, so a
/// directory must come before what is inside it.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// A directory (`name` without a leading `/`).
    pub fn dir(&mut self, name: &str, mode: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | (mode & 0o7777), 2, (0, 0), &[])
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (mode & 0o7777), 1, (0, 0), data)
    }

    /// A character device node (the kernel creates it; no privilege is
    /// needed to write the archive).
    pub fn char_dev(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.ino_entry(TRAILER, 0, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio entry name {name:?}"),
            ));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.ino_entry(name, ino, mode, nlink, rdev, data)
    }

    fn ino_entry(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: over 4 GiB"))
        })?;
        let name_size = name.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor
        // rdevminor namesize check; mtime 0 keeps the archive reproducible.
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str(MAGIC);
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..rem])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, rdev, data) of an entry.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads back every entry: the layout the kernel's `init/initramfs.c`
    /// parses.
    fn entries(mut b: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        loop {
            assert_eq!(&b[..6], MAGIC.as_bytes(), "at {pos}");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, rdev, name_size) = (
                field(1),
                field(6) as usize,
                (field(9), field(10)),
                field(11) as usize,
            );
            let name = std::str::from_utf8(&b[110..110 + name_size - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[110 + name_size - 1], 0);
            let data_at = (110 + name_size).div_ceil(4) * 4;
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).div_ceil(4) * 4;
            pos += next;
            b = &b[next..];
            if name == TRAILER {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn writes_entries_the_kernel_can_unpack() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"hello").unwrap();
        w.file("e", 0o644, b"").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let got = entries(&bytes);
        assert_eq!(
            got,
            vec![
                ("dev".into(), 0o040755, (0, 0), vec![]),
                ("dev/console".into(), 0o020600, (5, 1), vec![]),
                ("init".into(), 0o100755, (0, 0), b"hello".to_vec()),
                ("e".into(), 0o100644, (0, 0), vec![]),
            ]
        );
    }

    #[test]
    fn refuses_names_that_are_not_relative() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/init", 0o755, b"").is_err());
        assert!(w.file("", 0o755, b"").is_err());
    }
}
