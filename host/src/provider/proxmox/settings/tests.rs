use std::path::PathBuf;

use clap::Parser;

use super::*;
use crate::resolve::FixedMachine;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ProxmoxArgs,
}

fn args(list: &[&str]) -> ProxmoxArgs {
    let mut argv = vec!["x"];
    argv.extend_from_slice(list);
    Cli::try_parse_from(argv).unwrap().args
}

/// A machine with nothing but a host name.
fn machine() -> FixedMachine {
    FixedMachine {
        hostname: Some("Builder.Example".into()),
        ..FixedMachine::default()
    }
}

fn token_args() -> Vec<&'static str> {
    vec![
        "--proxmox-url",
        "https://pve.example:8006/",
        "--proxmox-token-id",
        "delegate@pve!host",
        "--proxmox-token-secret",
        "0b5e5b7e-1111-2222-3333-444455556666",
    ]
}

#[test]
fn token_settings_resolve_with_defaults() {
    let s = args(&token_args()).resolve(&machine()).unwrap();
    assert_eq!(s.url, "https://pve.example:8006");
    assert!(matches!(&s.credentials, Credentials::Token { id, .. } if id == "delegate@pve!host"));
    assert_eq!(s.vmid_range, 90000..=90999);
    assert_eq!(s.clone, CloneMode::Auto);
    assert_eq!(s.agent_wait, Duration::from_secs(600));
    assert_eq!(s.instance, "builder.example");
    assert_eq!(s.tags(), "delegate;delegate-builder.example");
    assert!(s.origins[0].contains("PROXMOX_URL"));
    let described = format!("{:?}", s.describe());
    assert!(!described.contains("0b5e5b7e"), "{described}");
    assert!(!format!("{s:?}").contains("0b5e5b7e"));
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let mut a = token_args();
    a.truncate(4);
    a.extend(["--proxmox-token-secret-file", "/run/secrets/pve"]);
    let mut env = machine();
    env.files
        .insert(PathBuf::from("/run/secrets/pve"), b"abc-123\n".to_vec());
    let s = args(&a).resolve(&env).unwrap();
    assert!(
        matches!(&s.credentials, Credentials::Token { secret, .. } if secret.expose() == "abc-123")
    );
    let err = args(&a).resolve(&machine()).unwrap_err();
    assert!(
        err.to_string().starts_with("PROXMOX_TOKEN_SECRET_FILE"),
        "{err}"
    );
}

#[test]
fn errors_name_the_setting() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--proxmox-url", "http://pve:8006"], "PROXMOX_URL"),
        (vec!["--proxmox-url", "https://pve:8006/x"], "PROXMOX_URL"),
        (vec!["--proxmox-token-id", "nobang@pve"], "PROXMOX_TOKEN_ID"),
        (vec!["--proxmox-vmid-range", "5-10"], "PROXMOX_VMID_RANGE"),
        (
            vec!["--proxmox-vmid-range", "900-800"],
            "PROXMOX_VMID_RANGE",
        ),
        (
            vec!["--proxmox-fingerprint", "AB:CD"],
            "PROXMOX_FINGERPRINT",
        ),
        (vec!["--proxmox-nodes", "a b"], "PROXMOX_NODES"),
        (
            vec!["--proxmox-max-clones-per-node", "0"],
            "PROXMOX_MAX_CLONES_PER_NODE",
        ),
        (
            vec!["--proxmox-agent-wait-seconds", "0"],
            "PROXMOX_AGENT_WAIT_SECONDS",
        ),
        (vec!["--proxmox-storage", "x y"], "PROXMOX_STORAGE"),
        (vec!["--proxmox-ca-file", "/nope.pem"], "PROXMOX_CA_FILE"),
        (
            vec!["--proxmox-insecure", "1", "--proxmox-fingerprint", &FP],
            "PROXMOX_INSECURE",
        ),
    ];
    for (extra, setting) in cases {
        let mut a = token_args();
        // Later flags override earlier ones in clap only for single values;
        // replace the url/token id by position when the case sets them.
        if extra[0] == "--proxmox-url" {
            a[1] = extra[1];
        } else if extra[0] == "--proxmox-token-id" {
            a[3] = extra[1];
        } else {
            a.extend(extra.iter().copied());
        }
        let err = args(&a).resolve(&machine()).unwrap_err();
        assert!(err.to_string().starts_with(setting), "{setting}: got {err}");
    }
}

