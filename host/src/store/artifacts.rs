//! Artifact archives: staged while they stream in, inspected (every entry a
//! plain file or directory at a relative path, sizes bounded), then moved
//! into place with their entry list recorded.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use delegate_proto::ArtifactEntry;
use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{Store, StoreError, create_part_file};

/// File name of the stored archive in `artifacts/<id>/`.
pub const ARCHIVE_FILE: &str = "artifacts.tar.gz";

/// Limits for inspecting an archive.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveCheck {
    /// Most bytes all entries may hold once decompressed (a gzip bomb
    /// stops here).
    pub max_uncompressed: u64,
    /// Most entries.
    pub max_entries: usize,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Over a size cap.
    #[error("artifacts exceed the limit of {limit} bytes ({what})")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// Over a count cap.
    #[error("artifacts exceed the limit of {limit} files ({what})")]
    TooMany {
        /// Which count.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// An entry that could escape the workspace or is not a plain file.
    #[error("artifact entry {entry:?} refused: {reason}")]
    Unsafe {
        /// The entry's path as given.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// Not a gzip'd tar.
    #[error("artifacts are not a valid tar.gz: {0}")]
    Malformed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An upload in progress. Dropping it without
/// [`Store::commit_artifacts`] removes the partial file.
#[derive(Debug)]
pub struct StagedArchive {
    job_id: String,
    path: PathBuf,
    done: bool,
}

impl StagedArchive {
    /// The file to write the upload into.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagedArchive {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What reading one artifact found.
#[derive(Debug, PartialEq, Eq)]
pub enum ArtifactRead {
    /// The file's bytes.
    Found(Vec<u8>),
    /// No archive, or no such file in it.
    Missing,
    /// The file is bigger than asked for; its size.
    TooLarge(u64),
}

/// Turns a tar path into `a/b/c`, or says why it cannot be one.
fn relative_path(raw: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "path is not UTF-8")?;
    let mut parts = Vec::new();
    for c in Path::new(text).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or("path is not UTF-8")?),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("path is absolute"),
        }
    }
    if parts.is_empty() {
        return Err("path is empty");
    }
    Ok(parts.join("/"))
}

