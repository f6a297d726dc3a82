//! The local provider: no VM. Each job's `delegate-guest boot` runs on this
//! machine in fresh user, mount, pid, ipc and uts namespaces (util-linux
//! `unshare`), with a private workspace, home and temp directory under
//! `<data dir>/sandboxes/<name>/`. It reports over the callback API like a
//! VM would. Its isolation is a process sandbox, not a VM, and it says so.
//!
//! Why `unshare` rather than `clone(2)` from here: a new pid namespace only
//! applies to the children of the process that creates it, so the guest
//! must be forked once more after the unshare; util-linux does exactly that
//! (plus the uid map and a private /proc) and is on every Linux machine,
//! while doing it in this multi-threaded process would mean forking after
//! `pre_exec`, which is not safe. The guest becomes pid 1 of its namespace:
//! when it dies the kernel kills everything else in it, so destroying a
//! sandbox is one SIGKILL to its process group.
//!
//! Where user namespaces are not allowed, the provider refuses to start
//! unless `DELEGATE_LOCAL_UNSANDBOXED=1`; then the guest runs as a plain
//! process in its own process group and every status says "NONE".

mod argv;
pub(crate) mod process;
mod settings;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::provider::{Isolation, OwnedVm, Provider, ProviderError, ProvisionRequest, VmRef};

pub use argv::{SandboxPaths, UNSHARE_FLAGS, is_sandbox_name};
use process::Recorded;
pub use settings::{GUEST_BIN_NAME, LocalArgs, LocalSettings};

/// The provider's name in statuses.
pub const NAME: &str = "local";
/// How long `destroy` waits for the killed processes to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long an unsandboxed guest gets to stop its agent after SIGTERM (its
/// own SIGTERM-to-SIGKILL grace is 10 s).
const UNSANDBOXED_STOP_WAIT: Duration = Duration::from_secs(15);

/// Runs jobs as sandboxed processes on this machine.
#[derive(Debug)]
pub struct LocalProvider {
    guest: PathBuf,
    root: PathBuf,
    /// `Some(unshare)` when sandboxing; `None` runs unsandboxed.
    unshare: Option<PathBuf>,
    /// The guests' `PATH`.
    guest_path: std::ffi::OsString,
}

fn other(context: impl Into<String>, e: std::io::Error) -> ProviderError {
    ProviderError::Other {
        context: context.into(),
        source: Box::new(e),
    }
}

/// Checks that this process may create the namespaces, by doing it once.
fn probe(unshare: &Path) -> Result<(), String> {
    let out = std::process::Command::new(unshare)
        .args(UNSHARE_FLAGS)
        .arg("--")
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", unshare.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl LocalProvider {
    /// Builds the provider from its settings, probing for namespaces: a
    /// machine where they are not allowed is refused unless the settings
    /// allow running unsandboxed.
    pub fn new(settings: LocalSettings) -> Result<Self, ProviderError> {
        let LocalSettings {
            guest_bin: guest,
            sandbox_root,
            unshare,
            allow_unsandboxed,
            guest_path,
        } = settings;
        let root = sandbox_root.as_path();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| other(format!("creating {}", root.display()), e))?;
        let refusal = match unshare {
            None => "util-linux `unshare` was not found on PATH".to_string(),
            Some(unshare) => match probe(&unshare) {
                Ok(()) => {
                    return Ok(LocalProvider {
                        guest,
                        root: root.to_path_buf(),
                        unshare: Some(unshare),
                        guest_path,
                    });
                }
                Err(why) => format!("user namespaces are not allowed here ({why})"),
            },
        };
        if allow_unsandboxed {
            tracing::warn!(
                reason = %refusal,
                "DELEGATE_LOCAL_UNSANDBOXED=1: jobs run as plain processes WITHOUT a sandbox"
            );
            return Ok(LocalProvider {
                guest,
                root: root.to_path_buf(),
                unshare: None,
                guest_path,
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

    /// Creates the sandbox's directories and private files.
    fn prepare(&self, paths: &SandboxPaths, req: &ProvisionRequest) -> Result<(), ProviderError> {
        let mk = |dir: &Path| {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| other(format!("creating {}", dir.display()), e))
        };
        mk(&paths.dir)?;
        for dir in [&paths.workspace, &paths.logs, &paths.home, &paths.tmp] {
            mk(dir)?;
        }
        write_private(&paths.job_file, req.job_id.as_bytes())?;
        let bootstrap = serde_json::to_vec(&req.bootstrap).map_err(|e| ProviderError::Other {
            context: "encoding the bootstrap".into(),
            source: Box::new(e),
        })?;
        write_private(&paths.bootstrap, &bootstrap)
    }

    fn spawn(&self, paths: &SandboxPaths) -> Result<tokio::process::Child, ProviderError> {
        let inner = argv::guest_argv(&self.guest, paths);
        let argv = match &self.unshare {
            Some(unshare) => argv::sandboxed(unshare, inner),
            None => inner,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&paths.guest_log)
            .map_err(|e| other(format!("opening {}", paths.guest_log.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| other("duplicating the guest log", e))?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", &self.guest_path)
            .env("HOME", &paths.home)
            .env("TMPDIR", &paths.tmp)
            .env("LANG", "C.UTF-8")
            .current_dir(&paths.workspace)
            .stdin(Stdio::null())
            // Never the host's stdout: that is the MCP channel.
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            // The sandbox outlives this handle: a restarted host finds it
            // through its pid file.
            .kill_on_drop(false);
        cmd.spawn()
            .map_err(|e| other(format!("starting {}", argv[0].to_string_lossy()), e))
    }

    /// Kills the sandbox's processes and waits until they are gone.
    ///
    /// Sandboxed, one SIGKILL to the process group ends the guest, pid 1 of
    /// its namespace, and with it everything in the namespace. Unsandboxed,
    /// the agent may have left the guest's process group, so the guest gets
    /// SIGTERM first and ends its agent's tree itself (as on a cancel).
    async fn kill(&self, paths: &SandboxPaths) {
        let Some(rec) = Recorded::read(&paths.pid_file) else {
            return;
        };
        if self.unshare.is_none() {
            rec.terminate();
            wait_gone(&rec, UNSANDBOXED_STOP_WAIT).await;
        }
        rec.kill_group();
        wait_gone(&rec, KILL_WAIT).await;
    }
}

async fn wait_gone(rec: &Recorded, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while rec.alive() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| other(format!("creating {}", path.display()), e))?;
    f.write_all(bytes)
        .map_err(|e| other(format!("writing {}", path.display()), e))
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
        if self.unshare.is_some() {
            Isolation::ProcessSandbox
        } else {
            Isolation::None
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
        let mut child = self.spawn(&paths)?;
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
