//! The subcommands: read what they need, run the job, map the outcome to
//! the documented exit status (0 success, 1 failed, 124 timeout,
//! 130 cancelled, 2 invalid manifest or usage).

use std::path::Path;

use delegate_proto::outcome::{ErrorKind, ResultLine};
use delegate_proto::{JobManifest, JobResult, Lifecycle, ManifestError, ResultStatus};

use crate::callback::{CallbackClient, CallbackError, CallbackOptions, find_bootstrap, pool_port};
use crate::caller::{CallerEnv, lent_note};
use crate::cli::{BootArgs, Cli, Command, RunArgs};
use crate::run::run_job;

/// Exit status for an invalid manifest or bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Where the workspace is inside a VM.
pub const VM_WORKSPACE: &str = "/workspace";

/// Runs the parsed command line; returns the process exit status.
pub fn main(cli: Cli) -> u8 {
    match cli.command {
        Command::Run(args) => block_on(run(args)),
        Command::Boot(args) => block_on(boot(args)),
        // Plain threads: no runtime for a byte pump.
        Command::Relay { target } => crate::relay::main(&target),
    }
}

/// Runs `job` on a small multi-threaded runtime.
fn block_on(job: impl std::future::Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(job),
        Err(e) => {
            crate::say!("delegate-guest: cannot start the runtime: {e}");
            1
        }
    }
}

fn exit_status(result: &JobResult) -> u8 {
    result.status.exit_code() as u8
}

async fn run(args: RunArgs) -> u8 {
    let bytes = match std::fs::read(&args.manifest) {
        Ok(b) => b,
        Err(e) => {
            crate::say!(
                "delegate-guest: cannot read manifest {}: {e}",
                args.manifest.display()
            );
            return EXIT_USAGE;
        }
    };
    let mut manifest = match JobManifest::from_json(&bytes) {
        Ok(m) => m,
        Err(e) => return refuse_manifest(&e),
    };
    let host = match &args.callback {
        None => None,
        Some(url) => match connect(url, args.job_id.as_deref(), args.token_file.as_deref()) {
            Ok(client) => Some(client),
            Err(e) => {
                crate::say!("delegate-guest: {e}");
                return EXIT_USAGE;
            }
        },
    };
    let timeout = manifest.timeout.unwrap_or(args.timeout_seconds);
    let mut opts = args.knobs.options(timeout, args.artifacts_out.clone());
    if host.is_none() {
        // Standalone: a debugging run on the caller's machine (see `caller`).
        let caller = CallerEnv::current();
        let lent = caller.lend_claude_credentials(&mut manifest);
        opts.notes.extend(lent_note(&lent));
        opts.caller_path = caller.path;
    }
    exit_status(&run_job(manifest, opts, host).await)
}

/// Builds the client for `run --callback`.
fn connect(
    url: &str,
    job_id: Option<&str>,
    token_file: Option<&Path>,
) -> Result<CallbackClient, String> {
    let job_id = job_id.ok_or("--callback needs --job-id")?;
    if !delegate_proto::api::is_valid_job_id(job_id) {
        return Err(format!(
            "--job-id {job_id:?} is not a job id (letters, digits and '-', at most 64)"
        ));
    }
    let token_file = token_file.ok_or("--callback needs --token-file")?;
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("cannot read --token-file {}: {e}", token_file.display()))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(format!("--token-file {} is empty", token_file.display()));
    }
    CallbackClient::new(url, job_id, token, CallbackOptions::default())
        .map_err(|e| format!("--callback {url}: {e}"))
}

async fn boot(args: BootArgs) -> u8 {
    let found = match find_bootstrap(args.bootstrap.as_deref()) {
        // A pooled VM has no bootstrap until a job claims it: wait on its port.
        Err(CallbackError::NoBootstrap { tried }) if args.bootstrap.is_none() => {
            match pool_port::find() {
                Some(port) => pool_port::wait(port).await,
                None => Err(CallbackError::NoBootstrap { tried }),
            }
        }
        other => other,
    };
    let (bootstrap, source) = match found {
        Ok(found) => found,
        Err(e) => {
            crate::say!("delegate-guest: no bootstrap: {e}");
            return EXIT_USAGE;
        }
    };
    crate::say!(
        "{}{} from {source:?}",
        delegate_proto::microvm::BOOT_MARKER,
        bootstrap.job_id
    );
    let client = match CallbackClient::new(
        &bootstrap.callback_url,
        &bootstrap.job_id,
        bootstrap.token.clone(),
        CallbackOptions::default(),
    ) {
        Ok(c) => c,
        Err(e) => {
            crate::say!(
                "delegate-guest: bootstrap callback_url {}: {e}",
                bootstrap.callback_url
            );
            return EXIT_USAGE;
        }
    };
    let spec = match client.fetch_spec().await {
        Ok(s) => s,
        Err(e) => {
            crate::say!("delegate-guest: cannot fetch the job from the host: {e}");
            return 1;
        }
    };
    if let Err(e) = spec.manifest.validate() {
        let status = refuse_manifest(&e);
        if let Err(post) = client.post_result(&invalid_manifest_result(&e)).await {
            crate::say!("delegate-guest: could not send the result to the host: {post}");
        }
        return status;
    }
    let mut knobs = args.knobs;
    if knobs.workspace.is_none() {
        knobs.workspace = Some(VM_WORKSPACE.into());
    }
    let opts = knobs.options_for_spec(&spec);
    let persistent = spec.manifest.lifecycle() == Lifecycle::Persistent;
    let route = crate::egress::route(bootstrap.egress_url.as_deref(), spec.egress.as_ref()).await;
    let manifest = crate::egress::apply(
        spec.manifest,
        spec.egress.as_ref(),
        route.gateway.as_deref(),
        route.trust.as_ref(),
        &bootstrap.job_id,
        &bootstrap.token,
    );
    let first = crate::run::run(manifest, opts, Some(client.clone())).await;
    let status = exit_status(&first.result);
    if persistent {
        // The VM is kept: wait in it for follow-up turns until the host
        // releases it (see `turns`).
        crate::turns::serve(&client, &bootstrap, &knobs, &route, first).await;
    }
    status
}

/// Says why the manifest was refused, on stderr and as the result line.
fn refuse_manifest(e: &ManifestError) -> u8 {
    crate::say!("delegate-guest: {e}");
    let result = invalid_manifest_result(e);
    if let Ok(line) = serde_json::to_string(&ResultLine::new(&result)) {
        crate::say::stdout_line(format_args!("{line}"));
    }
    EXIT_USAGE
}

fn invalid_manifest_result(e: &ManifestError) -> JobResult {
    JobResult {
        status: ResultStatus::Failed,
        exit_code: None,
        signal: None,
        duration_ms: 0,
        output: Default::default(),
        artifacts: Vec::new(),
        error: Some(e.to_string()),
        error_kind: Some(ErrorKind::InvalidManifest),
        agent_result: None,
        patch: None,
        turn_patch: None,
    }
}
