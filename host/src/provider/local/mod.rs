//! The local provider: no VM. Each job's `delegate-guest boot` runs on this
//! machine in a bubblewrap sandbox: fresh user, mount, pid, ipc, uts,
//! cgroup and network namespaces, as an unprivileged user with no
//! capabilities and `no_new_privs`, seeing read-only system directories, a
//! minimal `/etc`, and only its own workspace, home, `/tmp` and logs from
//! `<data dir>/sandboxes/<name>/root/`. Its only ways out are the host's
//! callback and egress gateway sockets, bound read-only at
//! `/run/delegate/host/` (the guest relays a loopback port to the
//! gateway's for the job's `HTTP_PROXY`). It reports
//! like a VM would. Its isolation is a process sandbox, not a VM, and it
//! says so.
//!
//! Why bubblewrap rather than our own `clone(2)` set-up: it is small,
//! packaged everywhere, maintained as the base of Flatpak, and gets the
//! subtle parts right (the fork after `CLONE_NEWPID`, uid maps, mount
//! propagation, pivoting to a fresh root, dropping capabilities), which
//! this multi-threaded process could not do safely between fork and exec.
//! `bwrap`'s own pid 1 holds the pid namespace: killing the process group
//! (bwrap and that init) ends everything in the sandbox, so destroying a
//! sandbox is one SIGKILL.
//!
//! When the host is root, `bwrap` runs as the configured job uid (65534 by
//! default), so that the job's processes are unprivileged on the host too
//! (`launch` says how it still reaches its sources).
//!
//! Where user namespaces are not allowed, the provider refuses to start
//! unless `DELEGATE_LOCAL_UNSANDBOXED=1`; then the guest runs as a plain
//! process in its own session and every status says "NONE".

mod argv;
mod cgroup;
mod launch;
pub(crate) mod process;
mod settings;

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::provider::{Isolation, OwnedVm, Provider, ProviderError, ProvisionRequest, VmRef};

pub use argv::{SandboxPaths, inside, is_sandbox_name};
pub use launch::JobIdentity;
use launch::{Launch, open_data, system_entries};
use process::{Recorded, wait_gone, write_private};
pub use settings::{DEFAULT_JOB_ID, GUEST_BIN_NAME, LocalArgs, LocalSettings};

/// The provider's name in statuses.
pub const NAME: &str = "local";
/// How long `destroy` waits for the killed processes to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long an unsandboxed guest gets to stop its agent after SIGTERM (its
/// own SIGTERM-to-SIGKILL grace is 10 s).
const UNSANDBOXED_STOP_WAIT: Duration = Duration::from_secs(15);
/// The directory (beside the sandboxes root, in the data directory)
/// holding the callback socket.
const CALLBACK_DIR: &str = "callback";
/// The callback socket's name in that directory.
const SOCKET_NAME: &str = "callback.sock";
/// The egress gateway's socket's name there. One socket for the host, not
/// one per job: the gateway knows the job by the token every request
/// carries, and the directory is already bound into every sandbox, so
/// there is nothing to create, bind or remove per job.
const EGRESS_SOCKET_NAME: &str = "egress.sock";

/// How jobs are run.
#[derive(Debug, Clone)]
enum Mode {
    /// In a bubblewrap sandbox.
    Sandboxed {
        bwrap: PathBuf,
        identity: JobIdentity,
        system: Vec<argv::SystemEntry>,
        /// Where sandbox cgroups go, when the host may make them.
        cgroups: Option<PathBuf>,
    },
    /// As plain processes (the explicit opt-in).
    Unsandboxed,
}

/// Runs jobs as sandboxed processes on this machine.
#[derive(Debug)]
pub struct LocalProvider {
    guest: PathBuf,
    root: PathBuf,
    /// The `PATH` of `bwrap` and of unsandboxed guests.
    guest_path: OsString,
    mode: Mode,
}

fn other(context: impl Into<String>, e: std::io::Error) -> ProviderError {
    ProviderError::Other {
        context: context.into(),
        source: Box::new(e),
    }
}

