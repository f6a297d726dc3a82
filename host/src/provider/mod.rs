//! Providers: where a job's VM comes from.
//!
//! One small trait: provision a VM for a job with its bootstrap, destroy it,
//! list the VMs this host owns (for reconciliation after a restart), say
//! whether a job's VM is gone (so a lost guest is noticed at once, not when
//! its heartbeat lease runs out), and say what isolation it gives.
//! Everything else (placement, retries, clone strategy) stays inside each
//! provider. Providers that keep warm pools (Proxmox, QEMU) also prepare idle VMs,
//! deliver a bootstrap to one later, list them apart from job VMs, and say
//! which version of a template they clone; the others keep the defaults,
//! which refuse.

mod gone;
pub mod local;
pub mod proxmox;
pub mod qemu;

use std::time::Duration;

use delegate_proto::Bootstrap;
use serde::{Deserialize, Serialize};

/// A VM (or sandbox) that serves one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRef {
    /// The provider's name: `local` or `proxmox` (test doubles use their own).
    pub provider: String,
    /// The provider's id: a VMID, a pid, an instance name.
    pub id: String,
    /// The node it runs on, for clustered providers.
    pub node: Option<String>,
}

/// What kind of wall stands between a job and the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A hardware-virtualized (or emulated) VM.
    Vm,
    /// Linux namespaces around a process: not a VM.
    ProcessSandbox,
    /// No isolation at all (explicit opt-in only).
    None,
}

impl Isolation {
    /// A sentence for status output.
    pub fn describe(self) -> &'static str {
        match self {
            Isolation::Vm => "virtual machine",
            Isolation::ProcessSandbox => {
                "process sandbox (bubblewrap: an unprivileged user in its own user, mount, pid, \
                 ipc, uts, cgroup and network namespaces; no network but its callback and \
                 egress sockets), not a VM: a kernel exploit escapes it"
            }
            Isolation::None => {
                "NONE: the job runs as a plain process on the host (unsandboxed opt-in)"
            }
        }
    }
}

/// How big a job's VM is: the manifest's `resources` with the host's
/// defaults filled in, resolved once by the jobs layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Disk in bytes.
    pub disk_bytes: u64,
}

/// What the provider needs to start a job's VM, resolved: no manifest (and
/// so none of its secrets) reaches a provider.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// The job id.
    pub job_id: String,
    /// The template to clone (the manifest's `vmTemplate`, else
    /// `DEFAULT_VM_TEMPLATE`); `None` when neither names one. Providers
    /// without templates ignore it.
    pub template: Option<String>,
    /// The VM's size.
    pub size: VmSize,
    /// What the guest needs to find its job.
    pub bootstrap: Bootstrap,
    /// The host's egress gateway as guests on a network reach it
    /// (`http://host:port`); `None` when the host runs none. A provider
    /// that confines the guest's network points the bootstrap's
    /// `egress_url` at its own way through to it.
    pub egress_url: Option<String>,
    /// Unix milliseconds after which the job is over, for VM metadata.
    pub deadline_ms: i64,
}

/// A VM the provider found that carries this host's marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedVm {
    /// The VM.
    pub vm: VmRef,
    /// The job it says it serves, if its metadata could be read.
    pub job_id: Option<String>,
    /// Its deadline from metadata, unix ms.
    pub deadline_ms: Option<i64>,
}

/// What a provider needs to prepare an idle VM for a warm pool: like a
/// [`ProvisionRequest`] without a job, so without a bootstrap.
#[derive(Debug, Clone)]
pub struct IdleRequest {
    /// The VM's own name among pool VMs, `pool-<random>` (job ids are
    /// UUIDs, so the prefix tells the two apart), used where a job VM
    /// carries its job id.
    pub pool_id: String,
    /// Its class (`TEMPLATE:SIZE`), kept in the VM's metadata.
    pub class: String,
    /// The template to clone.
    pub template: String,
    /// The VM's size.
    pub size: VmSize,
    /// The host's callback API as every job's bootstrap names it
    /// (`CALLBACK_URL`): a provider that fixes the VM's way out when it
    /// starts (qemu's forwards) sets it up for this address.
    pub callback_url: String,
    /// The host's egress gateway, as in [`ProvisionRequest::egress_url`].
    pub egress_url: Option<String>,
}

/// An idle pool VM the provider found that carries this host's marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleVm {
    /// The VM.
    pub vm: VmRef,
    /// The class its metadata names, if it could be read.
    pub class: Option<String>,
    /// When it was created (unix ms), if known.
    pub created_ms: Option<i64>,
}

