//! Artifacts: files matching the manifest's globs (relative to the
//! workspace), packed as a tar.gz that is written while each file is hashed.
//!
//! Symbolic links are never followed, nor packed: a link could point out of
//! the workspace. The runner's private directory (`.delegate`, the agent's
//! HOME and TMPDIR) is skipped. A glob that matches a directory takes all
//! the files below it. `*` does not cross `/`; `**` does.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use delegate_proto::ArtifactEntry;
use flate2::Compression;
use flate2::write::GzEncoder;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};

use crate::workspace::PRIVATE_DIR;

/// Most files collected, so a runaway job cannot make the result huge.
pub const MAX_FILES: usize = 100_000;

/// Why artifacts could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A glob does not parse (validation normally catches this).
    #[error("artifacts[{index}] {glob:?}: {reason}")]
    Glob {
        /// Index in `artifacts`.
        index: usize,
        /// The glob.
        glob: String,
        /// Why.
        reason: String,
    },
    /// The files together exceed the cap.
    #[error("artifacts total {total} bytes in {files} files, over the cap of {cap} bytes")]
    TooLarge {
        /// Bytes matched.
        total: u64,
        /// Files matched.
        files: usize,
        /// The cap.
        cap: u64,
    },
    /// Too many files.
    #[error("artifacts match more than {MAX_FILES} files")]
    TooMany,
    /// Reading a file or writing the archive failed.
    #[error("artifact {path}: {source}")]
    Io {
        /// The file (or the archive).
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A file chosen for collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    /// Size when selected.
    pub size: u64,
}

/// Compiles the globs (already checked by manifest validation).
pub fn globset(globs: &[String]) -> Result<GlobSet, ArtifactError> {
    let mut b = GlobSetBuilder::new();
    for (index, g) in globs.iter().enumerate() {
        let err = |reason: String| ArtifactError::Glob {
            index,
            glob: g.clone(),
            reason,
        };
        let rel = delegate_proto::workspace_relative(g).map_err(err)?;
        let glob = GlobBuilder::new(&rel)
            .literal_separator(true)
            .build()
            .map_err(|e| err(e.kind().to_string()))?;
        b.add(glob);
    }
    b.build().map_err(|e| ArtifactError::Glob {
        index: 0,
        glob: String::new(),
        reason: e.to_string(),
    })
}

/// Walks the workspace without following links and returns the matching
/// regular files, sorted.
pub fn select(workspace: &Path, globs: &[String]) -> Result<Vec<Selected>, ArtifactError> {
    let set = globset(globs)?;
    let mut out = Vec::new();
    if !globs.is_empty() {
        walk(workspace, "", &set, false, &mut out)?;
    }
    Ok(out)
}

fn walk(
    dir: &Path,
    rel: &str,
    set: &GlobSet,
    inherited: bool,
    out: &mut Vec<Selected>,
) -> Result<(), ArtifactError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ArtifactError::Io { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            tracing::warn!(
                "skipping artifact with a non-UTF-8 name in {}",
                dir.display()
            );
            continue;
        };
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if rel.is_empty() && name == PRIVATE_DIR {
            continue;
        }
        // DirEntry::file_type does not follow symlinks.
        let Ok(ft) = e.file_type() else { continue };
        let matched = inherited || set.is_match(&child_rel);
        if ft.is_dir() {
            walk(&e.path(), &child_rel, set, matched, out)?;
        } else if ft.is_file() && matched {
            let size = e.metadata().map_err(io(&e.path()))?.len();
            out.push(Selected {
                path: child_rel,
                size,
            });
            if out.len() > MAX_FILES {
                return Err(ArtifactError::TooMany);
            }
        }
    }
    Ok(())
}

