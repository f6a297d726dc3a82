//! The configuration file through the real `delegate-host`: its values
//! under the variables and flags, and `delegate-host config` saying where
//! each value came from.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_delegate-host");

/// A home of its own (so `~/.config/delegate/config.toml` is the test's),
/// nothing from the caller's environment.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The default configuration file, written with `mode`.
    fn config(&self, text: &str, mode: u32) -> PathBuf {
        let dir = self.dir.path().join(".config/delegate");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn run(&self, vars: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("DELEGATE_DATA_DIR", self.dir.path().join("data"))
            .envs(vars.iter().copied())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run delegate-host");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn config_json(&self, vars: &[(&str, &str)], args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["config", "--json"]);
        let (code, stdout, stderr) = self.run(vars, &all);
        assert_eq!(code, 0, "{stdout}{stderr}");
        serde_json::from_str(&stdout).expect("JSON")
    }
}

/// How `config` names a value from the file.
fn at(path: &Path, line: usize, key: &str) -> String {
    format!("{}:{line} ({key})", path.display())
}

const FILE: &str = "\
max_running = 7
max_provisioning = 3
default_memory = \"3G\"

[proxmox]
url = \"https://pve.example:8006\"
";

#[test]
fn file_values_yield_to_variables_and_flags_and_config_says_which_won() {
    let home = Home::new();
    let path = home.config(FILE, 0o644);
    let vars = [("DELEGATE_MAX_PROVISIONING", "1"), ("DEFAULT_MEMORY", "1G")];
    let json = home.config_json(&vars, &["--default-memory", "512M"]);
    let settings = &json["settings"];
    let file = path.display().to_string();
    assert_eq!(json["configFile"]["path"], file.as_str(), "{json}");
    assert_eq!(json["configFile"]["read"], true);
    assert_eq!(settings["DELEGATE_MAX_RUNNING"]["value"], "7");
    assert_eq!(
        settings["DELEGATE_MAX_RUNNING"]["source"],
        serde_json::json!({"kind": "file", "path": file, "line": 1, "key": "max_running"})
    );
    assert_eq!(settings["DELEGATE_MAX_PROVISIONING"]["value"], "1");
    assert_eq!(
        settings["DELEGATE_MAX_PROVISIONING"]["source"],
        serde_json::json!({"kind": "env", "name": "DELEGATE_MAX_PROVISIONING"})
    );
    assert_eq!(settings["DEFAULT_MEMORY"]["value"], "512M");
    assert_eq!(
        settings["DEFAULT_MEMORY"]["source"],
        serde_json::json!({"kind": "flag", "name": "--default-memory"})
    );
    assert_eq!(settings["DEFAULT_DISK"]["source"]["kind"], "default");

    // The text form: NAME=value, then the source.
    let (code, stdout, stderr) = home.run(&vars, &["config"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "# configuration file: {file} (from the default location)\n"
        )),
        "{stdout}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
            .to_string()
    };
    assert!(
        row("DELEGATE_MAX_RUNNING").ends_with(&format!("# {}", at(&path, 1, "max_running"))),
        "{stdout}"
    );
    assert!(row("DELEGATE_MAX_PROVISIONING").ends_with("# env DELEGATE_MAX_PROVISIONING"));
    assert!(row("DEFAULT_DISK").ends_with("# default"));
    // A Proxmox setting while the local provider runs is still shown.
    assert!(
        row("PROXMOX_URL").ends_with(&format!("# {}", at(&path, 6, "proxmox.url"))),
        "{stdout}"
    );
}

#[test]
fn a_named_file_must_exist_and_the_default_one_need_not() {
    let home = Home::new();
    let json = home.config_json(&[], &[]);
    assert_eq!(json["configFile"]["read"], false, "{json}");
    assert_eq!(json["configFile"]["chosenBy"], "default");

    let missing = home.dir.path().join("nope.toml");
    let missing = missing.to_str().unwrap();
    let (code, _, stderr) = home.run(&[("DELEGATE_CONFIG", missing)], &["config"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("DELEGATE_CONFIG: cannot read {missing}")),
        "{stderr}"
    );
    let (code, _, stderr) = home.run(&[], &["--config", missing, "list"]);
    assert_eq!(code, 2, "{stderr}");

    // --config and DELEGATE_CONFIG name a file anywhere.
    let other = home.dir.path().join("other.toml");
    std::fs::write(&other, "max_running = 2\n").unwrap();
    let other = other.to_str().unwrap();
    let json = home.config_json(&[("DELEGATE_CONFIG", other)], &[]);
    assert_eq!(json["settings"]["DELEGATE_MAX_RUNNING"]["value"], "2");
    assert_eq!(json["configFile"]["chosenBy"], "env");
    let json = home.config_json(&[], &["--config", other]);
    assert_eq!(json["configFile"]["chosenBy"], "flag");
}

#[test]
fn bad_files_are_refused_with_the_file_line_and_key() {
    let home = Home::new();
    let refused = |text: &str, mode: u32| {
        let path = home.config(text, mode);
        let (code, stdout, stderr) = home.run(&[], &["config"]);
        assert_eq!(code, 2, "{stdout}{stderr}");
        (path.display().to_string(), stderr)
    };
    let (file, e) = refused("max_running = 1\nmax_runnin = 2\n", 0o600);
    assert!(
        e.contains(&format!("{file}:2: unknown key `max_runnin`")),
        "{e}"
    );
    let (file, e) = refused("[qemu]\nboot_timeout = \"2m\"\n", 0o600);
    assert!(
        e.contains(&format!(
            "{file}:2: `qemu.boot_timeout` takes an integer, not a string"
        )),
        "{e}"
    );
    let (file, e) = refused("http_token = \"0123456789abcdef-token\"\n", 0o644);
    assert!(
        e.contains(&format!("{file}:1: holds the secret `http_token`"))
            && !e.contains("0123456789abcdef"),
        "{e}"
    );
    // The same file, readable by its owner alone, is taken; the token is masked.
    home.config("http_token = \"0123456789abcdef-token\"\n", 0o600);
    let (code, stdout, stderr) = home.run(&[], &["config"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("0123456789abcdef"), "{stdout}");
    assert!(stdout.contains("DELEGATE_HTTP_TOKEN=***"), "{stdout}");
    // A value the setting refuses says where it was set.
    let (file, e) = refused("max_running = 0\n", 0o600);
    assert!(
        e.contains("DELEGATE_MAX_RUNNING: must be at least 1")
            && e.contains(&format!("{file}:1 (max_running)")),
        "{e}"
    );
}

#[test]
fn the_example_prints_without_settings() {
    let home = Home::new();
    // Even a broken configuration file does not stop the example.
    home.config("not toml at all [", 0o600);
    let (code, stdout, stderr) = home.run(&[], &["config", "--example"]);
    assert_eq!(code, 0, "{stderr}");
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.toml"),
    )
    .unwrap();
    assert_eq!(stdout, committed);
}
