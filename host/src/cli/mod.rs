//! The command line: `serve` for MCP clients, and the same job operations
//! as the MCP tools for a person at a terminal.
//!
//! Read-only commands read the store directly (SQLite in WAL mode lets them
//! while a server runs). `submit` and `cancel` go through the store too; a
//! running engine picks them up. When no engine owns the data directory,
//! `submit --wait` runs one in this process for the job.

pub mod apply;
pub mod config;
pub mod doctor;
pub mod egress;
pub mod exit;
pub mod help;
pub mod ids;
pub mod jobs;
pub mod manifest;
pub mod out;
pub mod render;
pub mod serve;
pub mod smoke;
pub mod turns;
pub mod wait;
pub mod when;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use delegate_proto::JobState;

use crate::config::{RawSettings, Settings};
use crate::jobs::manager::MAX_LIST_LIMIT;
use crate::resolve::ProcessMachine;

pub use exit::CliError;

/// delegate-host: run jobs in throwaway VMs, for MCP clients and people.
#[derive(Debug, Parser)]
#[command(name = "delegate-host", version, about, long_about = None)]
pub struct Cli {
    /// The configuration file (TOML) [env: DELEGATE_CONFIG] [default:
    /// $XDG_CONFIG_HOME/delegate/config.toml or ~/.config/delegate/config.toml].
    // No `env` here: `config::layer` reads DELEGATE_CONFIG itself, so it
    // can tell the flag from the variable.
    #[arg(
        long = "config",
        value_name = "FILE",
        help_heading = "Settings (each also read from its environment variable)"
    )]
    pub config_file: Option<PathBuf>,
    /// Settings (each also read from its environment variable).
    #[command(
        flatten,
        next_help_heading = "Settings (each also read from its environment variable)"
    )]
    pub settings: RawSettings,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How a command prints: text for people, JSON, or ids only.
#[derive(Debug, Clone, Copy, Default, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Print JSON (the MCP tools' answers) instead of text.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print job ids only, one a line (no progress, no notes).
    #[arg(long, short)]
    pub quiet: bool,
}

