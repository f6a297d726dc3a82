//! The store: the only code that writes SQLite and the files of the data
//! directory.
//!
//! Layout of the data directory:
//! ```text
//! delegate.db (+ -wal, -shm)   jobs, events, artifact entries
//! host.lock                    flock'ed by the process that runs the engine
//! logs/<id>/stdout.log         the guest's stdout, append-only
//! logs/<id>/stderr.log         the guest's stderr, append-only
//! logs/<id>/combined.log       both, in arrival order
//! artifacts/<id>/artifacts.tar.gz
//! ```

mod error;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::StoreError;

/// Handle to the data directory. Cheap to clone; all clones share one
/// writer connection and one read pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the data directory and its database.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
            }),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }
}
