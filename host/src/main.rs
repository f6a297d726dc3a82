//! `delegate-host`: parse the command line, send logs to stderr (stdout is
//! MCP's, or the command's output), run the command, map errors to the exit
//! codes documented in `cli::exit`.

use std::process::ExitCode;

use clap::Parser;
use delegate_host::cli::{self, Cli};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.command.default_log_level()));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(false)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("delegate-host: cannot start the async runtime: {e}");
            return ExitCode::from(cli::exit::FAILURE);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("delegate-host: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