/// Why a provider operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider cannot work in this environment (e.g. no namespaces).
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// Provisioning failed.
    #[error("provisioning failed: {message}")]
    Provision {
        /// What went wrong.
        message: String,
        /// Whether trying again later may work.
        retryable: bool,
    },
    /// Destroying failed.
    #[error("destroying {vm} failed: {message}")]
    Destroy {
        /// The VM.
        vm: String,
        /// What went wrong.
        message: String,
    },
    /// Anything else with a cause.
    #[error("{context}: {source}")]
    Other {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A source of VMs.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Short name: `local`, `proxmox`.
    fn name(&self) -> &'static str;

    /// The isolation every job on this provider gets.
    fn isolation(&self) -> Isolation;

    /// One line on how jobs run here, for statuses and logs (the qemu
    /// provider adds its accelerator and why).
    fn describe(&self) -> String {
        self.isolation().describe().to_string()
    }

    /// The accelerator its VMs run with (`kvm`, `tcg`), for providers that
    /// choose one on this machine; said in every job status.
    fn accelerator(&self) -> Option<&'static str> {
        None
    }

    /// Creates and starts a VM for the job and hands it the bootstrap.
    /// Returns once the guest has been given its bootstrap; the guest then
    /// calls back on its own. Must be cancel-safe: if the future is dropped
    /// the caller will call [`Provider::destroy`] with whatever was
    /// reported through `on_created`.
    async fn provision(
        &self,
        req: ProvisionRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError>;

    /// What the provider could not do for `vm` that the host's settings
    /// ask for, in words for the status of the job that runs in it
    /// (Proxmox with `DELEGATE_PROXMOX_FIREWALL=auto` and no
    /// `VM.Config.Network`: egress not enforced). Asked once the VM has its
    /// job, whether it was cloned for it or taken from a warm pool.
    fn warnings(&self, vm: &VmRef) -> Vec<String> {
        let _ = vm;
        Vec::new()
    }

    /// Stops and deletes the VM. Idempotent: destroying a VM that is gone
    /// succeeds.
    async fn destroy(&self, vm: &VmRef) -> Result<(), ProviderError>;

    /// The VMs this host instance owns, for reconciliation.
    async fn list_owned(&self) -> Result<Vec<OwnedVm>, ProviderError>;

    /// Whether the VM has ended on its own (its process exited, the machine
    /// stopped or disappeared), with the reason in words for the job's
    /// error, such as `the sandbox exited (killed by SIGKILL)`. `None` while
    /// it runs or when the provider cannot tell; an error when asking
    /// failed (the heartbeat lease still covers the job then).
    async fn gone(&self, _vm: &VmRef) -> Result<Option<String>, ProviderError> {
        Ok(None)
    }

    /// How often the engine asks [`Provider::gone`] about a live job's VM;
    /// `None` (the default): never, the heartbeat lease alone tells.
    fn gone_interval(&self) -> Option<Duration> {
        None
    }

    /// A Unix socket the callback API must also listen on, for guests that
    /// have no network (the local sandbox). The engine creates it.
    fn callback_socket(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Whether this provider keeps idle VMs for warm pools (then the four
    /// methods below work).
    fn supports_pool(&self) -> bool {
        false
    }

    /// The template name a job of `template` (its `vmTemplate` or the
    /// default, `None` for neither) takes pool VMs of: the name itself,
    /// except where a provider has a name for what it boots without one
    /// (qemu's `micro`).
    fn pool_template(&self, template: Option<&str>) -> Option<String> {
        template.map(str::to_string)
    }

    /// Creates and starts a VM for a warm pool and returns once its guest
    /// waits for a bootstrap. Marks it as an idle pool VM of this host, so
    /// [`Provider::list_idle`] finds it and [`Provider::list_owned`] does
    /// not. Cancel-safe as [`Provider::provision`] is, with `on_created`.
    async fn prepare_idle(
        &self,
        req: IdleRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError> {
        let _ = (req, on_created);
        Err(ProviderError::Unavailable(format!(
            "the {} provider keeps no warm pool",
            self.name()
        )))
    }

    /// Hands a bootstrap to an idle pool VM made by
    /// [`Provider::prepare_idle`]: the job then runs in it. `egress_url`
    /// is the job's, as in [`ProvisionRequest::egress_url`]; a provider
    /// that fixed the VM's way to the gateway at boot refuses a VM whose
    /// way leads elsewhere.
    async fn deliver_bootstrap(
        &self,
        vm: &VmRef,
        bootstrap: &Bootstrap,
        egress_url: Option<&str>,
    ) -> Result<(), ProviderError> {
        let _ = (vm, bootstrap, egress_url);
        Err(ProviderError::Unavailable(format!(
            "the {} provider keeps no warm pool",
            self.name()
        )))
    }

    /// The pool VMs of this host, idle or claimed, for reconciliation.
    async fn list_idle(&self) -> Result<Vec<IdleVm>, ProviderError> {
        Ok(Vec::new())
    }

    /// What identifies the template's current contents (Proxmox: its VMIDs
    /// and config digests): a pool VM cloned from another version is
    /// replaced.
    async fn template_version(&self, template: &str) -> Result<String, ProviderError> {
        let _ = template;
        Err(ProviderError::Unavailable(format!(
            "the {} provider keeps no warm pool",
            self.name()
        )))
    }

    /// A Unix socket the egress gateway must also listen on, for guests
    /// that reach it only through a socket bound into their sandbox.
    fn egress_socket(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// VMs of ours stuck in a provider operation past its grace (Proxmox:
    /// `lock: clone`), for the engine to report. Most providers have none.
    async fn stuck(&self) -> Result<Vec<VmRef>, ProviderError> {
        Ok(Vec::new())
    }
}
