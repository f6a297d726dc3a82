//! Unpacks the repository archive into the workspace through
//! [`TreeWriter`], so no entry (a `..`, an absolute path, a path through a
//! symlink the archive itself planted) can write outside it.

use std::path::{Component, Path};

use flate2::read::GzDecoder;

use crate::workspace::{EntryError, Owner, TreeWriter, UnpackError};

/// Most entries unpacked.
const MAX_ENTRIES: u64 = 2_000_000;

/// Why the archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The workspace could not be opened.
    #[error(transparent)]
    Workspace(#[from] UnpackError),
    /// The archive is not a readable tar.gz.
    #[error("the archive is not a valid tar.gz: {0}")]
    Malformed(std::io::Error),
    /// An entry was refused or could not be written.
    #[error("entry {path:?}: {source}")]
    Entry {
        /// The entry's path as given.
        path: String,
        /// Why.
        #[source]
        source: EntryError,
    },
    /// An entry of a kind a repository does not hold.
    #[error("entry {path:?} is a {kind}; only files, directories and symlinks are unpacked")]
    Kind {
        /// The entry's path.
        path: String,
        /// Its kind.
        kind: String,
    },
    /// Too many entries.
    #[error("the archive has more than {MAX_ENTRIES} entries")]
    TooMany,
}

/// Unpacks `tar_gz` into `workspace`, or into `workspace/dir`. Returns the
/// number of entries written.
pub fn unpack_archive(
    tar_gz: &Path,
    workspace: &Path,
    dir: Option<&str>,
    owner: Owner,
) -> Result<u64, ArchiveError> {
    let writer = TreeWriter::open(workspace, owner)?;
    let entry_err = |path: &str| {
        let path = path.to_string();
        move |source| ArchiveError::Entry { path, source }
    };
    if let Some(d) = dir {
        writer.dir(d, 0o755).map_err(entry_err(d))?;
    }
    let file = std::fs::File::open(tar_gz).map_err(ArchiveError::Malformed)?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut count = 0;
    for entry in archive.entries().map_err(ArchiveError::Malformed)? {
        let mut entry = entry.map_err(ArchiveError::Malformed)?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(ArchiveError::TooMany);
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = relative(&raw).map_err(|rule| ArchiveError::Entry {
            path: raw.clone(),
            source: EntryError::Refused(crate::workspace::unpack::Refusal::Invalid(rule)),
        })?;
        let Some(rel) = rel else { continue };
        let target = match dir {
            Some(d) => format!("{d}/{rel}"),
            None => rel,
        };
        let mode = entry.header().mode().map_err(ArchiveError::Malformed)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            writer.dir(&target, mode).map_err(entry_err(&raw))?;
        } else if kind.is_file() {
            writer
                .file(&target, &mut entry, mode)
                .map_err(entry_err(&raw))?;
        } else if kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(ArchiveError::Malformed)?
                .ok_or_else(|| {
                    ArchiveError::Malformed(std::io::Error::other("symlink without a target"))
                })?
                .into_owned();
            writer.symlink(&target, &link).map_err(entry_err(&raw))?;
        } else {
            return Err(ArchiveError::Kind {
                path: raw,
                kind: format!("{kind:?}"),
            });
        }
    }
    if dir.is_none() {
        // The runner's directory (the agent's HOME and TMPDIR) sits in the
        // work tree; the agent's git should not offer it as untracked.
        writer
            .append(
                ".git/info/exclude",
                b"\n# delegate-guest: the runner's directory\n/.delegate/\n",
            )
            .map_err(entry_err(".git/info/exclude"))?;
    }
    Ok(count)
}

/// The entry's path as a relative `/`-joined path; `None` for the archive's
/// root (`./`). Absolute paths, `..` and non-UTF-8 names are refused.
fn relative(raw: &str) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(p) => {
                parts.push(p.to_str().ok_or_else(|| format!("{raw:?} is not UTF-8"))?)
            }
            Component::CurDir => {}
            _ => return Err(format!("{raw:?} leaves the workspace")),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_stay_relative() {
        assert_eq!(relative("./a/b").unwrap().as_deref(), Some("a/b"));
        assert_eq!(relative("./").unwrap(), None);
        for bad in ["/etc/passwd", "a/../../x", "../x"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }
}