const FP: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

#[test]
fn fingerprints_parse_and_print() {
    let mut a = token_args();
    let two = format!("{FP}, {}", FP.to_lowercase().replace(':', ""));
    a.extend(["--proxmox-fingerprint", &two]);
    let s = args(&a).resolve(&machine()).unwrap();
    assert_eq!(s.tls.fingerprints.len(), 2);
    assert_eq!(s.tls.fingerprints[0], s.tls.fingerprints[1]);
    assert_eq!(format_fingerprint(&s.tls.fingerprints[0]), FP);
}

#[test]
fn ticket_login_needs_password() {
    let a = args(&[
        "--proxmox-url",
        "https://pve:8006",
        "--proxmox-user",
        "root@pam",
    ]);
    let err = a.resolve(&machine()).unwrap_err();
    assert!(err.to_string().starts_with("PROXMOX_PASSWORD"), "{err}");
    let a = args(&[
        "--proxmox-url",
        "https://pve:8006",
        "--proxmox-user",
        "root@pam",
        "--proxmox-password",
        "pw",
    ]);
    let s = a.resolve(&machine()).unwrap();
    assert!(matches!(s.credentials, Credentials::Ticket { .. }));
}

#[test]
fn no_credentials_at_all() {
    let err = args(&["--proxmox-url", "https://pve:8006"])
        .resolve(&machine())
        .unwrap_err();
    assert!(err.to_string().contains("no credentials"), "{err}");
    let err = ProxmoxArgs::default().resolve(&machine()).unwrap_err();
    assert!(err.to_string().starts_with("PROXMOX_URL"), "{err}");
}

#[test]
fn migrates_from_mcp_proxmox_admin() {
    let mut env = machine();
    env.files.insert(
        PathBuf::from("/srv/mcp-proxmox-admin/proxmox-config.json"),
        br#"{"host":"pve.lan","apiTokenId":"admin@pve!mcp","apiTokenSecret":"s3cret","verifySsl":false}"#
            .to_vec(),
    );
    let a = args(&[
        "--proxmox-admin-path",
        "/srv/mcp-proxmox-admin/dist/index.js",
    ]);
    let s = a.resolve(&env).unwrap();
    assert_eq!(s.url, "https://pve.lan:8006");
    assert!(matches!(&s.credentials, Credentials::Token { id, .. } if id == "admin@pve!mcp"));
    let said = s.origins.join("\n");
    assert!(said.contains("mcp-proxmox-admin"), "{said}");
    assert!(
        said.contains("/srv/mcp-proxmox-admin/proxmox-config.json"),
        "{said}"
    );
    // verifySsl=false does not silently turn verification off.
    assert!(!s.tls.insecure);
    assert!(said.contains("verifySsl=false"), "{said}");
}

#[test]
fn own_settings_win_over_migration() {
    let mut env = machine();
    env.vars.insert(
        "MCP_SETTINGS".into(),
        r#"{"host":"old","apiTokenId":"a@pve!b","apiTokenSecret":"c"}"#.into(),
    );
    let s = args(&token_args()).resolve(&env).unwrap();
    assert_eq!(s.url, "https://pve.example:8006");
    assert!(matches!(&s.credentials, Credentials::Token { id, .. } if id == "delegate@pve!host"));
}

#[test]
fn ids_and_tags() {
    assert!(is_token_id("root@pam!delegate"));
    assert!(is_token_id("ci.bot@pve!t-1"));
    assert!(!is_token_id("root@pam"));
    assert!(!is_token_id("root@pam!1x"));
    assert!(!is_token_id("ro ot@pam!x"));
    assert!(is_user_id("root@pam"));
    assert!(!is_user_id("root"));
    assert_eq!(tag_safe("My Host_01"), "my-host_01");
    assert_eq!(tag_safe("***"), "");
    assert_eq!(parse_flag("1"), Ok(true));
    assert_eq!(parse_flag("TRUE"), Ok(true));
    assert_eq!(parse_flag("0"), Ok(false));
    assert!(parse_flag("maybe").is_err());
}