/// The `--json` of commands that print no job ids.
#[derive(Debug, Clone, Copy, Default, Args)]
#[command(next_help_heading = "Output")]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The commands. `help::TOPICS` groups them in `--help`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP on stdin/stdout (what Claude Code launches), or over
    /// streamable HTTP with --http.
    Serve {
        /// Serve streamable HTTP on this address (e.g. 127.0.0.1:8080)
        /// instead of stdio; needs DELEGATE_HTTP_TOKEN or
        /// DELEGATE_HTTP_TOKEN_FILE.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
    /// Submit a job from a manifest file (`-` reads stdin); prints its id.
    Submit {
        /// The manifest (JSON).
        manifest: PathBuf,
        /// Wait for the job to finish, showing progress, then print its
        /// result; runs the engine here when no server is running.
        #[arg(long)]
        wait: bool,
        /// How to print.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Wait for a job to finish, showing progress, then print its result;
    /// exits with the job's code.
    Wait {
        /// The job id, or enough of its first characters to name one job.
        id: String,
        /// How to print.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show a job's status.
    Status {
        /// The job id, or enough of its first characters to name one job.
        id: String,
        /// How to print.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Print a job's output log.
    Logs {
        /// The job id, or enough of its first characters to name one job.
        id: String,
        /// Keep printing as the job writes, until it ends.
        #[arg(long, short)]
        follow: bool,
        /// Which stream.
        #[arg(long, value_enum, default_value_t = StreamArg::Combined)]
        stream: StreamArg,
        /// Print the log as JSON (the get_job_logs answer) instead of bytes.
        #[arg(long, conflicts_with = "follow", help_heading = "Output")]
        json: bool,
    },
    /// Show a finished job's result: output, exit code, artifacts.
    Result {
        /// The job id, or enough of its first characters to name one job.
        id: String,
        /// How to print.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Apply a job's patch to a local repository (3-way where the base is there).
    Apply(apply::ApplyArgs),
    /// Start a follow-up turn of a persistent job in its kept VM and
    /// workspace (a claude job resumes its session); prints the turn's id.
    Continue(turns::ContinueArgs),
    /// Destroy a persistent job's kept VM now.
    Release {
        /// The job id (or any of its turns'), or enough of its first
        /// characters to name one job.
        id: String,
        /// How to print.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Cancel a job; its VM is destroyed.
    Cancel {
        /// The job id, or enough of its first characters to name one job.
        id: String,
        /// How to print.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List jobs, newest first.
    // Hidden aliases for docker hands; `--help` shows the command once.
    #[command(alias = "ls", alias = "ps")]
    List {
        /// Only jobs in this state.
        #[arg(long, value_parser = StateParser)]
        status: Option<JobState>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = page_size)]
        limit: usize,
        /// The cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// How to print.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Print a job's egress connection log: each connection through the
    /// gateway, allowed or denied and why, with the bytes each way.
    Egress {
        /// The job id, or enough of its first characters to name one job.
        id: String,
        /// How to print.
        #[command(flatten)]
        output: JsonArg,
    },
    /// Print the effective settings (secrets masked) and where each came
    /// from: default, configuration file, variable or flag.
    Config {
        /// Print an example configuration file with every setting instead.
        #[arg(long, conflicts_with = "json")]
        example: bool,
        /// How to print.
        #[command(flatten)]
        output: JsonArg,
    },
    /// After building a template: doctor, the template's cloud-init drive,
    /// then one job on it through the Proxmox provider, timed (clone, boot,
    /// guest ready, job).
    Smoke {
        /// How to print.
        #[command(flatten)]
        output: JsonArg,
    },
    /// Check that the configured provider can run jobs here (Proxmox: API,
    /// template, storage, bridge, token privileges; local: guest binary and
    /// namespaces).
    Doctor {
        /// How to print.
        #[command(flatten)]
        output: JsonArg,
    },
    /// Print a shell completion script (e.g. `delegate-host completions
    /// bash > /etc/bash_completion.d/delegate-host`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a
    /// directory.
    Man {
        /// Write delegate-host.1 and delegate-host-COMMAND.1 here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `list --status`: a job state by the name the tools use, offered to
/// completions and `--help`, refused with the names it takes.
#[derive(Debug, Clone, Copy)]
struct StateParser;

impl clap::builder::TypedValueParser for StateParser {
    type Value = JobState;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<JobState, clap::Error> {
        let text = value.to_string_lossy();
        text.parse().map_err(|e: String| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")).with_cmd(cmd)
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            JobState::ALL
                .iter()
                .map(|s| clap::builder::PossibleValue::new(s.as_str())),
        ))
    }
}

/// A page size within the one limit the tools and the command line share.
fn page_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!("a page holds 1 to {MAX_LIST_LIMIT} jobs")),
    }
}

/// A log stream on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StreamArg {
    /// Both streams in arrival order.
    Combined,
    /// Standard output only.
    Stdout,
    /// Standard error only.
    Stderr,
}

impl Command {
    /// The log level when RUST_LOG says nothing: a server logs its work,
    /// a command for a person keeps stderr for its progress display.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Serve { .. } => "info",
            _ => "warn",
        }
    }
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    // These need no settings: they describe the command line itself.
    match &cli.command {
        Command::Completions { shell } => return help::completions(*shell),
        Command::Man { dir } => return help::man(dir.as_deref()),
        Command::Config { example: true, .. } => return config::print_example(),
        _ => {}
    }
    // The command line again, now with the configuration file under the
    // variables (the first parse, by `help::parse`, knew no file).
    let layered = crate::config::layer(
        help::command(),
        std::env::args_os(),
        &ProcessMachine,
        cli.config_file.as_deref(),
    )?;
    let provenance = layered.provenance.clone();
    let settings = Settings::resolve(layered.raw()?).map_err(|e| provenance.annotate(e))?;
    let client = |settings| jobs::connect(Arc::new(settings));
    match cli.command {
        Command::Serve { http } => serve::run(settings, http).await,
        Command::Config { output, .. } => config::run(&settings, &provenance, output.json),
        Command::Doctor { output } => doctor::run(&settings, output.json).await,
        Command::Smoke { output } => smoke::run(settings, output.json).await,
        Command::Submit {
            manifest,
            wait,
            output,
        } => jobs::submit(settings, &manifest, wait, output).await,
        Command::Wait { id, output } => jobs::wait(&client(settings)?, &id, output).await,
        Command::Status { id, output } => jobs::status(&client(settings)?, &id, output),
        Command::Result { id, output } => jobs::result(&client(settings)?, &id, output),
        Command::Logs {
            id,
            follow,
            stream,
            json,
        } => jobs::logs(&client(settings)?, &id, follow, stream, json).await,
        Command::Cancel { id, output } => jobs::cancel(&client(settings)?, &id, output).await,
        Command::Apply(args) => apply::run(&client(settings)?, &args),
        Command::Continue(args) => turns::continue_job(settings, args).await,
        Command::Release { id, output } => turns::release(&client(settings)?, &id, output).await,
        Command::List {
            status,
            limit,
            cursor,
            output,
        } => jobs::list(&client(settings)?, status, limit, cursor.as_deref(), output),
        Command::Egress { id, output } => egress::run(&client(settings)?, &id, output.json),
        Command::Completions { .. } | Command::Man { .. } => Ok(exit::OK),
    }
}
