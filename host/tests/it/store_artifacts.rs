//! Artifact archives in the store: inspected before they are kept, unsafe
//! entries refused with nothing left on disk.

use delegate_host::provider::Isolation;
use delegate_host::store::{ArchiveCheck, ArtifactError, ArtifactRead, NewJob, Store, hex};
use delegate_proto::JobManifest;
use sha2::{Digest, Sha256};

use crate::support::tar::{Entry, tar_gz};

const CHECK: ArchiveCheck = ArchiveCheck {
    max_uncompressed: 1 << 20,
    max_entries: 100,
};

fn store_with_job(dir: &std::path::Path) -> Store {
    let store = Store::open(dir).unwrap();
    store
        .insert_job(&NewJob {
            id: "j".into(),
            manifest: JobManifest::from_value(
                serde_json::json!({"task": "t", "agentType": "script"}),
            )
            .unwrap(),
            token_hash: [0; 32],
            created_at: 1,
            deadline_at: 2,
            isolation: Isolation::ProcessSandbox,
        })
        .unwrap();
    store
}

fn upload(
    store: &Store,
    bytes: &[u8],
) -> Result<Vec<delegate_proto::ArtifactEntry>, ArtifactError> {
    let staged = store.stage_artifacts("j").unwrap();
    std::fs::write(staged.path(), bytes).unwrap();
    let sha = hex(&Sha256::digest(bytes));
    store.commit_artifacts(staged, bytes.len() as u64, &sha, CHECK)
}

fn leftover_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("artifacts/j"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_good_archive_is_kept_with_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_job(dir.path());
    let bytes = tar_gz(&[
        Entry::Dir("out/"),
        Entry::File("out/a.txt", b"alpha"),
        Entry::File("./b.bin", &[0, 1, 2]),
    ]);
    let entries = upload(&store, &bytes).unwrap();
    let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["out/a.txt", "b.bin"]);
    assert_eq!(entries[0].size, 5);
    assert_eq!(entries[0].sha256, hex(&Sha256::digest(b"alpha")));
    assert_eq!(leftover_files(dir.path()), ["artifacts.tar.gz"]);
    assert_eq!(store.get_job("j").unwrap().artifacts.len(), 2);
    assert_eq!(
        store.read_artifact("j", "out/a.txt", 100).unwrap(),
        ArtifactRead::Found(b"alpha".to_vec())
    );
    assert_eq!(
        store.read_artifact("j", "out/a.txt", 2).unwrap(),
        ArtifactRead::TooLarge(5)
    );
    assert_eq!(
        store.read_artifact("j", "../out/a.txt", 100).unwrap(),
        ArtifactRead::Missing
    );
    assert_eq!(
        store.read_artifact("j", "nope", 100).unwrap(),
        ArtifactRead::Missing
    );
}

#[test]
fn unsafe_entries_are_refused_and_nothing_is_left() {
    for (entries, expect) in [
        (vec![Entry::File("../x", b"evil")], "'..'"),
        (vec![Entry::File("a/../../x", b"evil")], "'..'"),
        (vec![Entry::File("/etc/cron.d/x", b"evil")], "absolute"),
        (
            vec![Entry::Symlink("link", "/etc/passwd")],
            "symbolic links",
        ),
        (
            vec![Entry::File("a", b"1"), Entry::File("./a", b"2")],
            "twice",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_job(dir.path());
        let err = upload(&store, &tar_gz(&entries)).unwrap_err();
        assert!(
            matches!(err, ArtifactError::Unsafe { .. }) && err.to_string().contains(expect),
            "{err}"
        );
        assert!(leftover_files(dir.path()).is_empty());
        assert!(store.archive_path("j").is_none());
        assert!(store.get_job("j").unwrap().artifacts.is_empty());
    }
}

#[test]
fn bombs_and_garbage_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_job(dir.path());
    let big = vec![0u8; 2 << 20];
    let err = upload(&store, &tar_gz(&[Entry::File("zeros", &big)])).unwrap_err();
    assert!(matches!(err, ArtifactError::TooLarge { .. }), "{err}");
    let err = upload(&store, b"not gzip at all").unwrap_err();
    assert!(matches!(err, ArtifactError::Malformed(_)), "{err}");
    assert!(leftover_files(dir.path()).is_empty());
}
