//! The on-disk part of the event queue: segment files, each written once
//! (JSON lines, append-only) and deleted once read back or compacted.
//!
//! Only the file contents live on disk; what each line is (seq, class,
//! length) stays in memory, so the drop policy never has to parse a file.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::item::{Class, Item};

/// File names are `events-<n>.jsonl`, so stale ones are easy to recognise.
const PREFIX: &str = "events-";
const SUFFIX: &str = ".jsonl";

/// What one line of a segment is.
#[derive(Debug)]
struct Meta {
    seq: u64,
    class: Class,
    len: usize,
}

/// One spool file.
#[derive(Debug)]
pub(crate) struct Segment {
    path: PathBuf,
    metas: Vec<Meta>,
    /// Bytes of the file.
    bytes: u64,
}

impl Segment {
    pub(crate) fn first_seq(&self) -> u64 {
        self.metas.first().map_or(0, |m| m.seq)
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.metas.last().map_or(0, |m| m.seq)
    }

    /// Deletes the file of a popped segment without reading it.
    pub(crate) fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The sequence numbers and classes of its lines, without reading the file.
    pub(crate) fn outline(&self) -> impl Iterator<Item = (u64, &Class)> {
        self.metas.iter().map(|m| (m.seq, &m.class))
    }
}

/// The spool directory and its segments, oldest first.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    bytes: u64,
    items: usize,
    next_id: u64,
    /// Why the spool cannot be used, once it failed.
    broken: Option<String>,
}

impl Spool {
    /// Prepares `dir` (created `0700`; stale segments of an earlier runner
    /// removed, as their sequence numbers mean nothing to this one).
    pub(crate) fn open(dir: PathBuf) -> Spool {
        let mut spool = Spool {
            dir,
            segments: VecDeque::new(),
            bytes: 0,
            items: 0,
            next_id: 0,
            broken: None,
        };
        if let Err(e) = prepare_dir(&spool.dir) {
            spool.fail(format!("cannot prepare {}: {e}", spool.dir.display()));
        }
        spool
    }

    pub(crate) fn usable(&self) -> bool {
        self.broken.is_none()
    }

    fn fail(&mut self, why: String) {
        tracing::warn!(
            "event spool disabled, events beyond the memory bound will be dropped: {why}"
        );
        self.broken = Some(why);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn items(&self) -> usize {
        self.items
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub(crate) fn front(&self) -> Option<&Segment> {
        self.segments.front()
    }

    /// Bytes a segment holding `items` would take.
    pub(crate) fn size_of<'a>(items: impl Iterator<Item = &'a Item>) -> u64 {
        items.map(|i| i.json.len() as u64 + 1).sum()
    }

    /// Writes `items` as a new segment at the back. On failure the spool is
    /// disabled for good (a full or read-only disk will not recover while
    /// the job runs) and the items stay with the caller.
    pub(crate) fn write(&mut self, items: &VecDeque<Item>) -> bool {
        if !self.usable() || items.is_empty() {
            return false;
        }
        let path = self
            .dir
            .join(format!("{PREFIX}{:010}{SUFFIX}", self.next_id));
        self.next_id += 1;
        match write_segment(&path, items) {
            Ok(bytes) => {
                let metas: Vec<Meta> = items
                    .iter()
                    .map(|i| Meta {
                        seq: i.seq,
                        class: i.class.clone(),
                        len: i.json.len(),
                    })
                    .collect();
                self.bytes += bytes;
                self.items += metas.len();
                self.segments.push_back(Segment { path, metas, bytes });
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                self.fail(format!("cannot write {}: {e}", path.display()));
                false
            }
        }
    }

    /// Removes the oldest segment from the spool; read it with [`Spool::read`].
    pub(crate) fn pop_front(&mut self) -> Option<Segment> {
        let seg = self.segments.pop_front()?;
        self.bytes -= seg.bytes;
        self.items -= seg.metas.len();
        Some(seg)
    }

    /// Reads a popped segment back and deletes its file.
    pub(crate) fn read(seg: &Segment) -> std::io::Result<Vec<Item>> {
        let data = std::fs::read(&seg.path);
        let _ = std::fs::remove_file(&seg.path);
        let data = data?;
        let mut items = Vec::with_capacity(seg.metas.len());
        let mut at = 0usize;
        for meta in &seg.metas {
            let end = at + meta.len;
            if data.get(end) != Some(&b'\n') {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is shorter than written or corrupted",
                        seg.path.display()
                    ),
                ));
            }
            items.push(Item {
                seq: meta.seq,
                class: meta.class.clone(),
                json: data[at..end].to_vec(),
            });
            at = end + 1;
        }
        Ok(items)
    }

    /// Deletes every segment (the uplink has stopped).
    pub(crate) fn clear(&mut self) {
        while let Some(seg) = self.pop_front() {
            let _ = std::fs::remove_file(&seg.path);
        }
    }
}

fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // Events carry the job's output: keep them to ourselves even if the
    // directory existed with a wider mode.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
            tracing::info!("removing stale spool file {}", entry.path().display());
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn write_segment(path: &Path, items: &VecDeque<Item>) -> std::io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
    let mut bytes = 0u64;
    for item in items {
        out.write_all(&item.json)?;
        out.write_all(b"\n")?;
        bytes += item.json.len() as u64 + 1;
    }
    out.into_inner().map_err(|e| e.into_error())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use delegate_proto::{Event, EventKind, LogChunk, LogStream};

    fn log(seq: u64) -> Item {
        Item::from_event(&Event {
            seq,
            time_ms: 1,
            kind: EventKind::Log(LogChunk::new(LogStream::Stdout, seq, b"line\n")),
        })
    }

    #[test]
    fn segments_round_trip_and_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        std::fs::create_dir(&spool_dir).unwrap();
        std::fs::write(spool_dir.join("events-0000000007.jsonl"), b"stale").unwrap();
        std::fs::write(spool_dir.join("keep.txt"), b"not ours").unwrap();
        let mut spool = Spool::open(spool_dir.clone());
        assert!(spool.usable());
        assert!(!spool_dir.join("events-0000000007.jsonl").exists());
        assert!(spool_dir.join("keep.txt").exists());

        let items: VecDeque<Item> = (1..=3).map(log).collect();
        assert!(spool.write(&items));
        assert_eq!(spool.items(), 3);
        assert_eq!(spool.bytes(), Spool::size_of(items.iter()));
        let seg = spool.pop_front().unwrap();
        assert_eq!((seg.first_seq(), seg.last_seq()), (1, 3));
        let back = Spool::read(&seg).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].json, items[2].json);
        assert_eq!(spool.bytes(), 0);
        assert_eq!(std::fs::read_dir(&spool_dir).unwrap().count(), 1);
    }

    #[test]
    fn an_unwritable_dir_disables_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let mut spool = Spool::open(file.join("spool"));
        assert!(!spool.usable());
        assert!(!spool.write(&(1..=2).map(log).collect()));
    }
}
