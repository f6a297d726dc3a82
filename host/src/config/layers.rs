//! The layers every setting is read through: a flag over its environment
//! variable over the configuration file over the built-in default, with
//! where each value came from ([`Provenance`]).
//!
//! clap parses the command line; the variables (read through the
//! [`Machine`], so tests choose them) and the file's values are checked
//! with each setting's own value parser and then handed to clap as the
//! setting's default. clap's `value_source` then says whether the command
//! line set it, and the layer that gave the default says the rest.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::FromArgMatches;
use clap::parser::ValueSource;

use super::RawSettings;
use super::file::{self, Location};
use super::table::{self, Kind, Setting};
use crate::resolve::{Machine, SettingsError};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default (or a value derived at resolution, such as the
    /// data directory from `XDG_DATA_HOME`).
    Default,
    /// The configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// The key's line.
        line: usize,
        /// The key.
        key: String,
    },
    /// An environment variable.
    Env(String),
    /// A flag on the command line.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { path, line, key } => write!(f, "{}:{line} ({key})", path.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

impl Source {
    /// The source as JSON: `{"kind": "file", "path": ..., "line": ..., "key": ...}` etc.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Source::Default => serde_json::json!({ "kind": "default" }),
            Source::File { path, line, key } => serde_json::json!({
                "kind": "file", "path": path.display().to_string(), "line": line, "key": key,
            }),
            Source::Env(name) => serde_json::json!({ "kind": "env", "name": name }),
            Source::Flag(flag) => serde_json::json!({ "kind": "flag", "name": flag }),
        }
    }

    /// How an error about a value from here names it.
    fn origin(&self, setting: &Setting) -> String {
        match self {
            Source::File { path, line, key } => {
                format!("{}:{line}: `{key}` ({})", path.display(), setting.env)
            }
            Source::Env(name) => name.clone(),
            Source::Flag(flag) => flag.clone(),
            Source::Default => setting.env.clone(),
        }
    }
}

/// The settings' values as parsed, with where each came from.
#[derive(Debug, Clone)]
pub struct Layered {
    /// The command line's matches, settings filled in from every layer.
    pub matches: clap::ArgMatches,
    /// Where each value came from.
    pub provenance: Provenance,
}

impl Layered {
    /// The settings, parsed.
    pub fn raw(&self) -> Result<RawSettings, SettingsError> {
        RawSettings::from_arg_matches(&self.matches).map_err(|e| SettingsError::Given {
            origin: "the command line".into(),
            message: e.to_string(),
        })
    }
}

/// Where every setting came from, and which file was read.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// Where the configuration file is looked for.
    pub location: Option<Location>,
    /// Whether a file was there and read.
    pub file_read: bool,
    /// Each setting given by a flag, a variable or the file: its source
    /// and its value as given, by variable.
    given: BTreeMap<String, (Source, String)>,
    table: Vec<Setting>,
}

impl Provenance {
    /// Where `env`'s value came from. A setting that is unset but has a
    /// `<env>_FILE` twin (the HTTP token, the Proxmox token secret) came
    /// from wherever the twin did.
    pub fn source(&self, env: &str) -> Source {
        self.given
            .get(env)
            .or_else(|| self.given.get(&format!("{env}_FILE")))
            .map_or(Source::Default, |(s, _)| s.clone())
    }

