//! The command line (raw layer): what the user typed, parsed by clap. The
//! resolved settings a job runs with are [`crate::run::JobOptions`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::run::JobOptions;
use crate::supervise::UserPolicy;

/// `delegate-guest`: runs one delegated job under supervision.
#[derive(Debug, Parser)]
#[command(name = "delegate-guest", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job from a manifest file: standalone (events as JSON lines on
    /// stdout, the result last), or reporting to a host with --callback.
    Run(RunArgs),
    /// Inside a VM: find the bootstrap, fetch the job from the host, run it
    /// and report there.
    Boot(BootArgs),
    /// Host side of the qemu provider's callback forward: joins stdin and
    /// stdout to a TCP connection to HOST:PORT (see `relay`).
    #[command(hide = true)]
    Relay {
        /// Where to connect, e.g. 127.0.0.1:8765.
        target: String,
    },
}

/// `delegate-guest run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest (JSON).
    pub manifest: PathBuf,
    /// Write the collected artifacts (tar.gz) here.
    #[arg(long, value_name = "FILE.tar.gz")]
    pub artifacts_out: Option<PathBuf>,
    /// Report to the host's callback API at this base URL.
    #[arg(long, value_name = "URL", requires_all = ["job_id", "token_file"])]
    pub callback: Option<String>,
    /// The job id (callback mode).
    #[arg(long, value_name = "ID", requires = "callback")]
    pub job_id: Option<String>,
    /// File holding the job's token (callback mode).
    #[arg(long, value_name = "FILE", requires = "callback")]
    pub token_file: Option<PathBuf>,
    /// Timeout when the manifest has none, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub timeout_seconds: u64,
    /// Settings shared with `boot`.
    #[command(flatten)]
    pub knobs: Knobs,
}

/// `delegate-guest boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// The bootstrap file; without it the usual places are searched
    /// (/run/delegate/bootstrap.json, QEMU fw_cfg, SMBIOS).
    #[arg(long, value_name = "FILE")]
    pub bootstrap: Option<PathBuf>,
    /// Settings shared with `run`.
    #[command(flatten)]
    pub knobs: Knobs,
}

/// Settings of both subcommands.
#[derive(Debug, Args)]
pub struct Knobs {
    /// The workspace. `run` defaults to a fresh directory under $TMPDIR
    /// (kept afterwards; its path is printed on stderr); `boot` to /workspace.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Where the full stdout/stderr logs go [default: beside the
    /// workspace, `<workspace>-logs`].
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL when stopping the agent.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub grace_seconds: u64,
    /// Seconds between heartbeats (the host's value wins in `boot`).
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_seconds: u64,
    /// Bytes of stdout and of stderr kept in the result.
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    pub tail_bytes: usize,
    /// Cap on the artifacts' total size, e.g. 512M (the host's value wins
    /// in `boot`).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub max_artifact_bytes: u64,
    /// Run the agent as this user when the runner is root [default:
    /// `delegate`, else `nobody`].
    #[arg(long, value_name = "USER", conflicts_with = "no_drop_privileges")]
    pub run_as: Option<String>,
    /// Run the agent as the runner's own user even when that is root.
    #[arg(long)]
    pub no_drop_privileges: bool,
    /// Do not use a cgroup even where one works (tests the subreaper path).
    #[arg(long, hide = true, env = "DELEGATE_GUEST_NO_CGROUP", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_cgroup: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    delegate_proto::size::parse_size(s).map_err(|e| e.to_string())
}

impl Knobs {
    /// The resolved options, with the timeout the job gets.
    pub fn options(&self, timeout_seconds: u64, artifacts_out: Option<PathBuf>) -> JobOptions {
        JobOptions {
            workspace: self.workspace.clone(),
            log_dir: self.log_dir.clone(),
            artifacts_out,
            timeout: Duration::from_secs(timeout_seconds),
            grace: Duration::from_secs(self.grace_seconds),
            heartbeat: Duration::from_secs(self.heartbeat_seconds),
            tail_bytes: self.tail_bytes,
            max_artifact_bytes: self.max_artifact_bytes,
            user: if self.no_drop_privileges {
                UserPolicy::Keep
            } else {
                UserPolicy::Drop(self.run_as.clone())
            },
            use_cgroup: !self.no_cgroup,
            caller_path: None,
            notes: Vec::new(),
            turn: None,
        }
    }

    /// The options of a job the host sent: its remaining timeout, heartbeat
    /// and artifact cap win over the knobs.
    pub fn options_for_spec(&self, spec: &delegate_proto::api::JobSpec) -> JobOptions {
        let mut opts = self.options(spec.timeout_seconds.max(1), None);
        opts.heartbeat = Duration::from_secs(spec.heartbeat_interval_seconds.max(1));
        opts.max_artifact_bytes = spec.max_artifact_bytes;
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_run_with_knobs() {
        let cli = Cli::try_parse_from([
            "delegate-guest",
            "run",
            "m.json",
            "--workspace",
            "/w",
            "--grace-seconds",
            "2",
            "--max-artifact-bytes",
            "2M",
            "--run-as",
            "nobody",
            "--artifacts-out",
            "a.tgz",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        let o = r.knobs.options(r.timeout_seconds, r.artifacts_out.clone());
        assert_eq!(o.grace, Duration::from_secs(2));
        assert_eq!(o.max_artifact_bytes, 2 << 20);
        assert_eq!(o.user, UserPolicy::Drop(Some("nobody".into())));
        assert_eq!(o.timeout, Duration::from_secs(3600));
        assert!(o.use_cgroup);
    }

    #[test]
    fn callback_needs_its_companions_and_flags_conflict() {
        assert!(
            Cli::try_parse_from(["delegate-guest", "run", "m.json", "--callback", "http://x"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["delegate-guest", "run", "m.json", "--job-id", "j"]).is_err());
        assert!(
            Cli::try_parse_from([
                "delegate-guest",
                "run",
                "m",
                "--run-as",
                "x",
                "--no-drop-privileges"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from(["delegate-guest", "run", "m", "--heartbeat-seconds", "0"])
                .is_err()
        );
        let ok = Cli::try_parse_from([
            "delegate-guest",
            "run",
            "m",
            "--callback",
            "http://127.0.0.1:1",
            "--job-id",
            "j",
            "--token-file",
            "t",
        ]);
        assert!(ok.is_ok());
        assert!(Cli::try_parse_from(["delegate-guest", "boot", "--bootstrap", "b.json"]).is_ok());
        let Command::Run(r) = Cli::try_parse_from(["delegate-guest", "run", "m", "--no-cgroup"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert!(r.knobs.no_cgroup);
    }
}
