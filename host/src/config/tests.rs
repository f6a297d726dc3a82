//! Resolution rules, fed with made-up machines.

use std::path::Path;

use super::*;
use crate::resolve::FixedMachine;
use clap::Parser;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    raw: RawSettings,
}

fn raw(args: &[&str]) -> RawSettings {
    let mut argv = vec!["delegate-host"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("parses").raw
}

/// A machine with XDG and HOME under `dir`, working in `dir`, and an
/// executable `dir/delegate-guest` (found neither beside the executable
/// nor on PATH: tests name it).
fn machine(dir: &Path) -> FixedMachine {
    FixedMachine {
        cwd: Some(dir.to_path_buf()),
        ..FixedMachine::default()
    }
    .with_var("XDG_DATA_HOME", dir.join("xdg").display().to_string())
    .with_var("HOME", dir.join("home").display().to_string())
    .with_executable(fake_guest(dir))
}

fn fake_guest(dir: &Path) -> PathBuf {
    dir.join("delegate-guest")
}

#[test]
fn defaults_match_the_original_server() {
    let dir = tempfile::tempdir().unwrap();
    let guest = fake_guest(dir.path());
    let s = Settings::resolve_with(
        raw(&["--guest-bin", guest.to_str().unwrap()]),
        &machine(dir.path()),
    )
    .unwrap();
    assert_eq!(s.callback_bind.to_string(), "0.0.0.0:8765");
    assert_eq!(s.callback_url, "http://127.0.0.1:8765");
    assert!(s.callback_url_derived);
    // Nothing but the callback API is served unless asked for.
    assert_eq!(s.metrics_bind, None);
    assert_eq!(s.default_timeout, Duration::from_secs(3600));
    assert_eq!(s.default_cpu, 2);
    assert_eq!(s.default_memory, 2 << 30);
    assert_eq!(s.default_disk, 10 << 30);
    assert_eq!(s.heartbeat_threshold, Duration::from_secs(120));
    assert_eq!(s.cleanup_interval, Duration::from_secs(30));
    assert_eq!(s.persistent_ttl, Duration::from_secs(3600));
    assert_eq!(s.provider, ProviderKind::Local);
    assert_eq!(s.data_dir, dir.path().join("xdg").join("delegate"));
    assert_eq!((s.max_running, s.max_provisioning), (4, 2));
    assert_eq!(s.retention, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(s.wait_default, Duration::from_secs(25));
    assert_eq!(s.wait_max, Duration::from_secs(50));
    assert_eq!(s.max_resource_bytes, 4 << 20);
    assert_eq!(s.allowed_hosts, ["localhost", "127.0.0.1", "[::1]"]);
}

#[test]
fn metrics_address_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let g = fake_guest(dir.path());
    let with = |addr: &str| {
        Settings::resolve_with(
            raw(&["--guest-bin", g.to_str().unwrap(), "--metrics-addr", addr]),
            &machine(dir.path()),
        )
        .unwrap()
        .metrics_bind
    };
    assert_eq!(
        with("127.0.0.1:9464"),
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(with("[::1]:0"), Some("[::1]:0".parse().unwrap()));
    assert_eq!(with(""), None);
}

#[test]
fn the_persistent_ttl_reads_as_people_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let guest = fake_guest(dir.path());
    for (text, secs) in [("90s", 90), ("30m", 1800), ("1h 30m", 5400), ("45", 45)] {
        let s = Settings::resolve_with(
            raw(&[
                "--guest-bin",
                guest.to_str().unwrap(),
                "--persistent-ttl",
                text,
            ]),
            &machine(dir.path()),
        )
        .unwrap();
        assert_eq!(s.persistent_ttl, Duration::from_secs(secs), "{text}");
    }
}

#[test]
fn errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let guest = fake_guest(dir.path());
    let g = guest.to_str().unwrap();
    for (args, setting) in [
        (vec!["--callback-host", "example.com"], "CALLBACK_HOST"),
        (vec!["--callback-url", "ftp://x"], "CALLBACK_URL"),
        (vec!["--metrics-addr", "localhost"], "DELEGATE_METRICS_ADDR"),
        (vec!["--default-timeout", "0"], "DEFAULT_TIMEOUT"),
        (vec!["--default-timeout", "999999999"], "DEFAULT_TIMEOUT"),
        (vec!["--default-memory", "lots"], "DEFAULT_MEMORY"),
        (vec!["--max-running", "0"], "DELEGATE_MAX_RUNNING"),
        (
            vec!["--wait-max-seconds", "90"],
            "DELEGATE_WAIT_MAX_SECONDS",
        ),
        (
            vec!["--wait-default-seconds", "40", "--wait-max-seconds", "30"],
            "DELEGATE_WAIT_DEFAULT_SECONDS",
        ),
        (
            vec!["--heartbeat-interval-seconds", "100"],
            "DELEGATE_HEARTBEAT_INTERVAL_SECONDS",
        ),
        (vec!["--http-token", "short"], "DELEGATE_HTTP_TOKEN"),
        (vec!["--persistent-ttl", "soon"], "DELEGATE_PERSISTENT_TTL"),
        (vec!["--persistent-ttl", "0s"], "DELEGATE_PERSISTENT_TTL"),
        (
            vec!["--guest-bin", "/nonexistent/guest"],
            "DELEGATE_GUEST_BIN",
        ),
    ] {
        let mut all = args.clone();
        if !all.contains(&"--guest-bin") {
            all.extend(["--guest-bin", g]);
        }
        let err = Settings::resolve_with(raw(&all), &machine(dir.path()))
            .expect_err(&format!("{args:?} should be refused"))
            .to_string();
        assert!(err.starts_with(setting), "{args:?}: {err}");
    }
}

