//! Resolution rules, fed with made-up environments.

use super::*;
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

fn machine(dir: &Path) -> MachineEnv {
    MachineEnv {
        xdg_data_home: Some(dir.join("xdg")),
        home: Some(dir.join("home")),
        path: None,
        current_exe: None,
        cwd: Some(dir.to_path_buf()),
    }
}

fn fake_guest(dir: &Path) -> PathBuf {
    let p = dir.join("delegate-guest");
    std::fs::write(&p, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
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
    assert_eq!(s.default_timeout, Duration::from_secs(3600));
    assert_eq!(s.default_cpu, 2);
    assert_eq!(s.default_memory, 2 << 30);
    assert_eq!(s.default_disk, 10 << 30);
    assert_eq!(s.heartbeat_threshold, Duration::from_secs(120));
    assert_eq!(s.cleanup_interval, Duration::from_secs(30));
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
fn errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let guest = fake_guest(dir.path());
    let g = guest.to_str().unwrap();
    for (args, setting) in [
        (vec!["--callback-host", "example.com"], "CALLBACK_HOST"),
        (vec!["--callback-url", "ftp://x"], "CALLBACK_URL"),
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
    std::fs::create_dir(&bin).unwrap();
    fake_guest(&bin);
    let m = MachineEnv {
        path: Some(bin.clone().into_os_string()),
        ..machine(dir.path())
    };
    let s = Settings::resolve_with(raw(&[]), &m).unwrap();
    assert_eq!(s.guest_bin, Some(bin.join("delegate-guest")));

    // (qemu VMs reach the callback through a relay on this host, so
    // Proxmox is the VM provider that needs an address.)
    let pve = [
        "--provider",
        "proxmox",
        "--proxmox-url",
        "https://pve.example:8006",
        "--proxmox-token-id",
        "delegate@pve!host",
        "--proxmox-token-secret",
        "0f4c7e1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
    ];
    let err = Settings::resolve_with(raw(&pve), &m).unwrap_err();
    assert!(err.to_string().starts_with("CALLBACK_URL"), "{err}");
    let mut with_host = pve.to_vec();
    with_host.extend(["--callback-host", "10.1.2.3"]);
    let s = Settings::resolve_with(raw(&with_host), &m).unwrap();
    assert_eq!(s.callback_url, "http://10.1.2.3:8765");
    assert_eq!(s.guest_bin, None);
}

#[test]
fn token_file_is_read_and_masked() {
    let dir = tempfile::tempdir().unwrap();
    let guest = fake_guest(dir.path());
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cr3t-token-0123456789\n").unwrap();
    let s = Settings::resolve_with(
        raw(&[
            "--guest-bin",
            guest.to_str().unwrap(),
            "--http-token-file",
            file.to_str().unwrap(),
            "--data-dir",
            "rel",
        ]),
        &machine(dir.path()),
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
    let exe = MachineEnv {
        current_exe: Some(PathBuf::from("/w/target/debug/deps/t-123")),
        ..MachineEnv::default()
    };
    let c = qemu_guest_candidates(Some(Path::new("/g")), &exe);
    assert_eq!(c[0], Path::new("/g"));
    assert!(c.contains(&PathBuf::from(
        "/w/target/x86_64-unknown-linux-musl/release/delegate-guest"
    )));
}
