//! `scripts/package`, the half of `scripts/release` after the build: the
//! archive holds what the README says, its checksums verify, the same
//! binaries give the same bytes, and a guest that needs a loader is refused.
//! The static guest here is a tiny program rustc links for musl (the
//! toolchain file installs that target), so no cargo build runs inside the
//! test.

use std::path::{Path, PathBuf};
use std::process::Command;

const HOST: &str = env!("CARGO_BIN_EXE_delegate-host");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A statically linked program with no program interpreter.
fn static_program(dir: &Path) -> PathBuf {
    let src = dir.join("hello.rs");
    std::fs::write(&src, "fn main() { println!(\"hello\"); }\n").unwrap();
    let bin = dir.join("hello-static");
    let out = Command::new("rustc")
        .args([
            "--target",
            "x86_64-unknown-linux-musl",
            "-C",
            "target-feature=+crt-static",
        ])
        .args(["-C", "relocation-model=static", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run rustc");
    assert!(out.status.success(), "rustc: {}", text(&out.stderr));
    bin
}

fn package(guest: &Path, out_dir: &Path) -> std::process::Output {
    Command::new(repo().join("scripts/package"))
        .arg(HOST)
        .arg(guest)
        .arg(out_dir)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .expect("run scripts/package")
}

#[test]
fn the_archive_holds_the_release_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let guest = static_program(dir.path());
    let first = dir.path().join("one");
    let out = package(&guest, &first);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let archive = PathBuf::from(text(&out.stdout).trim());
    assert_eq!(archive.parent(), Some(first.as_path()));
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    let top = name.strip_suffix(".tar.gz").expect("a .tar.gz");
    assert!(
        top.starts_with("delegate-") && top.ends_with("-x86_64-linux"),
        "{top}"
    );

    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .unwrap();
    let mut members: Vec<String> = text(&listing.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.trim_start_matches(&format!("{top}/")).to_string())
        .collect();
    members.sort();
    assert_eq!(
        members,
        [
            "LICENSE",
            "README.md",
            "SHA256SUMS",
            "bin/delegate-guest",
            "bin/delegate-host",
            "config.example.toml",
            "dist/delegate-host.service",
        ]
    );

    // The checksum beside the archive, and the ones inside it, verify.
    let beside = Command::new("sha256sum")
        .args(["-c", &format!("{name}.sha256")])
        .current_dir(&first)
        .output()
        .unwrap();
    assert!(beside.status.success(), "{}", text(&beside.stdout));
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(untar.success());
    let inside = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(unpacked.join(top))
        .output()
        .unwrap();
    assert!(inside.status.success(), "{}", text(&inside.stdout));
    let ran = Command::new(unpacked.join(top).join("bin/delegate-guest"))
        .output()
        .unwrap();
    assert_eq!(text(&ran.stdout), "hello\n");

    // Packed again elsewhere, later: the same bytes.
    let second = dir.path().join("two");
    let again = package(&guest, &second);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        std::fs::read(&archive).unwrap() == std::fs::read(second.join(&name)).unwrap(),
        "two packings of the same binaries differ"
    );
}

#[test]
fn a_guest_that_needs_a_loader_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // delegate-host itself is dynamically linked.
    let out = package(Path::new(HOST), dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not static"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no archive"
    );
}
