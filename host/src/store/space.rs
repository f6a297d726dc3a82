//! Room in the data directory: its free space (for `doctor` and for the
//! reason a job fails when it runs out), and a reserve file that is given
//! up when the disk is full, so the job that hit it can still be recorded
//! as failed: SQLite needs a few pages of room to write even that.

use std::io::Write;
use std::path::Path;

use super::{Store, StoreError};

/// The reserve file inside the data directory.
pub const RESERVE_FILE: &str = "space.reserve";
/// Its size: room for many small transactions.
pub const RESERVE_BYTES: u64 = 1 << 20;

/// Space on the file system that holds a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer can still use.
    pub free: u64,
    /// The file system's size.
    pub total: u64,
}

impl std::fmt::Display for DiskSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} free of {}", approx(self.free), approx(self.total))
    }
}

/// A size rounded for people: one decimal in the largest binary unit that
/// fits (`25.7G`), exact below 1K.
fn approx(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("T", 40), ("G", 30), ("M", 20), ("K", 10)];
    for (unit, shift) in UNITS {
        if bytes >= 1 << shift {
            return format!("{:.1}{unit}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes}B")
}

/// The space on the file system of `path`.
pub fn disk_space(path: &Path) -> Result<DiskSpace, StoreError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let unit = st.fragment_size().max(1) as u64;
    Ok(DiskSpace {
        free: (st.blocks_available() as u64).saturating_mul(unit),
        total: (st.blocks() as u64).saturating_mul(unit),
    })
}

impl Store {
    /// The space left in the data directory.
    pub fn disk_space(&self) -> Result<DiskSpace, StoreError> {
        disk_space(self.data_dir())
    }

    /// Gives up the reserve file; true when it was there. Called when a
    /// write found the disk full, right before recording why the job ends.
    pub fn release_reserve(&self) -> bool {
        let released = std::fs::remove_file(self.data_dir().join(RESERVE_FILE)).is_ok();
        if released {
            tracing::warn!(
                data_dir = %self.data_dir().display(),
                "the data directory is full; its reserve was released to record that"
            );
        }
        released
    }

    /// Puts the reserve file back when it is missing and there is room for
    /// it and more (at start, and at each housekeeping round, so it comes
    /// back once space returns).
    pub fn keep_reserve(&self) -> Result<(), StoreError> {
        let path = self.data_dir().join(RESERVE_FILE);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == RESERVE_BYTES) {
            return Ok(());
        }
        if self.disk_space()?.free < 2 * RESERVE_BYTES {
            return Ok(());
        }
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("tmp");
        // Real blocks, not a sparse file: the point is to hold the space.
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&vec![0u8; RESERVE_BYTES as usize])?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_rounded_for_people() {
        assert_eq!(super::approx(512), "512B");
        assert_eq!(super::approx(1536), "1.5K");
        assert_eq!(super::approx(20 << 20), "20.0M");
        assert_eq!(super::approx(27_600_000_000), "25.7G");
    }
}
