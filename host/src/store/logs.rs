//! Append-only log files, read by byte cursor.
//!
//! Appends happen under the store's writer lock and are bounded by the
//! lengths committed in SQLite: bytes beyond the committed length are left
//! over from a write whose transaction never committed, and are cut off
//! before the next append (and never shown to readers).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::StoreError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` at `committed` (the committed length) and returns the
/// new length.
pub fn append(path: &Path, committed: u64, bytes: &[u8]) -> Result<u64, StoreError> {
    if bytes.is_empty() {
        return Ok(committed);
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len != committed {
        file.set_len(committed).map_err(io(path))?;
    }
    file.seek(SeekFrom::Start(committed)).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    Ok(committed + bytes.len() as u64)
}

/// Reads up to `max` bytes from `cursor`, never past `committed`.
pub fn read(path: &Path, cursor: u64, committed: u64, max: usize) -> Result<Vec<u8>, StoreError> {
    let want = committed.saturating_sub(cursor).min(max as u64) as usize;
    if want == 0 {
        return Ok(Vec::new());
    }
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    file.seek(SeekFrom::Start(cursor)).map_err(io(path))?;
    let mut buf = Vec::with_capacity(want);
    file.take(want as u64)
        .read_to_end(&mut buf)
        .map_err(io(path))?;
    Ok(buf)
}
