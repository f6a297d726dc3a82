//! Bootstrap discovery with injected paths: order, refusals, the SMBIOS forms.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use delegate_guest::callback::{
    BootstrapPaths, BootstrapSource, CallbackError, find_bootstrap_in, wait_for_bootstrap,
};

use crate::support::host::JOB_ID as ID;

fn doc(url: &str) -> String {
    format!(
        r#"{{"v":1,"job_id":"{ID}","callback_url":"{url}","token":"{}"}}"#,
        "ab".repeat(32)
    )
}

struct Places {
    _dir: tempfile::TempDir,
    paths: BootstrapPaths,
    root: PathBuf,
}

fn places() -> Places {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let paths = BootstrapPaths {
        run_file: root.join("run/delegate/bootstrap.json"),
        fw_cfg: root.join("fw_cfg/raw"),
        smbios_serial: root.join("dmi/product_serial"),
    };
    Places {
        _dir: dir,
        paths,
        root,
    }
}

fn write(path: &Path, content: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn sources_are_searched_in_order() {
    let p = places();
    write(
        &p.paths.run_file,
        doc("http://run-file:1").as_bytes(),
        0o600,
    );
    let mut fw = doc("http://fw-cfg:1").into_bytes();
    fw.extend_from_slice(b"\n\0\0\0");
    write(&p.paths.fw_cfg, &fw, 0o444);
    let serial = base64::engine::general_purpose::STANDARD.encode(doc("http://smbios:1"));
    write(
        &p.paths.smbios_serial,
        format!("{serial}\n").as_bytes(),
        0o444,
    );

    let (b, src) = find_bootstrap_in(None, &p.paths).unwrap();
    assert_eq!(src, BootstrapSource::File(p.paths.run_file.clone()));
    assert_eq!(b.callback_url, "http://run-file:1");
    assert_eq!(b.job_id, ID);

    std::fs::remove_file(&p.paths.run_file).unwrap();
    let (b, src) = find_bootstrap_in(None, &p.paths).unwrap();
    assert_eq!(src, BootstrapSource::FwCfg);
    assert_eq!(b.callback_url, "http://fw-cfg:1");

    std::fs::remove_file(&p.paths.fw_cfg).unwrap();
    let (b, src) = find_bootstrap_in(None, &p.paths).unwrap();
    assert_eq!(src, BootstrapSource::Smbios);
    assert_eq!(b.callback_url, "http://smbios:1");

    // An explicit file beats them all.
    let explicit = p.root.join("mine.json");
    write(&explicit, doc("http://explicit:1").as_bytes(), 0o400);
    let (b, src) = find_bootstrap_in(Some(&explicit), &p.paths).unwrap();
    assert_eq!(src, BootstrapSource::File(explicit));
    assert_eq!(b.callback_url, "http://explicit:1");
}

#[test]
fn an_explicit_file_that_is_missing_does_not_fall_back() {
    let p = places();
    write(
        &p.paths.run_file,
        doc("http://run-file:1").as_bytes(),
        0o600,
    );
    let missing = p.root.join("nope.json");
    let err = find_bootstrap_in(Some(&missing), &p.paths).unwrap_err();
    assert!(matches!(err, CallbackError::NoBootstrap { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.json"), "{err}");
}

#[test]
fn nothing_anywhere_lists_every_place_tried() {
    let p = places();
    write(&p.paths.smbios_serial, b"Not Specified\n", 0o444);
    let err = find_bootstrap_in(None, &p.paths).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, CallbackError::NoBootstrap { ref tried } if tried.len() == 3),
        "{err:?}"
    );
    for needle in [
        "bootstrap.json",
        "fw_cfg",
        "SMBIOS serial",
        "holds no bootstrap",
    ] {
        assert!(text.contains(needle), "{needle} missing from: {text}");
    }
}

#[test]
fn a_bad_document_is_an_error_not_a_fall_through() {
    let p = places();
    write(&p.paths.run_file, b"{\"v\":1,", 0o600);
    write(&p.paths.fw_cfg, doc("http://fw-cfg:1").as_bytes(), 0o444);
    let err = find_bootstrap_in(None, &p.paths).unwrap_err();
    assert!(matches!(err, CallbackError::BadBootstrap { .. }), "{err:?}");
    assert!(err.to_string().contains("bootstrap.json"), "{err}");

    std::fs::remove_file(&p.paths.run_file).unwrap();
    write(
        &p.paths.fw_cfg,
        doc("http://x:1").replace("\"v\":1", "\"v\":7").as_bytes(),
        0o444,
    );
    let err = find_bootstrap_in(None, &p.paths).unwrap_err();
    assert!(err.to_string().contains("version 7"), "{err}");

    write(&p.paths.fw_cfg, doc("file:///etc/passwd").as_bytes(), 0o444);
    let err = find_bootstrap_in(None, &p.paths).unwrap_err();
    assert!(err.to_string().contains("callback_url"), "{err}");
}

#[test]
fn a_file_others_can_read_is_refused() {
    let p = places();
    for mode in [0o644, 0o640, 0o604, 0o620] {
        write(&p.paths.run_file, doc("http://x:1").as_bytes(), mode);
        let err = find_bootstrap_in(None, &p.paths).unwrap_err();
        assert!(
            matches!(err, CallbackError::InsecureBootstrap { .. }),
            "{mode:o}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{mode:04o}")), "{err}");
    }
    std::fs::remove_file(&p.paths.run_file).unwrap();
    std::fs::create_dir_all(&p.paths.run_file).unwrap();
    std::fs::set_permissions(&p.paths.run_file, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = find_bootstrap_in(None, &p.paths).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn a_file_owned_by_someone_else_is_refused() {
    let p = places();
    write(&p.paths.run_file, doc("http://x:1").as_bytes(), 0o600);
    let me = nix::unistd::geteuid();
    if !me.is_root() {
        // Only root can give a file away; the check itself is the same code
        // path as the mode check above.
        eprintln!(
            "not root: cannot create a file owned by another user; ownership check not exercised"
        );
        return;
    }
    nix::unistd::chown(
        &p.paths.run_file,
        Some(nix::unistd::Uid::from_raw(65534)),
        None,
    )
    .unwrap();
    let err = find_bootstrap_in(None, &p.paths).unwrap_err();
    assert!(
        matches!(err, CallbackError::InsecureBootstrap { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("uid 65534"), "{err}");
}

#[test]
fn an_smbios_job_id_names_the_job_and_what_is_missing() {
    let p = places();
    for serial in [ID.to_string(), format!("delegate-job={ID}")] {
        write(&p.paths.smbios_serial, serial.as_bytes(), 0o444);
        let err = find_bootstrap_in(None, &p.paths).unwrap_err();
        match &err {
            CallbackError::TokenMissing { job_id, run_file } => {
                assert_eq!(job_id, ID);
                assert_eq!(run_file, &p.paths.run_file);
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("no token") && text.contains("bootstrap.json"),
            "{text}"
        );
    }
}

#[test]
fn an_unreadable_firmware_source_is_reported_not_fatal() {
    let p = places();
    // A directory where the fw_cfg file should be: reading it fails.
    std::fs::create_dir_all(&p.paths.fw_cfg).unwrap();
    write(
        &p.paths.smbios_serial,
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(doc("http://smbios:1"))
            .as_bytes(),
        0o444,
    );
    let (b, src) = find_bootstrap_in(None, &p.paths).unwrap();
    assert_eq!(src, BootstrapSource::Smbios);
    assert_eq!(b.callback_url, "http://smbios:1");
}

#[tokio::test]
async fn waiting_sees_a_bootstrap_that_is_written_late() {
    let p = places();
    let run_file = p.paths.run_file.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // First an empty file, as a writer that has opened but not written.
        write(&run_file, b"", 0o600);
        tokio::time::sleep(Duration::from_millis(300)).await;
        write(&run_file, doc("http://late:1").as_bytes(), 0o600);
    });
    let (b, src) = wait_for_bootstrap(None, &p.paths, Duration::from_secs(30))
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(b.callback_url, "http://late:1");
    assert_eq!(src, BootstrapSource::File(p.paths.run_file.clone()));

    // A refusal is not waited out.
    write(&p.paths.run_file, doc("http://x:1").as_bytes(), 0o644);
    let started = std::time::Instant::now();
    let err = wait_for_bootstrap(None, &p.paths, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::InsecureBootstrap { .. }));
    assert!(started.elapsed() < Duration::from_secs(25));
}
