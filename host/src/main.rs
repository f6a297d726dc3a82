//! `delegate-host`: parse the command line, send logs to stderr (stdout is
//! MCP's, or the command's output), run the command, map errors to the exit
//! codes documented in `cli::exit`.

use std::process::ExitCode;

use delegate_host::cli;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::help::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.command.default_log_level()));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(false)
        // On a failed write the subscriber would report it with
        // `eprintln!`, which panics when stderr is a file on a full disk:
        // the server exited 101. A log line that cannot be written is lost.
        .log_internal_errors(false)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::out::note(&format!(
                "delegate-host: cannot start the async runtime: {e}"
            ));
            return ExitCode::from(cli::exit::FAILURE);
        }
    };
    let outcome = runtime.block_on(cli::run(cli));
    match outcome {
        Ok(code) => ExitCode::from(code),
        // The reader of stdout has gone (`| head`): it has what it wanted.
        Err(e) if e.is_closed_output() => ExitCode::from(e.exit_code()),
        Err(e) => {
            cli::out::note(&format!("delegate-host: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
