//! `host.lock`: one engine per data directory.
//!
//! The engine holds an exclusive `flock` on the file for its whole life and
//! writes its pid into it, so a second `serve` can say who is in the way.
//! The kernel drops the lock when the process dies, so a crash never leaves
//! a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// Held while the engine runs; dropping it releases the lock.
pub struct HostLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl std::fmt::Debug for HostLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLock")
            .field("path", &self.path)
            .finish()
    }
}

impl HostLock {
    /// Takes the lock without waiting.
    pub fn acquire(data_dir: &Path) -> Result<HostLock, StoreError> {
        let path = data_dir.join("host.lock");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    pid: text.trim().parse().ok(),
                    data_dir: data_dir.to_path_buf(),
                });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        locked.set_len(0).map_err(io)?;
        locked.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(locked, "{}", std::process::id()).map_err(io)?;
        Ok(HostLock {
            _file: locked,
            path,
        })
    }
}
