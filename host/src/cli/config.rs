//! `delegate-host config`: the effective settings, secrets masked, each
//! with where its value came from (default, the file and line, a variable,
//! a flag); `config --example` prints the example configuration file.

use std::fmt::Write as _;

use super::exit::{self, CliError};
use super::out;
use crate::config::file::Chosen;
use crate::config::{Provenance, Settings, Source, example};

/// The widest `NAME=value` the sources are aligned after.
const ALIGN_AT_MOST: usize = 56;

/// One row: the variable, its value and its source.
type Row = (String, String, Source);

/// `config [--json]`.
pub fn run(settings: &Settings, provenance: &Provenance, json: bool) -> Result<u8, CliError> {
    let rows = rows(settings, provenance);
    if json {
        out::json(&to_json(&rows, provenance))?;
    } else {
        out::text(&render(&rows, provenance))?;
    }
    Ok(exit::OK)
}

/// `config --example`.
pub fn print_example() -> Result<u8, CliError> {
    out::text(&example::example())?;
    Ok(exit::OK)
}

/// The resolved settings, then the settings given that the resolved ones
/// leave out (say, Proxmox settings while the local provider runs).
fn rows(settings: &Settings, provenance: &Provenance) -> Vec<Row> {
    let described = settings.describe();
    let mut rows: Vec<Row> = described
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone(), provenance.source(name)))
        .collect();
    rows.extend(provenance.undescribed(&described));
    rows
}

/// Where the file is and whether it was read, for the first line.
fn file_line(provenance: &Provenance) -> String {
    match &provenance.location {
        None => "no configuration file (neither XDG_CONFIG_HOME nor HOME is set)".into(),
        Some(location) if provenance.file_read => format!("configuration file: {location}"),
        Some(location) => format!("configuration file: {location}, not present"),
    }
}

/// `NAME=value` lines (what a shell or a systemd `EnvironmentFile=` reads),
/// each followed by its source as a comment.
fn render(rows: &[Row], provenance: &Provenance) -> String {
    // Sources line up unless a value is long (the egress presets are).
    let width = rows
        .iter()
        .map(|(name, value, _)| name.len() + 1 + value.len())
        .filter(|&w| w <= ALIGN_AT_MOST)
        .max()
        .unwrap_or(0);
    let mut text = format!("# {}\n", file_line(provenance));
    for (name, value, source) in rows {
        let pair = format!("{name}={value}");
        let _ = writeln!(text, "{pair:<width$}  # {source}");
    }
    text
}

fn to_json(rows: &[Row], provenance: &Provenance) -> serde_json::Value {
    let settings: serde_json::Map<String, serde_json::Value> = rows
        .iter()
        .map(|(name, value, source)| {
            (
                name.clone(),
                serde_json::json!({ "value": value, "source": source.to_json() }),
            )
        })
        .collect();
    let file = provenance.location.as_ref().map(|l| {
        serde_json::json!({
            "path": l.path.display().to_string(),
            "chosenBy": match l.chosen {
                Chosen::Flag => "flag",
                Chosen::Env => "env",
                Chosen::Default => "default",
            },
            "read": provenance.file_read,
        })
    });
    serde_json::json!({ "configFile": file, "settings": settings })
}
