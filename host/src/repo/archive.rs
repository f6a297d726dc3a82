//! The repository archive: a tar.gz of the work tree's files that are not
//! ignored (tracked or not, as they are on disk) and the whole `.git`,
//! written while counting so the size cap stops it early.

use std::fs::Metadata;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::{RepoError, git};

/// What was archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoArchive {
    /// `HEAD`'s commit; `None` in a repository without commits.
    pub base_commit: Option<String>,
    /// Bytes of the archive.
    pub size: u64,
    /// Files from the work tree (`.git` not counted).
    pub files: u64,
}

/// Writes the archive of the work tree at `top` (from [`super::resolve_repo`])
/// to `out`, refusing to go past `max_bytes`.
pub fn build_archive(top: &Path, out: &Path, max_bytes: u64) -> Result<RepoArchive, RepoError> {
    let base_commit = git(top, &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
        .ok()
        .map(|o| String::from_utf8_lossy(&o).trim().to_string())
        .filter(|s| !s.is_empty());
    let listed = git(
        top,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    )?;
    let mut paths: Vec<&[u8]> = listed
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .collect();
    // Unmerged entries are listed once per stage.
    paths.dedup();

    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RepoError::Io { path, source }
    };
    let file = std::fs::File::create(out).map_err(io(out))?;
    let counted = Capped {
        inner: file,
        written: 0,
        max: max_bytes,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(counted, Compression::fast()));
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let mut files = 0;
    for raw in paths {
        let rel = PathBuf::from(std::ffi::OsStr::from_bytes(raw));
        let abs = top.join(&rel);
        let Ok(meta) = std::fs::symlink_metadata(&abs) else {
            continue; // tracked but deleted on disk: it stays deleted
        };
        // Directories here are submodules (gitlinks): not delivered.
        if meta.is_file() || meta.is_symlink() {
            append(&mut tar, &abs, &rel, &meta, max_bytes)?;
            files += 1;
        }
    }
    append_tree(&mut tar, &top.join(".git"), Path::new(".git"), max_bytes)?;
    let gz = tar
        .into_inner()
        .map_err(|e| too_large_or(e, max_bytes, out))?;
    let counted = gz.finish().map_err(|e| too_large_or(e, max_bytes, out))?;
    let size = counted.written;
    counted.inner.sync_all().map_err(io(out))?;
    Ok(RepoArchive {
        base_commit,
        size,
        files,
    })
}

/// Every file, directory and symlink under `dir`, as `name/...`; sockets
/// and other special files (an fsmonitor socket) are skipped.
fn append_tree(
    tar: &mut tar::Builder<GzEncoder<Capped>>,
    dir: &Path,
    name: &Path,
    max: u64,
) -> Result<(), RepoError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| RepoError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    append(tar, dir, name, &meta, max)?;
    let entries = std::fs::read_dir(dir).map_err(|source| RepoError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| RepoError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let child = name.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&path).map_err(|source| RepoError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            append_tree(tar, &path, &child, max)?;
        } else if meta.is_file() || meta.is_symlink() {
            append(tar, &path, &child, &meta, max)?;
        }
    }
    Ok(())
}

fn append(
    tar: &mut tar::Builder<GzEncoder<Capped>>,
    abs: &Path,
    name: &Path,
    meta: &Metadata,
    max: u64,
) -> Result<(), RepoError> {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header.set_mode(meta.mode() & 0o777);
    let res = if meta.is_symlink() {
        let target = std::fs::read_link(abs).map_err(|source| RepoError::Io {
            path: abs.to_path_buf(),
            source,
        })?;
        header.set_size(0);
        tar.append_link(&mut header, name, &target)
    } else if meta.is_dir() {
        header.set_size(0);
        tar.append_data(&mut header, name, std::io::empty())
    } else {
        let file = std::fs::File::open(abs).map_err(|source| RepoError::Io {
            path: abs.to_path_buf(),
            source,
        })?;
        // The size from the open file: one that changes while being read
        // fails the archive rather than corrupting it.
        header.set_size(file.metadata().map(|m| m.len()).unwrap_or(meta.len()));
        tar.append_data(&mut header, name, file)
    };
    res.map_err(|e| too_large_or(e, max, abs))
}

fn too_large_or(e: std::io::Error, max: u64, path: &Path) -> RepoError {
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        RepoError::TooLarge { limit: max }
    } else {
        RepoError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// The archive file, failing with `FileTooLarge` past the cap.
struct Capped {
    inner: std::fs::File,
    written: u64,
    max: u64,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.max {
            return Err(std::io::Error::from(std::io::ErrorKind::FileTooLarge));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