#[test]
fn local_provider_needs_a_guest_and_vm_providers_need_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let err = Settings::resolve_with(raw(&[]), &machine(dir.path())).unwrap_err();
    assert!(err.to_string().contains("DELEGATE_GUEST_BIN"), "{err}");

    // Found on PATH.
    let bin = dir.path().join("bin");
    let m = machine(dir.path())
        .with_var("PATH", bin.display().to_string())
        .with_executable(fake_guest(&bin));
    let s = Settings::resolve_with(raw(&[]), &m).unwrap();
    assert_eq!(
        s.local.map(|l| l.guest_bin),
        Some(bin.join("delegate-guest"))
    );

    let err = Settings::resolve_with(raw(&["--provider", "proxmox"]), &m).unwrap_err();
    assert!(err.to_string().starts_with("CALLBACK_URL"), "{err}");
    let mut vm_provider = vec!["--provider", "proxmox", "--callback-host", "10.1.2.3"];
    vm_provider.extend(PROXMOX);
    let s = Settings::resolve_with(raw(&vm_provider), &m).unwrap();
    assert_eq!(s.callback_url, "http://10.1.2.3:8765");
    assert_eq!(s.local.map(|l| l.guest_bin), None);
    assert_eq!(
        s.proxmox.map(|p| p.url).as_deref(),
        Some("https://pve:8006")
    );
}

/// Enough Proxmox settings to resolve.
const PROXMOX: [&str; 6] = [
    "--proxmox-url",
    "https://pve:8006",
    "--proxmox-token-id",
    "delegate@pve!host",
    "--proxmox-token-secret",
    "0b5e5b7e-1111-2222-3333-444455556666",
];

#[test]
fn providers_this_build_cannot_run_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["firecracker", "DOCKER", "docker", ""] {
        let err = Settings::resolve_with(
            raw(&["--provider", name, "--callback-host", "10.1.2.3"]),
            &machine(dir.path()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("DELEGATE_PROVIDER: "), "{name}: {err}");
        assert!(
            err.ends_with("use one of: local, proxmox, qemu"),
            "{name}: {err}"
        );
    }
    let guest = fake_guest(dir.path());
    let s = Settings::resolve_with(
        raw(&[
            "--provider",
            " Local ",
            "--guest-bin",
            guest.to_str().unwrap(),
        ]),
        &machine(dir.path()),
    )
    .unwrap();
    assert_eq!(s.provider, ProviderKind::Local);
}

