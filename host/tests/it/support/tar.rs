//! Builds gzip'd tars for tests, including the malicious entries a real
//! tar writer refuses to produce (`../x`, absolute paths, symlinks).

use std::io::Write;

/// One entry.
pub enum Entry<'a> {
    /// A regular file.
    File(&'a str, &'a [u8]),
    /// A directory.
    Dir(&'a str),
    /// A symbolic link to a target.
    Symlink(&'a str, &'a str),
}

fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_old();
    let raw = &mut h.as_old_mut().name;
    assert!(name.len() < raw.len(), "name too long for a test tar");
    raw[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// A tar.gz of the entries, names written verbatim.
pub fn tar_gz(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::File(name, data) => {
                let h = header(name, tar::EntryType::Regular, data.len() as u64);
                builder.append(&h, *data).unwrap();
            }
            Entry::Dir(name) => {
                let h = header(name, tar::EntryType::Directory, 0);
                builder.append(&h, std::io::empty()).unwrap();
            }
            Entry::Symlink(name, target) => {
                let mut h = header(name, tar::EntryType::Symlink, 0);
                let link = &mut h.as_old_mut().linkname;
                link[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                builder.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}
