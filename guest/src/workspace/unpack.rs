//! Writes the manifest's input files into the workspace without ever leaving
//! it: every directory is opened relative to its parent with `O_NOFOLLOW`,
//! files are created with `O_EXCL | O_NOFOLLOW` (an existing file is unlinked
//! first, so a hard link cannot be written through), and a first pass checks
//! every path so that a refusal happens before anything is written or run.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use delegate_proto::InputFile;
use delegate_proto::manifest::FileMode;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

/// Mode of files without an explicit `mode`.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of directories created for input files.
const DIR_MODE: u32 = 0o755;

/// Who owns what the runner creates for the agent.
pub type Owner = Option<(Uid, Gid)>;

/// Why an input file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The path itself breaks a rule (`..`, absolute elsewhere, ...).
    #[error("{0}")]
    Invalid(String),
    /// A directory on the way is a symbolic link.
    #[error("{0:?} is a symbolic link")]
    Symlink(String),
    /// A directory on the way is something else than a directory.
    #[error("{0:?} is not a directory")]
    NotADirectory(String),
    /// The file exists and is not a regular file.
    #[error("{0:?} exists and is not a regular file")]
    NotARegularFile(String),
}

/// Why unpacking failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// A path was refused; nothing was written.
    #[error("files[{index}].path {path:?} refused: {refusal}")]
    Refused {
        /// Index in `files`.
        index: usize,
        /// The path as given.
        path: String,
        /// Why.
        refusal: Refusal,
    },
    /// Content that does not decode, or neither or both of `content` and
    /// `text` (validation normally catches this).
    #[error("files[{index}]: {reason}")]
    Content {
        /// Index in `files`.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The file system said no.
    #[error("files[{index}].path {path:?}: {source}")]
    Io {
        /// Index in `files`.
        index: usize,
        /// The path as given.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The workspace itself could not be opened.
    #[error("workspace {path}: {source}")]
    Workspace {
        /// The workspace.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Writes `files` into `workspace` after checking all of them. Returns the
/// number of bytes written.
pub fn unpack(workspace: &Path, files: &[InputFile], owner: Owner) -> Result<u64, UnpackError> {
    let root = open_workspace(workspace)?;
    let mut plan = Vec::with_capacity(files.len());
    for (index, f) in files.iter().enumerate() {
        let refused = |refusal| UnpackError::Refused {
            index,
            path: f.path.clone(),
            refusal,
        };
        let rel = delegate_proto::workspace_relative(&f.path)
            .map_err(|e| refused(Refusal::Invalid(e)))?;
        check_path(&root, &rel).map_err(|e| match e {
            Walk::Refused(r) => refused(r),
            Walk::Io(source) => UnpackError::Io {
                index,
                path: f.path.clone(),
                source,
            },
        })?;
        let content = f
            .bytes()
            .map_err(|reason| UnpackError::Content { index, reason })?;
        plan.push((index, rel, content));
    }
    let mut written = 0;
    for (index, rel, content) in plan {
        let f = &files[index];
        let mode = f
            .mode
            .as_ref()
            .and_then(FileMode::bits)
            .unwrap_or(DEFAULT_FILE_MODE)
            & 0o777;
        write_file(&root, &rel, &mut content.as_slice(), mode, owner).map_err(|e| match e {
            Walk::Refused(refusal) => UnpackError::Refused {
                index,
                path: f.path.clone(),
                refusal,
            },
            Walk::Io(source) => UnpackError::Io {
                index,
                path: f.path.clone(),
                source,
            },
        })?;
        written += content.len() as u64;
    }
    Ok(written)
}

/// Creates (or opens) directory `rel` under `workspace` without following
/// symlinks, owned by `owner`, with `mode` when it is created.
pub fn ensure_dir(workspace: &Path, rel: &str, mode: u32, owner: Owner) -> Result<(), UnpackError> {
    let root = open_workspace(workspace)?;
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    walk(&root, &parts, Some((owner, mode)))
        .map(drop)
        .map_err(|e| match e {
            Walk::Refused(refusal) => UnpackError::Refused {
                index: 0,
                path: rel.into(),
                refusal,
            },
            Walk::Io(source) => UnpackError::Io {
                index: 0,
                path: rel.into(),
                source,
            },
        })
}

fn open_workspace(workspace: &Path) -> Result<OwnedFd, UnpackError> {
    nix::fcntl::open(
        workspace,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Workspace {
        path: workspace.display().to_string(),
        source: e.into(),
    })
}

enum Walk {
    Refused(Refusal),
    Io(std::io::Error),
}

impl From<Errno> for Walk {
    fn from(e: Errno) -> Self {
        Walk::Io(e.into())
    }
}

fn split(rel: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = rel.split('/').collect();
    let name = parts.pop().unwrap_or_default();
    (parts, name)
}

/// Pass one: every existing parent is a real directory, an existing file is
/// a regular file. Nothing is created.
fn check_path(root: &OwnedFd, rel: &str) -> Result<(), Walk> {
    let (dirs, name) = split(rel);
    let Some(parent) = walk(root, &dirs, None)? else {
        return Ok(()); // a parent does not exist yet: it will be created
    };
    check_existing_file(&parent, name, rel)
}

fn check_existing_file(parent: &OwnedFd, name: &str, rel: &str) -> Result<(), Walk> {
    match fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG => Ok(()),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
            Err(Walk::Refused(Refusal::Symlink(rel.into())))
        }
        Ok(_) => Err(Walk::Refused(Refusal::NotARegularFile(rel.into()))),
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Opens `dirs` one by one below `root`. With `create`, missing ones are
/// made; without, a missing one ends the walk with `None`.
fn walk(
    root: &OwnedFd,
    dirs: &[&str],
    create: Option<(Owner, u32)>,
) -> Result<Option<OwnedFd>, Walk> {
    let mut cur = root.try_clone().map_err(Walk::Io)?;
    let mut so_far = String::new();
    for part in dirs {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(part);
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let next = match openat(cur.as_fd(), *part, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => match create {
                None => return Ok(None),
                Some((owner, mode)) => {
                    match mkdirat(cur.as_fd(), *part, Mode::from_bits_truncate(mode)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    let fd = openat(cur.as_fd(), *part, flags, Mode::empty())
                        .map_err(|e| classify(&cur, part, &so_far, e))?;
                    // mkdir honours the umask; the mode asked for is meant.
                    fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))?;
                    if let Some((uid, gid)) = owner {
                        fchown(fd.as_fd(), Some(uid), Some(gid))?;
                    }
                    fd
                }
            },
            Err(e) => return Err(classify(&cur, part, &so_far, e)),
        };
        cur = next;
    }
    Ok(Some(cur))
}

/// Turns an open error on a path component into a refusal when the
/// component is a symlink or not a directory.
fn classify(parent: &OwnedFd, part: &str, so_far: &str, e: Errno) -> Walk {
    if !matches!(e, Errno::ELOOP | Errno::ENOTDIR) {
        return e.into();
    }
    match fstatat(parent.as_fd(), part, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
            Walk::Refused(Refusal::Symlink(so_far.into()))
        }
        _ => Walk::Refused(Refusal::NotADirectory(so_far.into())),
    }
}

/// Pass two: create parents and write the file.
fn write_file(
    root: &OwnedFd,
    rel: &str,
    content: &mut dyn std::io::Read,
    mode: u32,
    owner: Owner,
) -> Result<(), Walk> {
    let parent = replace_in_parent(root, rel, owner)?;
    let (_, name) = split(rel);
    let fd = openat(
        parent.as_fd(),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut file = std::fs::File::from(fd);
    std::io::copy(content, &mut file).map_err(Walk::Io)?;
    file.flush().map_err(Walk::Io)?;
    fchmod(file.as_fd(), Mode::from_bits_truncate(mode))?;
    if let Some((uid, gid)) = owner {
        fchown(file.as_fd(), Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Opens (creating) `rel`'s parent directories and removes an existing
/// regular file at `rel`, so that what is written next is new.
fn replace_in_parent(root: &OwnedFd, rel: &str, owner: Owner) -> Result<OwnedFd, Walk> {
    let (dirs, name) = split(rel);
    let parent = walk(root, &dirs, Some((owner, DIR_MODE)))?
        .ok_or_else(|| Walk::Io(std::io::Error::other("parent vanished")))?;
    check_existing_file(&parent, name, rel)?;
    match unlinkat(parent.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(parent)
}

/// Why one entry of a tree being written was refused.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The path breaks a rule (a symlink or a file on the way, ...).
    #[error("{0}")]
    Refused(Refusal),
    /// The file system said no.
    #[error(transparent)]
    Io(std::io::Error),
}

impl From<Walk> for EntryError {
    fn from(w: Walk) -> Self {
        match w {
            Walk::Refused(r) => EntryError::Refused(r),
            Walk::Io(e) => EntryError::Io(e),
        }
    }
}

/// Writes a whole tree (an archive's entries) into the workspace with the
/// same checks as [`unpack`]: nothing is followed out of it, and every
/// path is taken relative to the workspace as given (callers check it with
/// `workspace_relative` first).
pub struct TreeWriter {
    root: OwnedFd,
    owner: Owner,
}

impl TreeWriter {
    /// Opens `workspace` for writing.
    pub fn open(workspace: &Path, owner: Owner) -> Result<TreeWriter, UnpackError> {
        Ok(TreeWriter {
            root: open_workspace(workspace)?,
            owner,
        })
    }

    /// Creates directory `rel` (and its parents) with `mode`.
    pub fn dir(&self, rel: &str, mode: u32) -> Result<(), EntryError> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        let fd = walk(&self.root, &parts, Some((self.owner, mode & 0o777)))?
            .ok_or_else(|| Walk::Io(std::io::Error::other("directory vanished")))?;
        // An existing directory (made earlier as a parent) gets its own mode.
        fchmod(fd.as_fd(), Mode::from_bits_truncate(mode & 0o777)).map_err(Walk::from)?;
        Ok(())
    }

    /// Writes regular file `rel` from `content` with `mode`.
    pub fn file(
        &self,
        rel: &str,
        content: &mut dyn std::io::Read,
        mode: u32,
    ) -> Result<(), EntryError> {
        Ok(write_file(
            &self.root,
            rel,
            content,
            mode & 0o777,
            self.owner,
        )?)
    }

    /// Appends `bytes` to regular file `rel`, creating it (and its parents)
    /// when missing; a symlink at `rel` is refused, never followed.
    pub fn append(&self, rel: &str, bytes: &[u8]) -> Result<(), EntryError> {
        let (dirs, name) = split(rel);
        let parent = walk(&self.root, &dirs, Some((self.owner, DIR_MODE)))?
            .ok_or_else(|| Walk::Io(std::io::Error::other("parent vanished")))?;
        check_existing_file(&parent, name, rel)?;
        let fd = openat(
            parent.as_fd(),
            name,
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_APPEND
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(DEFAULT_FILE_MODE),
        )
        .map_err(Walk::from)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes).map_err(Walk::Io)?;
        Ok(())
    }

    /// Creates symbolic link `rel` pointing at `target`. The target is
    /// stored, never followed: later entries under it are refused by the
    /// `O_NOFOLLOW` walk.
    pub fn symlink(&self, rel: &str, target: &Path) -> Result<(), EntryError> {
        let parent = replace_in_parent(&self.root, rel, self.owner)?;
        let (_, name) = split(rel);
        nix::unistd::symlinkat(target, parent.as_fd(), name).map_err(Walk::from)?;
        if let Some((uid, gid)) = self.owner {
            nix::unistd::fchownat(
                parent.as_fd(),
                name,
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(Walk::from)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use base64::Engine as _;

    use super::*;

    fn file(path: &str, content: &[u8], mode: Option<FileMode>) -> InputFile {
        InputFile {
            path: path.into(),
            content: Some(base64::engine::general_purpose::STANDARD.encode(content)),
            text: None,
            mode,
        }
    }

    #[test]
    fn writes_files_with_parents_and_modes() {
        let ws = tempfile::tempdir().unwrap();
        let files = [
            file(
                "/workspace/src/main.py",
                b"print(1)\n",
                Some(FileMode::Octal("0755".into())),
            ),
            file("./a/b/c.txt", b"abc", None),
            file("top", b"", Some(FileMode::Number(0o600))),
        ];
        assert_eq!(unpack(ws.path(), &files, None).unwrap(), 12);
        let main = ws.path().join("src/main.py");
        assert_eq!(std::fs::read(&main).unwrap(), b"print(1)\n");
        assert_eq!(
            std::fs::metadata(&main).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(std::fs::read(ws.path().join("a/b/c.txt")).unwrap(), b"abc");
        let top = std::fs::metadata(ws.path().join("top")).unwrap();
        assert_eq!(top.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn refuses_symlinked_parents_and_targets_before_writing_anything() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("t"), ws.path().join("target")).unwrap();
        for bad in ["link/x", "link/deeper/x", "target"] {
            let files = [file("first", b"1", None), file(bad, b"pwned", None)];
            let err = unpack(ws.path(), &files, None).unwrap_err();
            assert!(
                matches!(
                    err,
                    UnpackError::Refused {
                        index: 1,
                        refusal: Refusal::Symlink(_),
                        ..
                    }
                ),
                "{bad}: {err}"
            );
            assert!(
                !ws.path().join("first").exists(),
                "nothing written before refusal"
            );
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_traversal_and_non_files() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir(ws.path().join("dir")).unwrap();
        std::fs::write(ws.path().join("plain"), "x").unwrap();
        for (bad, what) in [
            ("../x", "contains '..'"),
            ("/etc/passwd", "absolute"),
            ("dir", "not a regular file"),
            ("plain/x", "not a directory"),
        ] {
            let err = unpack(ws.path(), &[file(bad, b"x", None)], None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{bad}: {err}");
        }
    }

    #[test]
    fn overwrites_by_replacing_so_hard_links_are_not_written_through() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "original").unwrap();
        std::fs::hard_link(&victim, ws.path().join("f")).unwrap();
        unpack(ws.path(), &[file("f", b"new", None)], None).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"original");
        assert_eq!(std::fs::read(ws.path().join("f")).unwrap(), b"new");
    }

    #[test]
    fn ensure_dir_refuses_symlinks() {
        let ws = tempfile::tempdir().unwrap();
        ensure_dir(ws.path(), ".delegate/home", 0o700, None).unwrap();
        let m = std::fs::metadata(ws.path().join(".delegate/home")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        std::os::unix::fs::symlink("/tmp", ws.path().join("evil")).unwrap();
        assert!(ensure_dir(ws.path(), "evil/home", 0o700, None).is_err());
    }
}
