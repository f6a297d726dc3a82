//! The command line: `serve` for MCP clients, and the same job operations
//! as the MCP tools for a person at a terminal.
//!
//! Read-only commands read the store directly (SQLite in WAL mode lets them
//! while a server runs). `submit` and `cancel` go through the store too; a
//! running engine picks them up. When no engine owns the data directory,
//! `submit --wait` runs one in this process for the job.

pub mod doctor;
pub mod exit;
pub mod jobs;
pub mod render;
pub mod serve;
pub mod smoke;
pub mod wait;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{RawSettings, Settings};

pub use exit::CliError;

/// delegate-host: run jobs in throwaway VMs, for MCP clients and people.
#[derive(Debug, Parser)]
#[command(name = "delegate-host", version, about, long_about = None)]
pub struct Cli {
    /// Settings (each also read from its environment variable).
    #[command(flatten)]
    pub settings: RawSettings,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
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
    /// Submit a job from a manifest file (`-` reads stdin).
    Submit {
        /// The manifest (JSON).
        manifest: PathBuf,
        /// Wait for the job to finish, showing progress, then print its
        /// result; runs the engine here when no server is running.
        #[arg(long)]
        wait: bool,
        /// Print JSON (the MCP tools' answers) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a job's status.
    Status {
        /// The job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's output log.
    Logs {
        /// The job id.
        id: String,
        /// Keep printing as the job writes, until it ends.
        #[arg(long, short)]
        follow: bool,
        /// Which stream.
        #[arg(long, value_enum, default_value_t = StreamArg::Combined)]
        stream: StreamArg,
    },
    /// Show a finished job's result: output, exit code, artifacts.
    Result {
        /// The job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job; its VM is destroyed.
    Cancel {
        /// The job id.
        id: String,
    },
    /// List jobs, newest first.
    List {
        /// Only jobs in this state.
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective settings (secrets masked).
    Config,
    /// Check that the configured provider can run jobs here (Proxmox: API,
    /// template, storage, bridge, token privileges; local: guest binary and
    /// namespaces).
    Doctor,
    /// After building a template: doctor, the template's cloud-init drive,
    /// then one job on it through the Proxmox provider, timed (clone, boot,
    /// guest ready, job).
    Smoke,
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
    let settings = Settings::resolve(cli.settings)?;
    let client = |settings| jobs::connect(Arc::new(settings));
    match cli.command {
        Command::Serve { http } => serve::run(settings, http).await,
        Command::Config => {
            render::settings(&settings.describe());
            Ok(exit::OK)
        }
        Command::Doctor => doctor::run(&settings).await,
        Command::Smoke => smoke::run(settings).await,
        Command::Submit {
            manifest,
            wait,
            json,
        } => jobs::submit(settings, &manifest, wait, json).await,
        Command::Status { id, json } => jobs::status(&client(settings)?, &id, json),
        Command::Result { id, json } => jobs::result(&client(settings)?, &id, json),
        Command::Logs { id, follow, stream } => {
            jobs::logs(&client(settings)?, &id, follow, stream).await
        }
        Command::Cancel { id } => jobs::cancel(&client(settings)?, &id).await,
        Command::List {
            status,
            limit,
            cursor,
            json,
        } => jobs::list(
            &client(settings)?,
            status.as_deref(),
            limit,
            cursor.as_deref(),
            json,
        ),
    }
}