/// Packs `files` into a tar.gz at `archive`, hashing each as it is written.
/// Fails before writing anything when the files exceed `cap` bytes.
pub fn pack(
    workspace: &Path,
    files: &[Selected],
    archive: &Path,
    cap: u64,
) -> Result<Vec<ArtifactEntry>, ArtifactError> {
    let total: u64 = files.iter().map(|f| f.size).sum();
    if total > cap {
        return Err(ArtifactError::TooLarge {
            total,
            files: files.len(),
            cap,
        });
    }
    let archive_err = |source| ArtifactError::Io {
        path: archive.display().to_string(),
        source,
    };
    let out = File::create(archive).map_err(archive_err)?;
    let gz = GzEncoder::new(
        BufWriter::with_capacity(256 * 1024, out),
        Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let mut entries = Vec::with_capacity(files.len());
    let mut packed: u64 = 0;
    for f in files {
        let path = workspace.join(&f.path);
        let file_err = |source| ArtifactError::Io {
            path: f.path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(file_err)?;
        let meta = file.metadata().map_err(file_err)?;
        if !meta.is_file() {
            continue; // replaced by something else since the walk
        }
        let size = meta.len();
        packed += size;
        if packed > cap {
            return Err(ArtifactError::TooLarge {
                total: packed,
                files: files.len(),
                cap,
            });
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(meta.mode() & 0o777);
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_uid(0);
        header.set_gid(0);
        let mut reader = Exact::new(file, size);
        tar.append_data(&mut header, &f.path, &mut reader)
            .map_err(file_err)?;
        if reader.short {
            tracing::warn!("{} shrank while being packed; padded with zeros", f.path);
        }
        entries.push(ArtifactEntry {
            path: f.path.clone(),
            size,
            sha256: hex(&reader.hasher.finalize()),
        });
    }
    let gz = tar.into_inner().map_err(archive_err)?;
    let mut buf = gz.finish().map_err(archive_err)?;
    buf.flush().map_err(archive_err)?;
    Ok(entries)
}

/// Selects and packs in one go.
pub fn collect(
    workspace: &Path,
    globs: &[String],
    archive: &Path,
    cap: u64,
) -> Result<Vec<ArtifactEntry>, ArtifactError> {
    let files = select(workspace, globs)?;
    pack(workspace, &files, archive, cap)
}

/// Yields exactly `size` bytes of a file, hashing them: a file that grew is
/// cut, one that shrank is padded, so the tar header is always right.
struct Exact {
    file: File,
    left: u64,
    hasher: Sha256,
    short: bool,
}

impl Exact {
    fn new(file: File, size: u64) -> Self {
        Exact {
            file,
            left: size,
            hasher: Sha256::new(),
            short: false,
        }
    }
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = if self.short {
            0
        } else {
            self.file.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let ws = tempfile::tempdir().unwrap();
        let p = ws.path();
        for (path, content) in [
            ("out/a.txt", "a"),
            ("out/sub/b.txt", "bb"),
            ("top.txt", "t"),
            ("src/main.rs", "fn main() {}"),
            (".delegate/home/.claude.json", "{}"),
        ] {
            std::fs::create_dir_all(p.join(path).parent().unwrap()).unwrap();
            std::fs::write(p.join(path), content).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", p.join("out/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc", p.join("out/etc")).unwrap();
        ws
    }

    fn paths(ws: &Path, globs: &[&str]) -> Vec<String> {
        let globs: Vec<String> = globs.iter().map(|s| s.to_string()).collect();
        select(ws, &globs)
            .unwrap()
            .into_iter()
            .map(|s| s.path)
            .collect()
    }

    #[test]
    fn globs_select_files_and_directories_without_links() {
        let ws = tree();
        assert_eq!(paths(ws.path(), &["*.txt"]), vec!["top.txt"]);
        assert_eq!(
            paths(ws.path(), &["**/*.txt"]),
            vec!["out/a.txt", "out/sub/b.txt", "top.txt"]
        );
        assert_eq!(
            paths(ws.path(), &["out"]),
            vec!["out/a.txt", "out/sub/b.txt"]
        );
        assert_eq!(
            paths(ws.path(), &["/workspace/src/*.rs"]),
            vec!["src/main.rs"]
        );
        assert!(
            paths(ws.path(), &["**"])
                .iter()
                .all(|p| !p.starts_with(".delegate"))
        );
        assert!(paths(ws.path(), &[]).is_empty());
    }

    #[test]
    fn packs_with_hashes_and_enforces_the_cap() {
        let ws = tree();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        let entries = collect(ws.path(), &["out/**".into()], &archive, 1000).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].path, "out/a.txt");
        assert_eq!(entries[0].sha256, hex(&Sha256::digest(b"a")));
        let mut names = Vec::new();
        let mut tar =
            tar::Archive::new(flate2::read::GzDecoder::new(File::open(&archive).unwrap()));
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            names.push((e.path().unwrap().display().to_string(), body));
        }
        assert_eq!(
            names,
            vec![
                ("out/a.txt".into(), "a".into()),
                ("out/sub/b.txt".into(), "bb".into())
            ]
        );

        let err = collect(ws.path(), &["out/**".into()], &archive, 2).unwrap_err();
        assert!(
            matches!(
                err,
                ArtifactError::TooLarge {
                    total: 3,
                    files: 2,
                    cap: 2
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