#[test]
fn the_proxmox_half_reads_only_the_given_machine() {
    // The token secret comes from a file on the machine, the instance
    // name from its host name: nothing from the process.
    let dir = tempfile::tempdir().unwrap();
    let m = FixedMachine {
        hostname: Some("Build Box".into()),
        ..machine(dir.path())
    }
    .with_file("/run/pve-secret", "abc-123\n");
    let s = Settings::resolve_with(
        raw(&[
            "--provider",
            "proxmox",
            "--callback-url",
            "http://10.0.0.1:8765",
            "--proxmox-url",
            "https://pve:8006",
            "--proxmox-token-id",
            "delegate@pve!host",
            "--proxmox-token-secret-file",
            "/run/pve-secret",
        ]),
        &m,
    )
    .unwrap();
    let px = s.proxmox.unwrap();
    assert_eq!(px.instance, "build-box");
    assert!(matches!(
        px.credentials,
        crate::provider::proxmox::Credentials::Token { ref secret, .. } if secret.expose() == "abc-123"
    ));
}

#[test]
fn token_file_is_read_and_masked() {
    let dir = tempfile::tempdir().unwrap();
    let guest = fake_guest(dir.path());
    let file = dir.path().join("token");
    let m = machine(dir.path()).with_file(&file, "s3cr3t-token-0123456789\n");
    let s = Settings::resolve_with(
        raw(&[
            "--guest-bin",
            guest.to_str().unwrap(),
            "--http-token-file",
            file.to_str().unwrap(),
            "--data-dir",
            "rel",
        ]),
        &m,
    )
    .unwrap();
    assert_eq!(
        s.http_token.as_ref().unwrap().expose(),
        "s3cr3t-token-0123456789"
    );
    assert_eq!(s.data_dir, dir.path().join("rel"));
    let described = format!("{:?}", s.describe());
    assert!(!described.contains("s3cr3t"), "{described}");
    assert!(!format!("{s:?}").contains("s3cr3t"));
    assert!(described.contains("DELEGATE_HTTP_TOKEN"));
}

#[test]
fn qemu_vms_reach_the_callback_through_a_relay_on_loopback() {
    let any: std::net::SocketAddr = "0.0.0.0:8765".parse().unwrap();
    assert_eq!(
        derive_callback_url(ProviderKind::Qemu, any).unwrap(),
        "http://127.0.0.1:8765"
    );
    let dir = tempfile::tempdir().unwrap();
    let m = FixedMachine {
        current_exe: Some("/w/target/debug/deps/t-123".into()),
        ..machine(dir.path())
    };
    let local = LocalArgs {
        guest_bin: Some("/g".into()),
        ..LocalArgs::default()
    };
    let c = qemu_guest_candidates(&local, &m);
    assert_eq!(c[0], std::path::Path::new("/g"));
    assert!(c.contains(&std::path::PathBuf::from(
        "/w/target/x86_64-unknown-linux-musl/release/delegate-guest"
    )));
}

#[test]
fn max_memory_is_the_machines_for_local_sandboxes_unless_set() {
    let dir = tempfile::tempdir().unwrap();
    let guest = fake_guest(dir.path());
    let g = guest.to_str().unwrap();
    let m = machine(dir.path()).with_file(
        "/proc/meminfo",
        "MemTotal:        8048576 kB\nMemFree:          100 kB\n",
    );
    let s = Settings::resolve_with(raw(&["--guest-bin", g]), &m).unwrap();
    assert_eq!(s.max_memory, Some(8_048_576 * 1024));
    let s = Settings::resolve_with(raw(&["--guest-bin", g, "--max-memory", "3G"]), &m).unwrap();
    assert_eq!(s.max_memory, Some(3 << 30));
    let err = Settings::resolve_with(raw(&["--guest-bin", g, "--max-memory", "lots"]), &m)
        .unwrap_err()
        .to_string();
    assert!(err.contains("DELEGATE_MAX_MEMORY"), "{err}");
    // A machine without /proc/meminfo sets no limit.
    let s = Settings::resolve_with(raw(&["--guest-bin", g]), &machine(dir.path())).unwrap();
    assert_eq!(s.max_memory, None);
}