/// Checks that the job user may build a sandbox here, by building one that
/// runs `true`. (Not the guest: a wrapper standing in for it may take its
/// time, and its staging is checked by every spawn.)
fn probe(
    bwrap: &Path,
    identity: JobIdentity,
    system: &[argv::SystemEntry],
    env: Vec<(OsString, OsString)>,
) -> Result<(), String> {
    let mut argv = vec![bwrap.as_os_str().to_owned()];
    argv.extend(argv::isolation_flags("probe"));
    argv.extend(argv::system_view(system));
    // The extra directories too: one the job user cannot read fails here.
    argv.extend(argv::extra_view(system));
    argv.extend(["--", "true"].map(std::ffi::OsString::from));
    let staged = Vec::new();
    let launch = Launch {
        argv,
        keep: Vec::new(),
        identity,
        staged,
        env,
        cwd: "/".into(),
        cgroup_procs: None,
    };
    let (mut cmd, _keep) = launch.std_command().map_err(|e| e.to_string())?;
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The environment of `bwrap` itself (the sandbox's is set by flags).
fn base_env(path: &OsString) -> Vec<(OsString, OsString)> {
    vec![("PATH".into(), path.clone())]
}

impl LocalProvider {
    /// Builds the provider from its settings: sandboxed where `bwrap`
    /// works (a probe sandbox runs `true`), else refused, or unsandboxed
    /// when the settings allow it.
    pub fn new(opts: LocalSettings) -> Result<Self, ProviderError> {
        let root = opts.sandbox_root.as_path();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| other(format!("creating {}", root.display()), e))?;
        let identity =
            JobIdentity::for_host(nix::unistd::geteuid().as_raw(), opts.job_uid, opts.job_gid)
                .map_err(ProviderError::Unavailable)?;
        let mut system = system_entries();
        system.extend(
            opts.readonly_dirs
                .iter()
                .map(|dir| argv::SystemEntry::Extra(dir.clone())),
        );
        let refusal = match &opts.bwrap {
            None => "bubblewrap (`bwrap`) was not found on PATH; install it (Debian: \
                     apt-get install bubblewrap)"
                .to_string(),
            Some(bwrap) => match probe(bwrap, identity, &system, base_env(&opts.guest_path)) {
                Ok(()) => {
                    let provider = LocalProvider {
                        guest: opts.guest_bin.clone(),
                        root: root.to_path_buf(),
                        guest_path: opts.guest_path.clone(),
                        mode: Mode::Sandboxed {
                            bwrap: bwrap.clone(),
                            identity,
                            system,
                            cgroups: cgroup::parent(),
                        },
                    };
                    provider.make_callback_dir()?;
                    return Ok(provider);
                }
                Err(why) => format!("user namespaces are not allowed here ({why})"),
            },
        };
        if opts.allow_unsandboxed {
            tracing::warn!(
                reason = %refusal,
                "DELEGATE_LOCAL_UNSANDBOXED=1: jobs run as plain processes WITHOUT a sandbox"
            );
            return Ok(LocalProvider {
                guest: opts.guest_bin,
                root: root.to_path_buf(),
                guest_path: opts.guest_path,
                mode: Mode::Unsandboxed,
            });
        }
        Err(ProviderError::Unavailable(format!(
            "the local provider cannot sandbox jobs: {refusal}. Allow unprivileged user \
             namespaces (e.g. sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu \
             kernel.apparmor_restrict_unprivileged_userns=0), use a VM provider, or set \
             DELEGATE_LOCAL_UNSANDBOXED=1 to run jobs as plain processes on this machine"
        )))
    }

    /// Where a sandbox's files are (for diagnostics and tests).
    pub fn paths(&self, name: &str) -> SandboxPaths {
        SandboxPaths::new(&self.root, name)
    }

    /// The directory of the callback socket, bound into every sandbox.
    fn callback_dir(&self) -> PathBuf {
        self.root.parent().unwrap_or(&self.root).join(CALLBACK_DIR)
    }

    /// Creates the callback directory: 0755, so the job uid may reach the
    /// socket inside (the data directory above it stays 0700).
    fn make_callback_dir(&self) -> Result<(), ProviderError> {
        let dir = self.callback_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)))
            .map_err(|e| other(format!("creating {}", dir.display()), e))
    }

    /// Creates the sandbox's directories and private files.
    fn prepare(&self, paths: &SandboxPaths, req: &ProvisionRequest) -> Result<(), ProviderError> {
        let mk = |dir: &Path| {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| other(format!("creating {}", dir.display()), e))
        };
        mk(&paths.dir)?;
        let owner = match &self.mode {
            Mode::Sandboxed { identity, .. } => identity.owner(),
            Mode::Unsandboxed => None,
        };
        for dir in [
            &paths.job_root,
            &paths.workspace,
            &paths.logs,
            &paths.home,
            &paths.tmp,
        ] {
            mk(dir)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .map_err(|e| other(format!("giving {} to the job uid", dir.display()), e))?;
            }
        }
        write_private(&paths.job_file, req.job_id.as_bytes())?;
        let mut bootstrap = req.bootstrap.clone();
        if let Mode::Sandboxed { .. } = self.mode {
            bootstrap.callback_url =
                delegate_proto::bootstrap::unix_callback_url(Path::new(inside::SOCKET));
            // No network but loopback: the gateway is the socket beside
            // the callback's, when the host runs one.
            bootstrap.egress_url = req.egress_url.as_ref().map(|_| {
                delegate_proto::bootstrap::unix_callback_url(Path::new(inside::EGRESS_SOCKET))
            });
            write_private(&paths.passwd, argv::passwd_text().as_bytes())?;
            write_private(&paths.group, argv::group_text().as_bytes())?;
            write_private(&paths.hosts, argv::HOSTS_TEXT.as_bytes())?;
        }
        let bootstrap = serde_json::to_vec(&bootstrap).map_err(|e| ProviderError::Other {
            context: "encoding the bootstrap".into(),
            source: Box::new(e),
        })?;
        write_private(&paths.bootstrap, &bootstrap)
    }

    fn launch(
        &self,
        name: &str,
        paths: &SandboxPaths,
        cgroup: Option<&cgroup::SandboxCgroup>,
    ) -> Result<Launch, ProviderError> {
        match &self.mode {
            Mode::Sandboxed {
                bwrap,
                identity,
                system,
                ..
            } => {
                let open = |p: &Path| {
                    open_data(p).map_err(|e| other(format!("opening {}", p.display()), e))
                };
                let keep = vec![
                    open(&paths.bootstrap)?,
                    open(&paths.passwd)?,
                    open(&paths.group)?,
                    open(&paths.hosts)?,
                ];
                use std::os::fd::AsRawFd;
                let fds = argv::DataFds {
                    bootstrap: keep[0].as_raw_fd(),
                    passwd: keep[1].as_raw_fd(),
                    group: keep[2].as_raw_fd(),
                    hosts: keep[3].as_raw_fd(),
                };
                let (sources, staged) =
                    identity.sources(&paths.job_root, &self.callback_dir(), &self.guest);
                Ok(Launch {
                    argv: argv::bwrap_argv(
                        bwrap,
                        name,
                        system,
                        &sources,
                        fds,
                        cgroup.map(|c| c.dir.as_path()),
                    ),
                    keep,
                    identity: *identity,
                    staged,
                    env: base_env(&self.guest_path),
                    cwd: "/".into(),
                    cgroup_procs: cgroup.map(|c| c.procs()),
                })
            }
            Mode::Unsandboxed => {
                let mut env = base_env(&self.guest_path);
                env.extend([
                    ("HOME".into(), paths.home.clone().into()),
                    ("TMPDIR".into(), paths.tmp.clone().into()),
                    ("LANG".into(), "C.UTF-8".into()),
                ]);
                Ok(Launch {
                    argv: argv::unsandboxed_guest_argv(&self.guest, paths),
                    keep: Vec::new(),
                    identity: JobIdentity::HostUser,
                    staged: Vec::new(),
                    env,
                    cwd: paths.workspace.clone(),
                    cgroup_procs: None,
                })
            }
        }
    }

    fn spawn(
        &self,
        name: &str,
        paths: &SandboxPaths,
        cgroup: Option<&cgroup::SandboxCgroup>,
    ) -> Result<tokio::process::Child, ProviderError> {
        let launch = self.launch(name, paths, cgroup)?;
        let program = launch.argv[0].to_string_lossy().into_owned();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&paths.guest_log)
            .map_err(|e| other(format!("opening {}", paths.guest_log.display()), e))?;
        let (mut cmd, keep) = launch
            .std_command()
            .map_err(|e| other("preparing the sandbox command", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| other("duplicating the guest log", e))?;
        // Never the host's stdout: that is the MCP channel.
        cmd.stdout(log).stderr(log2);
        let mut cmd = tokio::process::Command::from(cmd);
        // The sandbox outlives this handle: a restarted host finds it
        // through its pid file.
        cmd.kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|e| other(format!("starting {program}"), e));
        // The child has its copies now.
        drop(keep);
        child
    }

    /// The sandbox's cgroup with the job's limits, where the host may make
    /// one; what holds is logged (the guest's preparing phase says it too).
    fn make_cgroup(
        &self,
        name: &str,
        paths: &SandboxPaths,
        req: &ProvisionRequest,
    ) -> Option<cgroup::SandboxCgroup> {
        let Mode::Sandboxed {
            identity,
            cgroups: Some(parent),
            ..
        } = &self.mode
        else {
            tracing::info!(job_id = %req.job_id, sandbox = name,
                "no sandbox cgroup (no writable cgroup v2 here): only the guest's rlimits hold");
            return None;
        };
        let cg = cgroup::SandboxCgroup::at(parent, name);
        // Recorded before it exists: a host killed between the two would
        // otherwise leave a cgroup that no destroy knows of (the fault
        // suite's kills found one). A record without a cgroup is harmless.
        if let Err(e) = std::fs::write(&paths.cgroup_file, cg.dir.as_os_str().as_encoded_bytes()) {
            tracing::warn!(job_id = %req.job_id, sandbox = name, error = %e,
                "cannot record the sandbox cgroup, so none is made: only the guest's rlimits hold");
            return None;
        }
        // The job's resolved size, as a VM of that size would have it.
        let limits = cgroup::Limits {
            memory: Some(req.size.memory_bytes),
            cpus: Some(req.size.cpus),
        };
        match cg.create(limits, identity.owner()) {
            Ok(applied) => {
                tracing::info!(job_id = %req.job_id, sandbox = name,
                    limits = %applied.describe(), "sandbox cgroup");
                Some(cg)
            }
            Err(e) => {
                tracing::warn!(job_id = %req.job_id, sandbox = name, error = %e,
                    "cannot make a sandbox cgroup: only the guest's rlimits hold");
                let _ = cg.remove();
                None
            }
        }
    }

    /// The cgroup recorded for a sandbox, if it is one of ours.
    fn recorded_cgroup(&self, paths: &SandboxPaths) -> Option<cgroup::SandboxCgroup> {
        let Mode::Sandboxed {
            cgroups: Some(parent),
            ..
        } = &self.mode
        else {
            return None;
        };
        let dir = PathBuf::from(std::fs::read_to_string(&paths.cgroup_file).ok()?);
        (dir.parent() == Some(parent.as_path())).then_some(cgroup::SandboxCgroup { dir })
    }

    /// Kills the sandbox's processes and waits until they are gone.
    ///
    /// Sandboxed, one SIGKILL to the process group ends `bwrap` and its
    /// init, pid 1 of the sandbox's namespace, and with it everything in the
    /// namespace. Unsandboxed, the agent may have left the guest's process
    /// group, so the guest gets SIGTERM first and ends its agent's tree
    /// itself (as on a cancel).
    async fn kill(&self, paths: &SandboxPaths) {
        let Some(rec) = Recorded::read(&paths.pid_file) else {
            return;
        };
        if let Mode::Unsandboxed = self.mode {
            rec.terminate();
            wait_gone(&rec, UNSANDBOXED_STOP_WAIT).await;
        }
        if let Some(cg) = self.recorded_cgroup(paths) {
            cg.kill();
        }
        rec.kill_group();
        wait_gone(&rec, KILL_WAIT).await;
    }
}

