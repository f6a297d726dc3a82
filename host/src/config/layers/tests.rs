//! Flag over variable over file over default, on made-up machines.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::*;
use crate::config::table::SettingsOnly;
use crate::resolve::FixedMachine;

const HOME: &str = "/home/u";

fn default_file() -> PathBuf {
    Path::new(HOME).join(".config/delegate/config.toml")
}

fn machine() -> FixedMachine {
    FixedMachine {
        cwd: Some(PathBuf::from("/work")),
        ..FixedMachine::default()
    }
    .with_var("HOME", HOME)
}

fn load(machine: &FixedMachine, args: &[&str]) -> Result<Layered, SettingsError> {
    let mut argv = vec!["delegate-host"];
    argv.extend_from_slice(args);
    layer(SettingsOnly::command(), argv, machine, None)
}

fn error(machine: &FixedMachine) -> String {
    load(machine, &[]).unwrap_err().to_string()
}

const FILE: &str = "\
# a comment
max_running = 8
default_memory = \"4G\"
allowed_hosts = [\"a.example\", \"b.example\"]

[proxmox]
url = \"https://pve.example:8006\"
insecure = true
";

#[test]
fn the_files_values_are_used_with_their_lines() {
    let m = machine().with_file(default_file(), FILE);
    let layered = load(&m, &[]).unwrap();
    let raw = layered.raw().unwrap();
    assert_eq!(raw.max_running, 8);
    assert_eq!(raw.default_memory, "4G");
    assert_eq!(raw.allowed_hosts, ["a.example", "b.example"]);
    assert_eq!(raw.proxmox.url.as_deref(), Some("https://pve.example:8006"));
    assert!(raw.proxmox.insecure);
    // Untouched settings keep their defaults.
    assert_eq!(raw.max_provisioning, 2);
    let p = &layered.provenance;
    assert!(p.file_read);
    assert_eq!(
        p.source("DELEGATE_MAX_RUNNING"),
        Source::File {
            path: default_file(),
            line: 2,
            key: "max_running".into()
        }
    );
    assert_eq!(
        p.source("PROXMOX_URL").to_string(),
        format!("{}:7 (proxmox.url)", default_file().display())
    );
    assert_eq!(p.source("DELEGATE_MAX_PROVISIONING"), Source::Default);
}

#[test]
fn a_variable_beats_the_file_and_a_flag_beats_both() {
    let m = machine()
        .with_file(default_file(), FILE)
        .with_var("DELEGATE_MAX_RUNNING", "9")
        .with_var("DEFAULT_MEMORY", "1G");
    let layered = load(&m, &["--default-memory", "512M"]).unwrap();
    let raw = layered.raw().unwrap();
    assert_eq!(raw.max_running, 9);
    assert_eq!(raw.default_memory, "512M");
    let p = &layered.provenance;
    assert_eq!(
        p.source("DELEGATE_MAX_RUNNING"),
        Source::Env("DELEGATE_MAX_RUNNING".into())
    );
    assert_eq!(
        p.source("DEFAULT_MEMORY"),
        Source::Flag("--default-memory".into())
    );
    // The machine's variables are the only ones read: the process's are not.
    let bare = load(&machine(), &[]).unwrap().raw().unwrap();
    assert_eq!(bare.max_running, 4);
}

#[test]
fn the_file_is_found_where_it_is_named() {
    let xdg = machine()
        .with_var("XDG_CONFIG_HOME", "/xdg")
        .with_file("/xdg/delegate/config.toml", "max_running = 3\n");
    assert_eq!(load(&xdg, &[]).unwrap().raw().unwrap().max_running, 3);
    let named = machine()
        .with_var("DELEGATE_CONFIG", "conf/d.toml")
        .with_file("/work/conf/d.toml", "max_running = 5\n")
        .with_file(default_file(), "max_running = 6\n");
    let layered = load(&named, &[]).unwrap();
    assert_eq!(layered.raw().unwrap().max_running, 5);
    let location = layered.provenance.location.unwrap();
    assert_eq!(location.chosen, file::Chosen::Env);
    let flagged = layer(
        SettingsOnly::command(),
        ["delegate-host"],
        &named,
        Some(Path::new("/home/u/.config/delegate/config.toml")),
    )
    .unwrap();
    assert_eq!(flagged.raw().unwrap().max_running, 6);
}

#[test]
fn a_missing_file_is_an_error_only_when_named() {
    let layered = load(&machine(), &[]).unwrap();
    assert!(!layered.provenance.file_read);
    assert_eq!(layered.provenance.location.unwrap().path, default_file());
    let named = machine().with_var("DELEGATE_CONFIG", "/etc/delegate/none.toml");
    let e = error(&named);
    assert!(
        e.starts_with("DELEGATE_CONFIG: cannot read /etc/delegate/none.toml"),
        "{e}"
    );
}

#[test]
fn unknown_keys_and_wrong_types_name_the_file_the_line_and_the_key() {
    let with = |text: &str| error(&machine().with_file(default_file(), text));
    let at = |line: usize| format!("{}:{line}: ", default_file().display());

    let e = with("max_running = 2\nmax_runing = 3\n");
    assert!(
        e.starts_with(&at(2)) && e.contains("unknown key `max_runing`"),
        "{e}"
    );
    let e = with("delegate_max_running = 3\n");
    assert!(e.contains("did you mean `max_running`?"), "{e}");
    let e = with("[proxmox]\nproxmox_url = \"https://x\"\n");
    assert!(
        e.starts_with(&at(2)) && e.contains("did you mean `proxmox.url`?"),
        "{e}"
    );
    let e = with("[proxmx]\nurl = \"https://x\"\n");
    assert!(
        e.starts_with(&at(1)) && e.contains("unknown table [proxmx]"),
        "{e}"
    );

    let e = with("\nmax_running = \"8\"\n");
    assert!(
        e.starts_with(&at(2)) && e.contains("`max_running` takes an integer, not a string"),
        "{e}"
    );
    let e = with("[local]\nunsandboxed = 1\n");
    assert!(
        e.starts_with(&at(2)) && e.contains("`local.unsandboxed` takes true or false"),
        "{e}"
    );
    let e = with("allowed_hosts = [\"a\", 2]\n");
    assert!(
        e.contains("`allowed_hosts` takes an array of strings"),
        "{e}"
    );
    // The setting's own parser judges the value, naming the variable too.
    let e = with("callback_port = 70000\n");
    assert!(
        e.starts_with(&at(1)) && e.contains("`callback_port` (CALLBACK_PORT)"),
        "{e}"
    );
    let e = with("[proxmox]\nclone = \"fast\"\n");
    assert!(e.contains("not one of: auto, linked, full"), "{e}");
    let e = with("max_running = \n");
    assert!(e.starts_with(&at(1)) && e.contains("not valid TOML"), "{e}");
}

#[test]
fn a_secret_needs_a_file_no_one_else_can_read() {
    let text = "[proxmox]\ntoken_secret = \"s3cret-value\"\n";
    let mut m = machine().with_file(default_file(), text);
    m.modes.insert(default_file(), 0o644);
    let e = error(&m);
    assert!(
        e.starts_with(&format!("{}:2: ", default_file().display()))
            && e.contains("holds the secret `proxmox.token_secret`")
            && e.contains("0644")
            && !e.contains("s3cret"),
        "{e}"
    );
    m.modes.insert(default_file(), 0o640);
    assert!(error(&m).contains("0640"));
    // Mode 600: accepted, and masked where shown.
    m.modes.insert(default_file(), 0o600);
    let layered = load(&m, &[]).unwrap();
    assert_eq!(
        layered.raw().unwrap().proxmox.token_secret.as_deref(),
        Some("s3cret-value")
    );
    let shown = layered.provenance.undescribed(&[]);
    let (_, value, _) = shown
        .iter()
        .find(|(name, _, _)| name == "PROXMOX_TOKEN_SECRET")
        .unwrap();
    assert_eq!(value, delegate_proto::REDACTED);
    // Settings that are not secrets may be in a file anyone reads.
    let mut open = machine().with_file(default_file(), "max_running = 2\n");
    open.modes.insert(default_file(), 0o644);
    assert!(load(&open, &[]).is_ok());
}

#[test]
fn bad_variables_are_refused_by_name_and_empty_ones_are_unset() {
    let m = machine().with_var("DELEGATE_MAX_RUNNING", "many");
    let e = error(&m);
    assert!(
        e.starts_with("DELEGATE_MAX_RUNNING: \"many\" is not valid"),
        "{e}"
    );
    let m = machine()
        .with_var("DELEGATE_LOCAL_UNSANDBOXED", "1")
        .with_file(default_file(), "default_vm_template = \"\"\n");
    let raw = load(&m, &[]).unwrap().raw().unwrap();
    assert!(raw.local.local_unsandboxed, "=1 as the README says");
    assert_eq!(raw.default_vm_template, None);
}

#[test]
fn resolution_errors_say_where_a_file_value_was_set() {
    let m = machine().with_file(default_file(), "max_running = 0\n");
    let layered = load(&m, &[]).unwrap();
    let e = SettingsError::Invalid {
        setting: "DELEGATE_MAX_RUNNING",
        message: "must be at least 1".into(),
    };
    let e = layered.provenance.annotate(e).to_string();
    assert_eq!(
        e,
        format!(
            "DELEGATE_MAX_RUNNING: must be at least 1 (set at {}:1 (max_running))",
            default_file().display()
        )
    );
}
