//! The one table of settings: every field of [`RawSettings`] with its flag,
//! environment variable and configuration file key, read from clap's
//! definitions. A setting is added in one place (a field with
//! `#[arg(long, env = "...")]`); its file key follows from the variable's
//! name by [`FileKey::for_env`], so there is no second list to keep in sync.

use std::any::TypeId;
use std::fmt;

use clap::CommandFactory;

use super::RawSettings;

/// The flags alone: the command the table is read from.
#[derive(clap::Parser)]
pub(super) struct SettingsOnly {
    #[command(flatten)]
    pub raw: RawSettings,
}

/// Variables whose prefix puts their key in a TOML table, by section name.
/// Everything else sits at the top of the file, named by its variable
/// without `DELEGATE_`.
pub const SECTIONS: &[(&str, &str)] = &[
    ("local", "DELEGATE_LOCAL_"),
    ("proxmox", "PROXMOX_"),
    ("qemu", "DELEGATE_QEMU_"),
    ("egress", "DELEGATE_EGRESS_"),
];

/// Where a setting sits in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileKey {
    /// The table (`[proxmox]`), or `None` for the top of the file.
    pub section: Option<&'static str>,
    /// The key within it.
    pub name: String,
}

impl FileKey {
    /// The key of the setting read from `env`: `PROXMOX_URL` is `url` in
    /// `[proxmox]`, `DELEGATE_QEMU_ACCEL` is `accel` in `[qemu]`,
    /// `DELEGATE_MAX_RUNNING` is `max_running` and `CALLBACK_PORT` is
    /// `callback_port`.
    pub fn for_env(env: &str) -> FileKey {
        for (section, prefix) in SECTIONS {
            if let Some(rest) = env.strip_prefix(prefix) {
                return FileKey {
                    section: Some(section),
                    name: rest.to_ascii_lowercase(),
                };
            }
        }
        FileKey {
            section: None,
            name: env
                .strip_prefix("DELEGATE_")
                .unwrap_or(env)
                .to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.section {
            Some(section) => write!(f, "{section}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What TOML type a setting takes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Integer,
    /// A number, whole or not.
    Float,
    /// A string.
    Text,
    /// An array of strings, or one string separated as in the variable.
    List(char),
}

impl Kind {
    fn of(arg: &clap::Arg) -> Kind {
        let ty = arg.get_value_parser().type_id();
        let is = |id: TypeId| ty == id;
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) || is(TypeId::of::<bool>()) {
            Kind::Bool
        } else if [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<u128>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<i128>(),
            TypeId::of::<isize>(),
        ]
        .into_iter()
        .any(is)
        {
            Kind::Integer
        } else if is(TypeId::of::<f64>()) || is(TypeId::of::<f32>()) {
            Kind::Float
        } else if let Some(delimiter) = arg.get_value_delimiter() {
            Kind::List(delimiter)
        } else {
            Kind::Text
        }
    }

    /// How people call this type, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bool => "true or false",
            Kind::Integer => "an integer",
            Kind::Float => "a number",
            Kind::Text => "a string",
            Kind::List(_) => "an array of strings",
        }
    }
}

/// One setting: a flag, a variable and a file key.
#[derive(Debug, Clone)]
pub struct Setting {
    /// clap's definition (its id, value parser, default).
    pub arg: clap::Arg,
    /// The environment variable.
    pub env: String,
    /// The flag, `--callback-port`.
    pub flag: String,
    /// The file key.
    pub key: FileKey,
    /// The TOML type the file must use.
    pub kind: Kind,
    /// A secret (its variable's value is hidden in `--help`): the file
    /// may hold it only when no one else can read the file, and
    /// `delegate-host config` masks it.
    pub secret: bool,
}

impl Setting {
    /// clap's id of the field.
    pub fn id(&self) -> &str {
        self.arg.get_id().as_str()
    }

    /// The help text: the long form when there is one.
    pub fn help(&self) -> String {
        self.arg
            .get_long_help()
            .or_else(|| self.arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default()
    }

    /// The built-in default as the variable would spell it, when there is one.
    pub fn default_text(&self) -> Option<String> {
        let values: Vec<String> = self
            .arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        match (values.is_empty(), self.kind) {
            (true, _) => None,
            (false, Kind::List(d)) => Some(values.join(&d.to_string())),
            (false, _) => Some(values.concat()),
        }
    }
}

/// Every setting, in the order of [`RawSettings`]' fields.
pub fn settings() -> Vec<Setting> {
    let cmd = SettingsOnly::command();
    cmd.get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            Some(Setting {
                env: env.clone(),
                flag: format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())),
                key: FileKey::for_env(&env),
                kind: Kind::of(arg),
                secret: arg.is_hide_env_values_set(),
                arg: arg.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_setting_has_a_variable_a_flag_and_one_key() {
        let cmd = SettingsOnly::command();
        let table = settings();
        assert_eq!(
            table.len(),
            cmd.get_arguments().count(),
            "a setting without env"
        );
        let keys: BTreeSet<String> = table.iter().map(|s| s.key.to_string()).collect();
        assert_eq!(keys.len(), table.len(), "two settings share a file key");
        // A top-level key never shadows a table.
        for s in table.iter().filter(|s| s.key.section.is_none()) {
            assert!(
                SECTIONS.iter().all(|(name, _)| *name != s.key.name),
                "{}",
                s.env
            );
        }
        assert!(table.iter().all(|s| s.arg.get_long().is_some()));
    }

    #[test]
    fn keys_follow_the_variables() {
        let key = |env: &str| FileKey::for_env(env).to_string();
        assert_eq!(key("PROXMOX_TOKEN_SECRET"), "proxmox.token_secret");
        assert_eq!(key("DELEGATE_QEMU_BOOT_TIMEOUT"), "qemu.boot_timeout");
        assert_eq!(key("DELEGATE_EGRESS_ALLOW"), "egress.allow");
        assert_eq!(key("DELEGATE_LOCAL_JOB_UID"), "local.job_uid");
        assert_eq!(key("DELEGATE_MAX_RUNNING"), "max_running");
        assert_eq!(key("CALLBACK_PORT"), "callback_port");
    }

    #[test]
    fn kinds_and_secrets_come_from_the_definitions() {
        let table = settings();
        let find = |env: &str| table.iter().find(|s| s.env == env).expect(env).clone();
        assert_eq!(find("CALLBACK_PORT").kind, Kind::Integer);
        assert_eq!(find("DELEGATE_LOCAL_UNSANDBOXED").kind, Kind::Bool);
        assert_eq!(find("PROXMOX_INSECURE").kind, Kind::Bool);
        assert_eq!(find("DELEGATE_MAX_BUDGET_USD").kind, Kind::Float);
        assert_eq!(find("DELEGATE_ALLOWED_HOSTS").kind, Kind::List(','));
        assert_eq!(find("DEFAULT_MEMORY").kind, Kind::Text);
        assert_eq!(find("PROXMOX_CLONE").kind, Kind::Text);
        let secrets: BTreeSet<String> = table
            .iter()
            .filter(|s| s.secret)
            .map(|s| s.env.clone())
            .collect();
        assert_eq!(
            secrets,
            BTreeSet::from(
                [
                    "DELEGATE_HTTP_TOKEN",
                    "PROXMOX_PASSWORD",
                    "PROXMOX_TOKEN_SECRET"
                ]
                .map(String::from)
            )
        );
        assert_eq!(
            find("DELEGATE_ALLOWED_HOSTS").default_text().as_deref(),
            Some("localhost,127.0.0.1,[::1]")
        );
        assert_eq!(find("CALLBACK_URL").default_text(), None);
    }
}