    /// Settings given (not at their default) that `described` leaves out
    /// (say, a Proxmox setting while the local provider runs, or a token
    /// file): variable, value as given (secrets masked) and source.
    pub fn undescribed(
        &self,
        described: &[(&'static str, String)],
    ) -> Vec<(String, String, Source)> {
        self.table
            .iter()
            .filter(|s| !described.iter().any(|(name, _)| *name == s.env))
            .filter_map(|s| {
                let (source, text) = self.given.get(&s.env)?;
                let text = if s.secret {
                    delegate_proto::REDACTED.to_string()
                } else {
                    text.clone()
                };
                Some((s.env.clone(), text, source.clone()))
            })
            .collect()
    }

    /// `error`, saying where the faulty value was set when that was not a
    /// flag or a variable (whose names the error already gives).
    pub fn annotate(&self, error: SettingsError) -> SettingsError {
        match error {
            SettingsError::Invalid { setting, message } => match self.source(setting) {
                source @ Source::File { .. } => SettingsError::Invalid {
                    setting,
                    message: format!("{message} (set at {source})"),
                },
                _ => SettingsError::Invalid { setting, message },
            },
            other => other,
        }
    }
}

/// Parses `argv` with `cmd` (which must flatten [`RawSettings`]), the
/// settings' variables read from `machine` and the configuration file
/// found by `--config` (`config_flag`), `DELEGATE_CONFIG` or the XDG
/// default.
pub fn layer<I, T>(
    cmd: clap::Command,
    argv: I,
    machine: &dyn Machine,
    config_flag: Option<&Path>,
) -> Result<Layered, SettingsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let table = table::settings();
    let location = Location::find(config_flag, machine)?;
    let file = file::read(location.as_ref(), &table, machine)?;

    // Each setting's value below the command line: its variable, else the file.
    let mut below: BTreeMap<String, (Source, String)> = BTreeMap::new();
    for s in &table {
        let from_env = match machine.var_os(&s.env) {
            Some(v) => Some(v.into_string().map_err(|_| SettingsError::Given {
                origin: s.env.clone(),
                message: "is not valid UTF-8".into(),
            })?),
            None => None,
        };
        let (source, text) = match (from_env, file.values.get(&s.env), &file.path) {
            (Some(text), _, _) => (Source::Env(s.env.clone()), text),
            (None, Some(v), Some(path)) => (
                Source::File {
                    path: path.clone(),
                    line: v.line,
                    key: s.key.to_string(),
                },
                v.text.clone(),
            ),
            _ => continue,
        };
        // An empty value is no value, as an empty variable is unset.
        if text.is_empty() {
            continue;
        }
        check(s, &text).map_err(|message| SettingsError::Given {
            origin: source.origin(s),
            message,
        })?;
        below.insert(s.env.clone(), (source, text));
    }

    let cmd = cmd.mut_args(|arg| {
        let Some(s) = table.iter().find(|s| s.arg.get_id() == arg.get_id()) else {
            return arg;
        };
        // The machine's variables replace the process's, read by clap.
        let arg = arg.env(None::<&str>);
        match below.get(&s.env) {
            Some((_, text)) => arg.default_value(text.clone()),
            None => arg,
        }
    });
    let matches = cmd
        .try_get_matches_from(argv)
        .map_err(|e| SettingsError::Given {
            origin: "the command line".into(),
            message: e.to_string(),
        })?;

    let mut given = BTreeMap::new();
    for s in &table {
        let source = match matches.value_source(s.id()) {
            Some(ValueSource::CommandLine) => Source::Flag(s.flag.clone()),
            Some(ValueSource::DefaultValue) => match below.remove(&s.env) {
                Some((source, _)) => source,
                None => continue,
            },
            _ => continue,
        };
        let text = matches
            .get_raw(s.id())
            .map(|values| {
                let parts: Vec<String> = values.map(|v| v.to_string_lossy().into_owned()).collect();
                parts.join(",")
            })
            .unwrap_or_default();
        given.insert(s.env.clone(), (source, text));
    }
    Ok(Layered {
        matches,
        provenance: Provenance {
            location,
            file_read: file.path.is_some(),
            given,
            table,
        },
    })
}

/// Checks `text` with the setting's own value parser, as clap would parse
/// the variable; the message says what is wrong.
fn check(setting: &Setting, text: &str) -> Result<(), String> {
    let mut arg = clap::Arg::new("value")
        .long("value")
        .action(clap::ArgAction::Set)
        .allow_hyphen_values(true)
        .value_parser(setting.arg.get_value_parser().clone());
    if let Kind::List(delimiter) = setting.kind {
        arg = arg
            .value_delimiter(delimiter)
            .action(clap::ArgAction::Append);
    }
    let cmd = clap::Command::new("check").no_binary_name(true).arg(arg);
    match cmd.try_get_matches_from([format!("--value={text}")]) {
        Ok(_) => Ok(()),
        Err(e) => Err(explain(&e, text)),
    }
}

/// clap's complaint about a value, without its command-line framing.
fn explain(error: &clap::Error, text: &str) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(cause) = std::error::Error::source(error) {
        return format!("{text:?} is not valid: {cause}");
    }
    if let Some(ContextValue::Strings(valid)) = error.get(ContextKind::ValidValue) {
        return format!("{text:?} is not one of: {}", valid.join(", "));
    }
    format!("{text:?} is not valid")
}

#[cfg(test)]
mod tests;