/// Lists the staged archive's files with sizes and hashes, refusing
/// anything unsafe.
fn inspect(path: &Path, check: ArchiveCheck) -> Result<Vec<ArtifactEntry>, ArtifactError> {
    let file = std::fs::File::open(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    inspect_archive(file, check)
}

/// Lists the files of a tar.gz read from `gz` with sizes and hashes,
/// refusing anything unsafe. Public for the fuzz targets, which feed it
/// archives from memory.
pub fn inspect_archive(
    gz: impl Read,
    check: ArchiveCheck,
) -> Result<Vec<ArtifactEntry>, ArtifactError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let malformed = |e: std::io::Error| ArtifactError::Malformed(e.to_string());
    let mut entries = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let unsafe_entry = |reason| ArtifactError::Unsafe {
            entry: shown.clone(),
            reason,
        };
        let rel = relative_path(&raw_path).map_err(unsafe_entry)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(unsafe_entry(if kind.is_symlink() {
                "symbolic links are not accepted"
            } else if kind.is_hard_link() {
                "hard links are not accepted"
            } else {
                "only regular files and directories are accepted"
            }));
        }
        if !seen.insert(rel.clone()) {
            return Err(unsafe_entry("the path appears twice"));
        }
        if entries.len() >= check.max_entries {
            return Err(ArtifactError::TooMany {
                what: "number of files",
                limit: check.max_entries as u64,
            });
        }
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        loop {
            let n = entry.read(&mut buf).map_err(malformed)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            total += n as u64;
            if total > check.max_uncompressed {
                return Err(ArtifactError::TooLarge {
                    what: "decompressed size",
                    limit: check.max_uncompressed,
                });
            }
            hasher.update(&buf[..n]);
        }
        entries.push(ArtifactEntry {
            path: rel,
            size,
            sha256: hex(&hasher.finalize()),
        });
    }
    Ok(entries)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl Store {
    /// Creates the file an upload streams into (0600, in the job's
    /// artifact directory).
    pub fn stage_artifacts(&self, job_id: &str) -> Result<StagedArchive, StoreError> {
        let dir = self.artifacts_dir(job_id);
        let path = create_part_file(&dir, "upload")?;
        Ok(StagedArchive {
            job_id: job_id.to_string(),
            path,
            done: false,
        })
    }

    /// Inspects a complete upload and, if it is safe, stores it as the
    /// job's archive (replacing an earlier one) with its entries.
    pub fn commit_artifacts(
        &self,
        mut staged: StagedArchive,
        size: u64,
        sha256: &str,
        check: ArchiveCheck,
    ) -> Result<Vec<ArtifactEntry>, ArtifactError> {
        let entries = inspect(&staged.path, check)?;
        let id = staged.job_id.clone();
        let target = self.artifacts_dir(&id).join(ARCHIVE_FILE);
        std::fs::rename(&staged.path, &target).map_err(|source| StoreError::Io {
            path: target.clone(),
            source,
        })?;
        staged.done = true;
        self.write(|tx| {
            let n = tx
                .execute(
                    "UPDATE jobs SET archive_size = ?2, archive_sha256 = ?3 WHERE id = ?1",
                    params![id, size as i64, sha256],
                )
                .map_err(|e| self.sqlite(e))?;
            if n == 0 {
                return Err(StoreError::NotFound(id.clone()));
            }
            tx.execute("DELETE FROM artifacts WHERE job_id = ?1", [&id])
                .map_err(|e| self.sqlite(e))?;
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO artifacts (job_id, path, size, sha256) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.sqlite(e))?;
            for e in &entries {
                stmt.execute(params![id, e.path, e.size as i64, e.sha256])
                    .map_err(|e| self.sqlite(e))?;
            }
            Ok(())
        })?;
        Ok(entries)
    }

    /// The stored archive, if there is one.
    pub fn archive_path(&self, job_id: &str) -> Option<PathBuf> {
        let p = self.artifacts_dir(job_id).join(ARCHIVE_FILE);
        p.is_file().then_some(p)
    }

    /// One file out of the stored archive, at most `max_bytes` long.
    pub fn read_artifact(
        &self,
        job_id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<ArtifactRead, StoreError> {
        let Ok(wanted) = relative_path(path.as_bytes()) else {
            return Ok(ArtifactRead::Missing);
        };
        let Some(archive_path) = self.archive_path(job_id) else {
            return Ok(ArtifactRead::Missing);
        };
        let io = |source| StoreError::Io {
            path: archive_path.clone(),
            source,
        };
        let file = std::fs::File::open(&archive_path).map_err(io)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in archive.entries().map_err(io)? {
            let entry = entry.map_err(io)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            if relative_path(&entry.path_bytes()).ok().as_deref() != Some(wanted.as_str()) {
                continue;
            }
            let size = entry.size();
            if size > max_bytes {
                return Ok(ArtifactRead::TooLarge(size));
            }
            let mut data = Vec::with_capacity(size as usize);
            entry.take(max_bytes).read_to_end(&mut data).map_err(io)?;
            return Ok(ArtifactRead::Found(data));
        }
        Ok(ArtifactRead::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::relative_path;

    #[test]
    fn tar_paths_stay_relative() {
        assert_eq!(relative_path(b"./out/a.txt"), Ok("out/a.txt".into()));
        assert_eq!(relative_path(b"out//b"), Ok("out/b".into()));
        for bad in [
            &b"../x"[..],
            b"/etc/passwd",
            b"a/../../x",
            b"",
            b".",
            b"\xff",
        ] {
            assert!(
                relative_path(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
