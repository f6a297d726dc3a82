//! The manifest parser and validator: any bytes give a manifest or an error
//! naming a field, never a panic; a manifest that parses survives the
//! host's redaction and a round trip through JSON.
#![no_main]

use delegate_proto::JobManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = JobManifest::from_json(data) else {
        return;
    };
    manifest.validate().expect("a parsed manifest is valid");
    let _ = manifest.timeout_or(600);
    let _ = manifest.status_mode();
    let _ = manifest.lifecycle();
    let _ = manifest.wants_patch();
    for file in &manifest.files {
        let _ = file.bytes();
    }
    if let Some(r) = &manifest.resources {
        let _ = (r.cpu_count(), r.memory_bytes(), r.disk_bytes());
    }
    let redacted = manifest.redacted();
    let text = serde_json::to_vec(&redacted).expect("a manifest serializes");
    JobManifest::from_json(&text).expect("a redacted manifest parses again");
});
