//! What the command line says about itself: `--help` with the commands
//! grouped by topic, shell completions (clap_complete) and man pages
//! (clap_mangen), all generated from the clap definitions in `cli`.

use std::fmt::Write as _;
use std::path::Path;

use clap::{CommandFactory, FromArgMatches};

use super::exit::{self, CliError};
use super::{Cli, out};

/// The commands by topic, in the order `--help` lists them. Every command
/// is in exactly one topic (a unit test checks).
pub const TOPICS: &[(&str, &[&str])] = &[
    (
        "Jobs",
        &[
            "submit", "wait", "status", "logs", "result", "apply", "continue", "release", "cancel",
            "list", "egress",
        ],
    ),
    ("Server", &["serve"]),
    (
        "Setup",
        &["config", "doctor", "smoke", "completions", "man"],
    ),
];

/// The command as clap defines it: what completions and man pages describe.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The command with `--help` grouped by [`TOPICS`]: clap lists subcommands
/// under one heading, so they are hidden from its list and written by topic
/// into the template instead (still parsed, and still in completions and
/// man pages, which use [`command`]).
pub fn grouped() -> clap::Command {
    let cmd = command();
    let topics = topics(&cmd);
    let template = format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{topics}{{all-args}}{{after-help}}"
    );
    cmd.help_template(template)
        // With every command hidden, clap's usage line would omit them.
        .override_usage("delegate-host [SETTINGS] <COMMAND> [ARGS]")
        .mut_subcommands(|sub| sub.hide(true))
        .after_help("Run `delegate-host COMMAND --help` for a command's options.")
}

/// Parses the process's arguments; prints help or a usage error and exits
/// (code 2) as clap does.
pub fn parse() -> Cli {
    let matches = grouped().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn topics(cmd: &clap::Command) -> String {
    let width = TOPICS
        .iter()
        .flat_map(|(_, names)| names.iter().map(|n| n.len()))
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (topic, names) in TOPICS {
        let _ = writeln!(text, "{topic}:");
        for name in *names {
            let about = cmd
                .find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default();
            let _ = writeln!(text, "  {name:<width$}  {about}");
        }
        text.push('\n');
    }
    text
}

/// `completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<u8, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "delegate-host", &mut script);
    out::text(&String::from_utf8_lossy(&script))?;
    Ok(exit::OK)
}

/// `man [--dir DIR]`.
pub fn man(dir: Option<&Path>) -> Result<u8, CliError> {
    match dir {
        Some(dir) => {
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(command(), dir));
            written.map_err(|source| CliError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command())
                .render(&mut page)
                .map_err(CliError::Output)?;
            out::text(&String::from_utf8_lossy(&page))?;
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_in_one_topic() {
        let cmd = command();
        let mut listed: Vec<&str> = TOPICS.iter().flat_map(|(_, n)| n.iter().copied()).collect();
        let mut defined: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        listed.sort_unstable();
        defined.sort_unstable();
        assert_eq!(listed, defined);
    }

    #[test]
    fn every_command_but_the_generators_and_serve_prints_json() {
        let cmd = command();
        let without: Vec<&str> = cmd
            .get_subcommands()
            .filter(|c| c.get_arguments().all(|a| a.get_id() != "json"))
            .map(|c| c.get_name())
            .collect();
        assert_eq!(without, ["serve", "completions", "man"]);
    }

    #[test]
    fn the_definitions_are_consistent() {
        command().debug_assert();
        grouped().debug_assert();
    }
}
