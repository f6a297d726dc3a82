//! The systemd unit in `dist/` as systemd itself reads it: `systemd-analyze
//! verify` with the real `delegate-host` where the unit expects it
//! (`/usr/local/bin`, shown to it in a private mount namespace so the
//! machine's own stays untouched), its hardening scored by `systemd-analyze
//! security`, and its command line accepted by the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_delegate-host");

fn unit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/delegate-host.service")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_unit_verifies_with_the_binary_where_it_expects_it() {
    let fake = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(fake.path().join("bin")).unwrap();
    std::fs::copy(BIN, fake.path().join("bin/delegate-host")).unwrap();
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--propagation",
            "private",
        ])
        .args([
            "sh",
            "-c",
            r#"mount --bind "$1" /usr/local && exec systemd-analyze verify --man=no "$2""#,
            "sh",
        ])
        .arg(fake.path())
        .arg(unit())
        .output()
        .expect("run unshare (util-linux) and systemd-analyze");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert_eq!(said, "", "systemd-analyze verify warned");

    // Without the binary in place, verify does fail: the check above is real.
    let missing = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit())
        .output()
        .unwrap();
    if !Path::new("/usr/local/bin/delegate-host").exists() {
        assert!(!missing.status.success(), "{}", text(&missing.stderr));
    }
}

#[test]
fn the_unit_is_hardened() {
    // Exposure 0 (locked down) to 10 (unprotected); systemd calls up to
    // 2 "OK". The threshold, in tenths, fails the command above it.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "--threshold=20"])
        .arg(unit())
        .output()
        .expect("run systemd-analyze");
    let said = text(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 2:\n{said}{}",
        text(&out.stderr)
    );
    assert!(said.contains("Overall exposure level"), "{said}");
}

#[test]
fn the_units_command_line_is_one_the_binary_accepts() {
    let unit = std::fs::read_to_string(unit()).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/delegate-host"));
    let args: Vec<&str> = words.collect();
    assert_eq!(args[..2], ["serve", "--http"], "{exec}");
    // clap checks every argument before it prints the help.
    let out = Command::new(BIN)
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{exec}: {}", text(&out.stderr));
    // The token file the unit points at is a setting the binary reads.
    let config = Command::new(BIN)
        .arg("config")
        .arg("--help")
        .output()
        .unwrap();
    assert!(config.status.success());
    for var in ["DELEGATE_HTTP_TOKEN_FILE", "DELEGATE_DATA_DIR"] {
        assert!(unit.contains(&format!("Environment={var}=")), "{var}");
    }
}
