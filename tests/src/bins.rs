//! Where the real `delegate-host` and `delegate-guest` binaries are.
//!
//! `env!("CARGO_BIN_EXE_...")` only names binaries of the package under
//! test, and these tests live in their own package. So the first test that
//! needs the binaries asks cargo to build them, the way `escargot` does:
//! `cargo build --bins --message-format=json` for both packages, in the
//! same profile and target directory as the running test, and takes each
//! executable's path from cargo's `compiler-artifact` messages. Nothing is
//! guessed from directory layouts. `delegate-tests` is built in the same
//! invocation so that features unify as in the test build and nothing is
//! compiled twice.
//!
//! CI (or a person) that has the binaries already can skip the build with
//! `DELEGATE_TEST_HOST_BIN` and `DELEGATE_TEST_GUEST_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The two binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `delegate-host`.
    pub host: PathBuf,
    /// `delegate-guest`.
    pub guest: PathBuf,
}

/// The binaries, built once per test process.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let from_env = (
            std::env::var_os("DELEGATE_TEST_HOST_BIN"),
            std::env::var_os("DELEGATE_TEST_GUEST_BIN"),
        );
        if let (Some(host), Some(guest)) = from_env {
            return Bins {
                host: host.into(),
                guest: guest.into(),
            };
        }
        build()
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies inside the workspace")
        .to_path_buf()
}

/// Whether the running test binary was built with the release profile
/// (`target/release/deps/<test>`).
fn release_profile() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .and_then(Path::parent)
                .and_then(|p| p.file_name().map(|n| n == "release"))
        })
        .unwrap_or(false)
}

fn build() -> Bins {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--message-format=json-render-diagnostics"])
        .args([
            "-p",
            "delegate-host",
            "-p",
            "delegate-guest",
            "-p",
            "delegate-tests",
        ])
        .arg("--bins")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // What cargo set for this test binary describes the test package; build
    // scripts that watch such variables would otherwise rebuild each time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_package = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
            .iter()
            .any(|p| key.starts_with(p))
            || matches!(
                key.as_ref(),
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if per_package {
            cmd.env_remove(key.as_ref());
        }
    }
    if release_profile() {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .expect("run cargo build for the delegate binaries");
    assert!(
        out.status.success(),
        "cargo build of delegate-host and delegate-guest failed ({})",
        out.status
    );
    let mut host = None;
    let mut guest = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        match msg["target"]["name"].as_str() {
            Some("delegate-host") => host = Some(PathBuf::from(exe)),
            Some("delegate-guest") => guest = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    Bins {
        host: host.expect("cargo reported no delegate-host executable"),
        guest: guest.expect("cargo reported no delegate-guest executable"),
    }
}