#[test]
fn warm_pools_are_parsed_for_proxmox_only() {
    let dir = tempfile::tempdir().unwrap();
    let m = machine(dir.path());
    let mut args = vec!["--provider", "proxmox", "--callback-host", "10.1.2.3"];
    args.extend(PROXMOX);
    let s = Settings::resolve_with(raw(&args), &m).unwrap();
    assert!(s.pool.is_empty());
    assert_eq!(s.pool_max_age, Duration::from_secs(6 * 3600));
    assert!(!s.pool_keep_on_exit);

    let mut with_pool = args.clone();
    with_pool.extend([
        "--pool",
        "delegate-template:2c4g20g=3,delegate-template:4c8g40g=1",
        "--pool-max-age",
        "30m",
        "--pool-keep-on-exit",
    ]);
    let s = Settings::resolve_with(raw(&with_pool), &m).unwrap();
    assert_eq!(s.pool.len(), 2);
    assert_eq!(s.pool[1].key(), "delegate-template:4c8g40g");
    assert_eq!(s.pool_max_age, Duration::from_secs(1800));
    assert!(s.pool_keep_on_exit);
    let described = s.describe();
    assert!(described.iter().any(|(k, v)| *k == "DELEGATE_POOL"
        && v == "delegate-template:2c4g20g=3,delegate-template:4c8g40g=1"));

    for (extra, needle) in [
        (vec!["--pool", "t:2c4g20g=3,t:2c4g=1"], "entry 2"),
        (vec!["--pool-max-age", "0"], "DELEGATE_POOL_MAX_AGE"),
        (vec!["--pool-max-age", "soon"], "DELEGATE_POOL_MAX_AGE"),
    ] {
        let mut all = args.clone();
        all.extend(extra.iter().copied());
        let err = Settings::resolve_with(raw(&all), &m)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    let err = Settings::resolve_with(raw(&["--pool", "t:2c4g20g=1"]), &m)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("DELEGATE_POOL"), "{err}");
    assert!(err.contains("proxmox"), "{err}");
}

#[test]
fn qemu_pools_micro_vms_only() {
    let micro = super::pool_classes(Some("micro:1c512m2g=2"), ProviderKind::Qemu).unwrap();
    assert_eq!(micro[0].key(), "micro:1c512m2g");
    let err = super::pool_classes(
        Some("micro:1c512m2g=1,ubuntu:1c512m2g=1"),
        ProviderKind::Qemu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ubuntu:1c512m2g") && err.contains("micro:1c512m2g"),
        "{err}"
    );
    let err = super::pool_classes(Some("micro:1c512m2g=1"), ProviderKind::Local)
        .unwrap_err()
        .to_string();
    assert!(err.contains("qemu"), "{err}");
    assert!(
        super::pool_classes(None, ProviderKind::Local)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn auto_is_the_default_and_picks_the_sandbox_without_kvm() {
    let dir = tempfile::tempdir().unwrap();
    let guest = fake_guest(dir.path());
    let args = ["--guest-bin", guest.to_str().unwrap()];
    // As on CI: no usable /dev/kvm. Nothing else is looked at, so no
    // probe runs.
    let s = Settings::resolve_with(raw(&args), &machine(dir.path())).unwrap();
    assert_eq!(s.provider, ProviderKind::Local);
    assert!(s.local.is_some() && s.qemu.is_none());
    let why = s.provider_pick.clone().expect("auto says why");
    assert!(why.contains("no KVM"), "{why}");
    let shown = s
        .describe()
        .into_iter()
        .find(|(k, _)| *k == "DELEGATE_PROVIDER")
        .unwrap()
        .1;
    assert!(shown.starts_with("auto → local"), "{shown}");
    // KVM, but no QEMU on this machine's PATH: still the sandbox, and why.
    let m = FixedMachine {
        kvm: true,
        ..machine(dir.path())
    };
    let s = Settings::resolve_with(raw(&args), &m).unwrap();
    assert_eq!(s.provider, ProviderKind::Local);
    let why = s.provider_pick.unwrap();
    assert!(why.contains("QEMU is not ready"), "{why}");
    // A named provider is taken as named.
    let mut named = raw(&args);
    named.provider = "local".into();
    let s = Settings::resolve_with(named, &machine(dir.path())).unwrap();
    assert_eq!((s.provider, s.provider_pick), (ProviderKind::Local, None));
}