/// Removes a sandbox cgroup once the kernel has let its last processes go
/// (a few milliseconds after they die, longer on a loaded machine). One
/// that stays busy is an error: the sandbox's directory, which records it,
/// then stays for the next destroy or reconciliation to try again.
async fn remove_cgroup(cg: &cgroup::SandboxCgroup) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match cg.remove() {
            Ok(()) => return Ok(()),
            Err(e) if tries >= 50 => return Err(e),
            Err(_) => tries += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes a sandbox directory, also where the job left directories
/// without write permission.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(dir);
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
    }
}

fn make_writable(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

fn new_name() -> String {
    format!("sb-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn isolation(&self) -> Isolation {
        match self.mode {
            Mode::Sandboxed { .. } => Isolation::ProcessSandbox,
            Mode::Unsandboxed => Isolation::None,
        }
    }

    fn callback_socket(&self) -> Option<PathBuf> {
        match self.mode {
            Mode::Sandboxed { .. } => Some(self.callback_dir().join(SOCKET_NAME)),
            Mode::Unsandboxed => None,
        }
    }

    fn egress_socket(&self) -> Option<PathBuf> {
        match self.mode {
            Mode::Sandboxed { .. } => Some(self.callback_dir().join(EGRESS_SOCKET_NAME)),
            // A plain process reaches the gateway's TCP address.
            Mode::Unsandboxed => None,
        }
    }

    async fn provision(
        &self,
        req: ProvisionRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError> {
        let name = new_name();
        let paths = self.paths(&name);
        let vm = VmRef {
            provider: NAME.into(),
            id: name,
            node: None,
        };
        self.prepare(&paths, &req)?;
        // From here on there is something to destroy.
        on_created(vm.clone());
        let cgroup = self.make_cgroup(&vm.id, &paths, &req);
        let mut child = self.spawn(&vm.id, &paths, cgroup.as_ref())?;
        let pid = child.id().unwrap_or(0);
        match Recorded::of(pid) {
            Some(rec) => rec
                .write(&paths.pid_file)
                .map_err(|e| other("writing the sandbox pid file", e))?,
            None => {
                let status = child.try_wait().ok().flatten();
                return Err(ProviderError::Provision {
                    message: format!(
                        "the sandbox exited at once ({status:?}); see {}",
                        paths.guest_log.display()
                    ),
                    retryable: false,
                });
            }
        }
        let job_id = req.job_id.clone();
        let name = vm.id.clone();
        // Reap the sandbox when it ends (it is this process's child).
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::info!(job_id, sandbox = name, %status, "sandbox exited"),
                Err(e) => {
                    tracing::warn!(job_id, sandbox = name, error = %e, "waiting for the sandbox failed")
                }
            }
        });
        tracing::info!(job_id = %req.job_id, sandbox = %vm.id, pid, isolation = ?self.isolation(), "sandbox started");
        Ok(vm)
    }

    async fn destroy(&self, vm: &VmRef) -> Result<(), ProviderError> {
        if !is_sandbox_name(&vm.id) {
            return Err(ProviderError::Destroy {
                vm: vm.id.clone(),
                message: "not a local sandbox name".into(),
            });
        }
        let paths = self.paths(&vm.id);
        self.kill(&paths).await;
        if Recorded::read(&paths.pid_file).is_some_and(|r| r.alive()) {
            return Err(ProviderError::Destroy {
                vm: vm.id.clone(),
                message: format!("its processes survived SIGKILL for {KILL_WAIT:?}"),
            });
        }
        if let Some(cg) = self.recorded_cgroup(&paths) {
            remove_cgroup(&cg)
                .await
                .map_err(|e| ProviderError::Destroy {
                    vm: vm.id.clone(),
                    message: format!("removing its cgroup {}: {e}", cg.dir.display()),
                })?;
        }
        let dir = paths.dir.clone();
        tokio::task::spawn_blocking(move || remove_tree(&dir))
            .await
            .map_err(|e| ProviderError::Destroy {
                vm: vm.id.clone(),
                message: e.to_string(),
            })?
            .map_err(|e| ProviderError::Destroy {
                vm: vm.id.clone(),
                message: format!("removing {}: {e}", paths.dir.display()),
            })
    }

    /// The sandbox's outermost process (`bwrap`, or the unsandboxed guest)
    /// ended, or its directory was taken apart.
    async fn gone(&self, vm: &VmRef) -> Result<Option<String>, ProviderError> {
        if !is_sandbox_name(&vm.id) {
            return Ok(None);
        }
        let paths = self.paths(&vm.id);
        Ok(
            crate::provider::gone::process_ended(&paths.dir, &paths.pid_file).then(|| {
                format!(
                    "the sandbox {} exited before its guest reported a result",
                    vm.id
                )
            }),
        )
    }

    fn gone_interval(&self) -> Option<Duration> {
        Some(crate::provider::gone::PROCESS_GONE_INTERVAL)
    }

    /// Every sandbox directory under this data directory, running or not.
    async fn list_owned(&self) -> Result<Vec<OwnedVm>, ProviderError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(other(format!("listing {}", self.root.display()), e)),
        };
        let mut owned = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_sandbox_name(&name) {
                continue;
            }
            // Sandboxes that stopped are listed too: their directories are
            // reaped like running ones when no job claims them.
            let paths = self.paths(&name);
            let job_id = std::fs::read_to_string(&paths.job_file)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| delegate_proto::api::is_valid_job_id(s));
            owned.push(OwnedVm {
                vm: VmRef {
                    provider: NAME.into(),
                    id: name,
                    node: None,
                },
                job_id,
                deadline_ms: None,
            });
        }
        Ok(owned)
    }
}
