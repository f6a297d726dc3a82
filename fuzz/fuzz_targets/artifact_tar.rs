//! The host's inspection of an uploaded artifact archive: any bytes, as the
//! tar.gz itself or as a tar the target compresses (so the fuzzer reaches
//! the tar reader past gzip's checksums), give a list of safe entries within
//! the caps or a refusal, never a panic.
#![no_main]

use std::collections::BTreeSet;
use std::io::Write;

use delegate_host::store::{ArchiveCheck, inspect_archive};
use libfuzzer_sys::fuzz_target;

const CHECK: ArchiveCheck = ArchiveCheck {
    max_uncompressed: 1 << 20,
    max_entries: 64,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let gz = if mode & 1 == 0 {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body).expect("compressing into memory");
        enc.finish().expect("compressing into memory")
    } else {
        body.to_vec()
    };
    let Ok(entries) = inspect_archive(gz.as_slice(), CHECK) else {
        return;
    };
    assert!(entries.len() <= CHECK.max_entries);
    let total: u64 = entries.iter().map(|e| e.size).sum();
    assert!(total <= CHECK.max_uncompressed);
    let mut seen = BTreeSet::new();
    for e in &entries {
        assert!(!e.path.is_empty(), "an empty path");
        assert!(!e.path.starts_with('/'), "absolute path {:?}", e.path);
        assert!(
            e.path
                .split('/')
                .all(|c| !c.is_empty() && c != ".." && c != "."),
            "path {:?} is not normal",
            e.path
        );
        assert!(seen.insert(e.path.clone()), "{:?} twice", e.path);
        assert_eq!(e.sha256.len(), 64);
    }
});
