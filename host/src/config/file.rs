//! The configuration file: where it is, and its values checked against the
//! settings table ([`super::table`]) before anything else sees them.
//!
//! TOML, parsed with the `toml` crate's span-keeping document parser so
//! every complaint names the line. A value is refused unless its key is a
//! setting and its type is the one the setting takes; a file holding a
//! secret is refused when group or others may read it, as ssh refuses
//! such private keys.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::table::{FileKey, Kind, SECTIONS, Setting};
use crate::resolve::{Machine, SettingsError, absolute};

/// The variable naming the configuration file.
pub const CONFIG_VAR: &str = "DELEGATE_CONFIG";

/// How the file's path was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// `--config`.
    Flag,
    /// `DELEGATE_CONFIG`.
    Env,
    /// `$XDG_CONFIG_HOME/delegate/config.toml` or
    /// `~/.config/delegate/config.toml`: it need not exist.
    Default,
}

/// The configuration file's path and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (absolute).
    pub path: PathBuf,
    /// Who named it.
    pub chosen: Chosen,
}

impl Location {
    /// The file named by `--config` (`flag`), else `DELEGATE_CONFIG`, else
    /// the XDG default; `None` when none can be derived (no HOME).
    pub fn find(
        flag: Option<&Path>,
        machine: &dyn Machine,
    ) -> Result<Option<Location>, SettingsError> {
        let named = match flag {
            Some(path) => Some((path.to_path_buf(), Chosen::Flag)),
            None => machine
                .var_os(CONFIG_VAR)
                .map(|p| (PathBuf::from(p), Chosen::Env)),
        };
        if let Some((path, chosen)) = named {
            let path = absolute(CONFIG_VAR, &path, machine)?;
            return Ok(Some(Location { path, chosen }));
        }
        // A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
        let base = machine
            .var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                machine
                    .var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".config"))
            });
        Ok(base.map(|b| Location {
            path: b.join("delegate").join("config.toml"),
            chosen: Chosen::Default,
        }))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.chosen {
            Chosen::Flag => "--config",
            Chosen::Env => CONFIG_VAR,
            Chosen::Default => "the default location",
        };
        write!(f, "{} (from {how})", self.path.display())
    }
}

/// One setting's value in the file, spelled as its variable would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileValue {
    /// The value; lists joined by their separator.
    pub text: String,
    /// The line of its key (1-based).
    pub line: usize,
}

/// The file's values by variable name.
#[derive(Debug, Clone, Default)]
pub struct FileValues {
    /// The file, when one was read.
    pub path: Option<PathBuf>,
    /// Each setting the file gives, by its variable.
    pub values: BTreeMap<String, FileValue>,
}

/// Reads the file at `location`. A missing file is an error when it was
/// named (`--config`, `DELEGATE_CONFIG`) and nothing at the default place.
pub fn read(
    location: Option<&Location>,
    table: &[Setting],
    machine: &dyn Machine,
) -> Result<FileValues, SettingsError> {
    let Some(location) = location else {
        return Ok(FileValues::default());
    };
    let bytes = match machine.read(&location.path) {
        Ok(bytes) => bytes,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && location.chosen == Chosen::Default =>
        {
            return Ok(FileValues::default());
        }
        Err(source) => {
            return Err(SettingsError::Read {
                setting: CONFIG_VAR,
                path: location.path.clone(),
                source,
            });
        }
    };
    let path = &location.path;
    let text = String::from_utf8(bytes).map_err(|_| file_error(path, None, "is not UTF-8 text"))?;
    let values = parse(&text, path, table)?;
    refuse_readable_secrets(path, &values, table, machine)?;
    Ok(FileValues {
        path: Some(path.clone()),
        values,
    })
}

