//! `delegate-guest`: parse the command line, set up logging on stderr, run,
//! exit with the documented status (see [`delegate_guest::app`]).

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    if delegate_guest::init::is_vm_init() {
        // The kernel's /init in a micro VM: no arguments, powers off at the end.
        delegate_guest::init::main();
    }
    // Diagnostics go to stderr; stdout carries only JSON lines.
    let filter =
        EnvFilter::try_from_env("DELEGATE_GUEST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        // On a failed write the subscriber would report it with
        // `eprintln!`, which panics when stderr is a full disk (the local
        // sandbox's guest.log in a full data directory: exit 101, found by
        // the fault suite). A diagnostic that cannot be written is lost.
        .log_internal_errors(false)
        .init();
    // clap exits with status 2 on usage errors, as documented.
    let cli = delegate_guest::cli::Cli::parse();
    ExitCode::from(delegate_guest::app::main(cli))
}
