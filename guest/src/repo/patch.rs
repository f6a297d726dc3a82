//! The patch: `git diff --binary` between two snapshots (the base, or where
//! the previous turn left the tree, and the tree now), with its size, hash
//! and per-file line counts.

use std::io::Read;
use std::path::Path;

use delegate_proto::{ChangedFile, PatchSummary};
use sha2::{Digest, Sha256};

use super::git::{GitError, Snapshots};

/// Writes the patch from `base_tree` to the snapshot `now` into `out`.
pub fn write(
    snaps: &Snapshots,
    base_tree: &str,
    now: &str,
    base_commit: Option<String>,
    out: &Path,
) -> Result<PatchSummary, GitError> {
    // Full blob ids let `git apply --3way` find the base; no rename
    // detection keeps every change a plain add, delete or edit.
    snaps.run_into(
        &[
            "diff-tree",
            "-r",
            "-p",
            "--binary",
            "--full-index",
            "--no-renames",
            "--no-ext-diff",
            "--no-textconv",
            base_tree,
            now,
        ],
        out,
    )?;
    let (size, sha256) = hash_file(out)?;
    let raw = snaps.run(
        &["diff-tree", "-r", "-z", "--no-renames", base_tree, now],
        None,
    )?;
    let numstat = snaps.run(
        &[
            "diff-tree",
            "-r",
            "-z",
            "--no-renames",
            "--numstat",
            base_tree,
            now,
        ],
        None,
    )?;
    Ok(PatchSummary {
        size,
        sha256,
        base_commit,
        base_tree: base_tree.to_string(),
        files: changed_files(&raw, &numstat),
    })
}

fn hash_file(path: &Path) -> Result<(u64, String), GitError> {
    let io = |source| GitError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Joins `diff-tree -z` (`:oldmode newmode oldsha newsha status\0path\0`)
/// with `--numstat -z` (`added\tremoved\tpath\0`, `-` for binary).
fn changed_files(raw: &[u8], numstat: &[u8]) -> Vec<ChangedFile> {
    let mut counts = std::collections::HashMap::new();
    for rec in numstat.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let text = String::from_utf8_lossy(rec);
        let mut parts = text.splitn(3, '\t');
        let (Some(a), Some(r), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        counts.insert(path.to_string(), (a.parse().ok(), r.parse().ok()));
    }
    let mut fields = raw.split(|b| *b == 0).filter(|r| !r.is_empty());
    let mut files = Vec::new();
    while let (Some(meta), Some(path)) = (fields.next(), fields.next()) {
        let meta = String::from_utf8_lossy(meta);
        let path = String::from_utf8_lossy(path).into_owned();
        let m: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let [old_mode, new_mode, old_sha, new_sha, status] = m[..] else {
            continue;
        };
        let change = match status {
            "A" => "added",
            "D" => "deleted",
            "T" => "type",
            "M" if old_sha == new_sha && old_mode != new_mode => "mode",
            _ => "modified",
        };
        let (added, removed) = counts.get(&path).copied().unwrap_or((None, None));
        files.push(ChangedFile {
            path,
            change: change.to_string(),
            added,
            removed,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_numstat_are_joined() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let raw = format!(
            ":100644 100644 {a} {b} M\0src/x.rs\0:000000 100644 {z} {a} A\0new.bin\0\
             :100644 100755 {a} {a} M\0run.sh\0:100644 000000 {a} {z} D\0gone\0"
        );
        let numstat =
            "3\t1\tsrc/x.rs\0-\t-\tnew.bin\0".to_string() + "0\t0\trun.sh\0" + "0\t2\tgone\0";
        let files = changed_files(raw.as_bytes(), numstat.as_bytes());
        let got: Vec<(&str, &str, Option<u64>, Option<u64>)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.change.as_str(), f.added, f.removed))
            .collect();
        assert_eq!(
            got,
            [
                ("gone", "deleted", Some(0), Some(2)),
                ("new.bin", "added", None, None),
                ("run.sh", "mode", Some(0), Some(0)),
                ("src/x.rs", "modified", Some(3), Some(1)),
            ]
        );
    }
}