/// The file's settings by variable, each checked for a known key and its type.
pub fn parse(
    text: &str,
    path: &Path,
    table: &[Setting],
) -> Result<BTreeMap<String, FileValue>, SettingsError> {
    let doc = DeTable::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        file_error(path, line, format!("not valid TOML: {}", e.message()))
    })?;
    let mut out = BTreeMap::new();
    for (key, value) in doc.get_ref() {
        let line = line_of(text, key.span().start);
        let name = key.get_ref().as_ref();
        match (value.get_ref(), SECTIONS.iter().find(|(s, _)| *s == name)) {
            (DeValue::Table(inner), Some((section, _))) => {
                for (key, value) in inner {
                    let line = line_of(text, key.span().start);
                    let key = FileKey {
                        section: Some(section),
                        name: key.get_ref().to_string(),
                    };
                    let (env, value) = entry(&key, value.get_ref(), line, path, table)?;
                    out.insert(env, value);
                }
            }
            (_, Some((section, _))) => {
                return Err(file_error(
                    path,
                    Some(line),
                    format!("`{section}` must be a table: [{section}] and its keys below it"),
                ));
            }
            (DeValue::Table(_), None) => {
                let known: Vec<String> = SECTIONS.iter().map(|(s, _)| format!("[{s}]")).collect();
                return Err(file_error(
                    path,
                    Some(line),
                    format!(
                        "unknown table [{name}]; the tables are {}",
                        known.join(", ")
                    ),
                ));
            }
            (value, None) => {
                let key = FileKey {
                    section: None,
                    name: name.to_string(),
                };
                let (env, value) = entry(&key, value, line, path, table)?;
                out.insert(env, value);
            }
        }
    }
    Ok(out)
}

/// One key's value, checked against the table.
fn entry(
    key: &FileKey,
    value: &DeValue<'_>,
    line: usize,
    path: &Path,
    table: &[Setting],
) -> Result<(String, FileValue), SettingsError> {
    let Some(setting) = table.iter().find(|s| &s.key == key) else {
        return Err(file_error(path, Some(line), unknown_key(key, table)));
    };
    let text = text_of(value, setting.kind).map_err(|got| {
        file_error(
            path,
            Some(line),
            format!(
                "`{key}` takes {}, not {got} ({})",
                setting.kind.name(),
                setting.env
            ),
        )
    })?;
    Ok((setting.env.clone(), FileValue { text, line }))
}

/// What to say about a key no setting has: the right spelling when the
/// key is a variable's or a flag's name.
fn unknown_key(key: &FileKey, table: &[Setting]) -> String {
    let wanted = key.name.replace('-', "_");
    let guess = table.iter().find(|s| {
        s.env.eq_ignore_ascii_case(&wanted)
            || s.flag.trim_start_matches('-').replace('-', "_") == wanted
            || (key.section.is_some() && s.key.name == wanted)
            || (key.section.is_none() && s.key.section.is_some() && s.key.name == wanted)
    });
    match guess {
        Some(s) => format!("unknown key `{key}`; did you mean `{}`?", s.key),
        None => {
            format!("unknown key `{key}`; `delegate-host config --example` lists every setting")
        }
    }
}

/// A value as its variable would spell it, or the type it wrongly has.
fn text_of(value: &DeValue<'_>, kind: Kind) -> Result<String, &'static str> {
    match (kind, value) {
        (Kind::Bool, DeValue::Boolean(b)) => Ok(b.to_string()),
        (Kind::Integer | Kind::Float, DeValue::Integer(i)) => {
            i128::from_str_radix(i.as_str(), i.radix())
                .map(|n| n.to_string())
                .map_err(|_| "an integer this large")
        }
        (Kind::Float, DeValue::Float(f)) => Ok(f.as_str().to_string()),
        (Kind::Text | Kind::List(_), DeValue::String(s)) => Ok(s.to_string()),
        (Kind::List(delimiter), DeValue::Array(items)) => {
            let mut parts = Vec::new();
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(s) if !s.contains(delimiter) => parts.push(s.to_string()),
                    DeValue::String(_) => return Err("a string holding the list's separator"),
                    other => return Err(type_name(other)),
                }
            }
            Ok(parts.join(&delimiter.to_string()))
        }
        (_, other) => Err(type_name(other)),
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Secrets only in a file no one else may read (group and other bits
/// clear, as ssh asks of a private key).
fn refuse_readable_secrets(
    path: &Path,
    values: &BTreeMap<String, FileValue>,
    table: &[Setting],
    machine: &dyn Machine,
) -> Result<(), SettingsError> {
    let Some(secret) = table
        .iter()
        .filter(|s| s.secret)
        .find_map(|s| values.get(&s.env).map(|v| (s, v)))
    else {
        return Ok(());
    };
    let mode = machine.mode(path).unwrap_or(0o777) & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let (setting, value) = secret;
    Err(file_error(
        path,
        Some(value.line),
        format!(
            "holds the secret `{}` but its mode is {mode:04o}, so others may read it: \
             `chmod 600 {}`, or leave the secret out of the file",
            setting.key,
            path.display()
        ),
    ))
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn file_error(path: &Path, line: Option<usize>, message: impl Into<String>) -> SettingsError {
    SettingsError::File {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}
