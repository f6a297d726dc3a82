//! The example configuration file (`delegate-host config --example`,
//! committed as `config.example.toml`): every setting of the table,
//! commented out at its default, with its help, variable and flag. A test
//! compares the committed file with this output, so it cannot drift.

use std::fmt::Write as _;

use super::table::{self, Kind, SECTIONS, Setting};
use crate::resolve::parse_flag;

const WIDTH: usize = 78;

const HEADER: &str = "\
delegate-host configuration file (TOML).

delegate-host reads the file --config or DELEGATE_CONFIG names, else
$XDG_CONFIG_HOME/delegate/config.toml, else ~/.config/delegate/config.toml
(a missing file at those default places is fine). A flag beats its
environment variable, which beats this file, which beats the default;
`delegate-host config` shows every value and where it came from.

A key is its environment variable's name without DELEGATE_, in lower
case (DELEGATE_MAX_RUNNING is max_running, CALLBACK_PORT is callback_port).
Settings named DELEGATE_LOCAL_*, PROXMOX_*, DELEGATE_QEMU_* and
DELEGATE_EGRESS_* sit in [local], [proxmox], [qemu] and [egress] without
that prefix (PROXMOX_URL is url in [proxmox]). Unknown keys and values of
the wrong type are refused. A secret may be here only when no one but the
file's owner can read it (chmod 600), as ssh asks of private keys. An
empty string or array is the same as leaving the key out.

Every setting is below at its default, commented out. Generated from the
settings' definitions by `delegate-host config --example`.";

/// The example file.
pub fn example() -> String {
    let table = table::settings();
    let mut out = String::new();
    for line in HEADER.lines() {
        comment(&mut out, line);
    }
    let top = table.iter().filter(|s| s.key.section.is_none());
    for s in top {
        out.push('\n');
        entry(&mut out, s);
    }
    for (section, _) in SECTIONS {
        let _ = write!(out, "\n[{section}]\n");
        for s in table.iter().filter(|s| s.key.section == Some(section)) {
            out.push('\n');
            entry(&mut out, s);
        }
    }
    out
}

fn entry(out: &mut String, s: &Setting) {
    for paragraph in s.help().split("\n\n") {
        let mut text = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
        // clap drops the full stop of a one-sentence help; a comment keeps it.
        if !text.ends_with(['.', ']', ':']) {
            text.push('.');
        }
        wrap(out, &text);
    }
    if s.secret {
        comment(
            out,
            "A secret: allowed here only when the file is mode 600.",
        );
    }
    comment(out, &format!("env {}, flag {}", s.env, s.flag));
    match s.default_text() {
        Some(default) => {
            let _ = writeln!(out, "#{} = {}", s.key.name, toml_value(s.kind, &default));
        }
        None => {
            comment(out, "unset by default");
            let _ = writeln!(out, "#{} = {}", s.key.name, placeholder(s.kind));
        }
    }
}

/// The default as TOML.
fn toml_value(kind: Kind, default: &str) -> String {
    match kind {
        Kind::Bool => parse_flag(default).unwrap_or(false).to_string(),
        Kind::Integer | Kind::Float => default.to_string(),
        Kind::Text => quote(default),
        Kind::List(delimiter) => {
            let items: Vec<String> = default.split(delimiter).map(quote).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

fn placeholder(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "false",
        Kind::Integer => "0",
        Kind::Float => "0.0",
        Kind::Text => "\"\"",
        Kind::List(_) => "[]",
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn comment(out: &mut String, line: &str) {
    if line.is_empty() {
        out.push_str("#\n");
    } else {
        let _ = writeln!(out, "# {line}");
    }
}

/// `text` as comment lines of at most [`WIDTH`] columns.
fn wrap(out: &mut String, text: &str) {
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.len() + 1 + word.len() + 2 > WIDTH {
            comment(out, &line);
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        comment(out, &line);
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::file;

    fn committed_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.toml")
    }

    #[test]
    fn the_committed_example_is_the_generated_one() {
        let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
        assert!(
            committed == example(),
            "config.example.toml is out of date with the settings; regenerate it with \
             `cargo run -p delegate-host -- config --example > config.example.toml`"
        );
    }

    #[test]
    fn the_readmes_example_is_a_file_the_host_accepts() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        let start = readme
            .find("```toml\n")
            .expect("a toml block in the README")
            + 8;
        let block = &readme[start..];
        let block = &block[..block.find("```").unwrap()];
        let values = file::parse(block, Path::new("README.md"), &table::settings()).unwrap();
        assert!(
            values.contains_key("PROXMOX_TOKEN_SECRET_FILE"),
            "{values:?}"
        );
    }

    #[test]
    fn every_setting_is_in_the_example_and_every_line_of_it_parses() {
        // Uncommented, the example is a file the host accepts, with every setting.
        let text: String = example()
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => format!("{rest}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        let table = table::settings();
        let values = file::parse(&text, Path::new("example.toml"), &table).unwrap();
        assert_eq!(values.len(), table.len(), "{text}");
    }
}
