//! The `qemu` provider: each job in its own QEMU VM on this machine.
//!
//! Micro-VM mode (the only mode so far) needs no image: the machine's own
//! kernel boots an initramfs the provider builds at start ([`initramfs`]:
//! the static `delegate-guest` as `/init` plus the kernel modules it needs,
//! resolved from `modules.dep`). Init mounts the machine's root read-only
//! over virtio-9p under an overlay in memory, so the job sees the tools
//! installed here, writes only inside the VM, and runs `delegate-guest
//! boot`, which reads its bootstrap from the fw_cfg entry
//! `opt/delegate/bootstrap` (a 0600 file in the VM's directory, deleted
//! once the VM is up; never on the kernel command line, which other users
//! can read). The VM's network is QEMU user networking with
//! `restrict=on`: its ways out are a `guestfwd` from
//! 10.0.2.100:80 to the callback API and, when the host runs an egress
//! gateway, one from 10.0.2.100:3128 to the gateway (the job's
//! `HTTP_PROXY`), each relayed per connection by `delegate-guest relay`.
//!
//! KVM is used after a bounded probe ([`kvm`]); otherwise TCG, and the
//! provider says which ([`QemuProvider::summary`]). Each VM has a
//! directory under `<data dir>/qemu/vms/` ([`state`]) with its pid file,
//! QMP socket and console, so a restarted host finds and destroys it.
//! Destroying is QMP `quit`, then SIGKILL.
//!
//! Warm pools ([`pool`]): micro VMs booted without a job and paused, which
//! get their bootstrap over a virtio-serial port when a job claims one.

mod argv;
mod boot;
mod bootdisk;
mod cpio;
mod disk;
pub mod doctor;
mod image;
mod initramfs;
mod kernel;
mod kvm;
mod modules;
mod pool;
mod qmp;
mod settings;
mod state;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use delegate_proto::Bootstrap;

use crate::provider::local::process::{Recorded, wait_gone, write_private};
use crate::provider::{
    IdleRequest, IdleVm, Isolation, OwnedVm, Provider, ProviderError, ProvisionRequest, VmRef,
    VmSize,
};

pub use image::{ImageBoot, Images};
pub use kernel::Kernel;
pub use kvm::{Accel, AccelDecision};
pub use pool::MICRO_TEMPLATE;
pub use settings::{AccelChoice, QemuArgs, QemuContext, QemuSettings, QemuSettingsError};
pub use state::{VmDir, is_vm_name};

/// The provider's name in statuses.
pub const NAME: &str = "qemu";
/// How long QEMU gets to quit over QMP before SIGKILL.
const QUIT_WAIT: Duration = Duration::from_secs(3);
/// How long `destroy` waits for a killed QEMU to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Runs each job in a micro VM.
#[derive(Debug)]
pub struct QemuProvider {
    settings: QemuSettings,
    accel: AccelDecision,
    initramfs: PathBuf,
    /// The boot disk micro VMs with a workspace disk boot from, and the
    /// kernel command line on it (`None`: they boot with `-kernel`).
    boot_disk: Option<(PathBuf, String)>,
    vms: PathBuf,
    /// What micro VMs boot, for the pool's template version.
    boot_digest: String,
}

fn other(
    context: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> ProviderError {
    ProviderError::Other {
        context: context.into(),
        source: Box::new(e),
    }
}

fn private_dir(path: &Path) -> Result<(), ProviderError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| other(format!("creating {}", path.display()), e))
}

impl QemuProvider {
    /// Builds the initramfs and chooses the accelerator (probing KVM for
    /// up to 15 s once per machine boot unless TCG was chosen). Blocking.
    pub fn new(settings: QemuSettings) -> Result<Self, ProviderError> {
        let vms = settings.state_dir.join("vms");
        private_dir(&vms)?;
        remove_stale_staging(&vms);
        let (initramfs, accel) = prepare(&settings)?;
        tracing::info!(
            accel = accel.accel.as_str(),
            reason = %accel.reason,
            kernel = %settings.kernel.image.display(),
            "qemu provider ready"
        );
        let boot_digest = pool::boot_digest(&initramfs, accel.accel.as_str(), &settings.hide)?;
        if settings.mkfs.is_none() {
            tracing::warn!(
                "mkfs.ext4 (e2fsprogs) not found: each VM's /workspace is a tmpfs in its memory"
            );
        }
        let boot_disk = boot_disk(&settings, &initramfs);
        Ok(QemuProvider {
            settings,
            accel,
            initramfs,
            boot_disk,
            vms,
            boot_digest,
        })
    }

    /// The release of the kernel VMs boot.
    pub fn kernel_release(&self) -> &str {
        &self.settings.kernel.release
    }

    /// The accelerator and why.
    pub fn accel(&self) -> &AccelDecision {
        &self.accel
    }

    /// One line for statuses: the mode and the accelerator.
    pub fn summary(&self) -> String {
        let images = &self.settings.images;
        let mode = match (&images.default, &images.dir) {
            (Some(image), _) => format!("disk image {}", image.display()),
            (None, Some(dir)) => format!(
                "micro VM (kernel {}), or a vmTemplate image from {}",
                self.settings.kernel.release,
                dir.display()
            ),
            (None, None) => format!("micro VM (kernel {})", self.settings.kernel.release),
        };
        format!(
            "{mode}, {}: {}",
            self.accel.accel.as_str().to_uppercase(),
            self.accel.reason
        )
    }

    /// The files of VM `name` (diagnostics and tests).
    pub fn vm_dir(&self, name: &str) -> VmDir {
        VmDir::new(&self.vms, name)
    }

    /// What QEMU says VM `name` is doing (`running`, `paused`), over QMP
    /// (diagnostics and tests).
    pub async fn vm_status(&self, name: &str) -> Result<String, String> {
        if !is_vm_name(name) {
            return Err(format!("{name:?} is not a qemu VM name"));
        }
        let answer = qmp::query(&self.vm_dir(name).qmp, "query-status", QUIT_WAIT).await?;
        answer["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("QMP query-status answered {answer}"))
    }

    /// The workspace disk of `bytes`, when `mkfs.ext4` is there.
    async fn workspace_disk(
        &self,
        vm: &VmDir,
        bytes: u64,
    ) -> Result<Option<PathBuf>, ProviderError> {
        let Some(mkfs) = &self.settings.mkfs else {
            return Ok(None);
        };
        disk::create(mkfs, &vm.workspace_disk, bytes)
            .await
            .map_err(|message| ProviderError::Provision {
                message,
                retryable: false,
            })?;
        Ok(Some(vm.workspace_disk.clone()))
    }

    fn spec(
        &self,
        vm: &VmDir,
        size: VmSize,
        target: String,
        egress: Option<String>,
        workspace_disk: Option<PathBuf>,
    ) -> argv::VmSpec {
        let params = micro_params(&self.settings, workspace_disk.is_some(), size.disk_bytes);
        // The boot disk holds one command line: the one of VMs with a
        // workspace disk (the others differ in their workspace size).
        let boot_disk = self
            .boot_disk
            .as_ref()
            .filter(|(_, line)| *line == argv::kernel_cmdline(&params))
            .map(|(disk, _)| disk.clone());
        argv::VmSpec {
            share_root: true,
            workspace_disk,
            ..self.common_spec(
                vm,
                size,
                target,
                egress,
                argv::Boot::MicroVm {
                    kernel: self.settings.kernel.image.clone(),
                    initramfs: self.initramfs.clone(),
                    params,
                    boot_disk,
                },
            )
        }
    }

    /// A disk-image VM: the job's overlay as its only disk, booted by the
    /// image's own init (which finds the bootstrap in fw_cfg).
    fn image_spec(
        &self,
        vm: &VmDir,
        req: &ProvisionRequest,
        target: String,
        egress: Option<String>,
    ) -> argv::VmSpec {
        let boot = match (&self.settings.images.boot, &self.settings.images.initrd) {
            (ImageBoot::Kernel, Some(initrd)) => argv::Boot::ImageKernel {
                kernel: self.settings.kernel.image.clone(),
                initrd: initrd.clone(),
            },
            _ => argv::Boot::Firmware,
        };
        argv::VmSpec {
            root_disk: Some(vm.root_disk.clone()),
            ..self.common_spec(vm, req.size, target, egress, boot)
        }
    }

    /// What every job's VM has: its size, console, network, bootstrap and
    /// QMP socket.
    fn common_spec(
        &self,
        vm: &VmDir,
        size: VmSize,
        target: String,
        egress: Option<String>,
        boot: argv::Boot,
    ) -> argv::VmSpec {
        argv::VmSpec {
            name: vm
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            binary: self.settings.binary.clone(),
            accel: self.accel.accel,
            cpus: size.cpus,
            memory_mib: size.memory_bytes >> 20,
            boot,
            console: vm.console.clone(),
            network: Some(argv::Network {
                relay: self.settings.guest.clone(),
                target,
                egress,
            }),
            bootstrap: Some(vm.bootstrap.clone()),
            pool_port: None,
            qmp: Some(vm.qmp.clone()),
            share_root: false,
            workspace_disk: None,
            root_disk: None,
        }
    }

    /// The job's overlay of `image`, sized by `resources.disk` (at least
    /// the image's own size).
    async fn overlay(
        &self,
        vm: &VmDir,
        image: &Path,
        disk_bytes: u64,
    ) -> Result<(), ProviderError> {
        let refuse = |message: String| ProviderError::Provision {
            message,
            retryable: false,
        };
        let qemu_img = self.settings.images.qemu_img.as_deref().ok_or_else(|| {
            refuse("disk images need qemu-img (Debian: apt-get install qemu-utils)".into())
        })?;
        let size = image::create_overlay(qemu_img, image, &vm.root_disk, disk_bytes)
            .await
            .map_err(|e| refuse(e.to_string()))?;
        tracing::debug!(image = %image.display(), size, "overlay created");
        Ok(())
    }

    /// Makes VM `name`'s directory whole: `fill` writes its files under a
    /// staging name (which no listing takes for a VM), then it is renamed,
    /// so a listing never sees a VM without its job's or pool's mark.
    fn create_vm_dir(
        &self,
        name: &str,
        fill: impl FnOnce(&VmDir) -> Result<(), ProviderError>,
    ) -> Result<VmDir, ProviderError> {
        let staging = self.vm_dir(&format!("{STAGING_PREFIX}{name}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging.dir)
            .map_err(|e| other(format!("creating {}", staging.dir.display()), e))?;
        let done = self.vm_dir(name);
        let made = fill(&staging).and_then(|()| {
            std::fs::rename(&staging.dir, &done.dir)
                .map_err(|e| other(format!("renaming {}", staging.dir.display()), e))
        });
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&staging.dir);
            return Err(e);
        }
        Ok(done)
    }

    /// Starts QEMU for `vm`, records its pid and reaps it when it ends
    /// (`owner`: the job or pool id, for logs).
    fn launch(
        &self,
        vm: &VmDir,
        spec: &argv::VmSpec,
        owner: &str,
    ) -> Result<Recorded, ProviderError> {
        let mut child = self.spawn(vm, spec)?;
        let pid = child.id().unwrap_or(0);
        let Some(rec) = Recorded::of(pid) else {
            let status = child.try_wait().ok().flatten();
            return Err(ProviderError::Provision {
                message: format!(
                    "QEMU exited at once ({status:?}): {}",
                    state::tail(&vm.qemu_log, 5)
                ),
                retryable: false,
            });
        };
        rec.write(&vm.pid_file)
            .map_err(|e| other("writing the VM's pid file", e))?;
        tracing::debug!(owner, vm = %spec.name, pid, accel = self.accel.accel.as_str(), "QEMU started");
        let owner = owner.to_string();
        let vm_name = spec.name.clone();
        // Reap QEMU when it ends (it is this process's child).
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::info!(owner, vm = vm_name, %status, "QEMU exited"),
                Err(e) => {
                    tracing::warn!(owner, vm = vm_name, error = %e, "waiting for QEMU failed")
                }
            }
        });
        Ok(rec)
    }

    /// The names of every VM directory under this data directory.
    fn vm_names(&self) -> Result<Vec<String>, ProviderError> {
        let entries = match std::fs::read_dir(&self.vms) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(other(format!("listing {}", self.vms.display()), e)),
        };
        Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| is_vm_name(name))
            .collect())
    }

    fn spawn(
        &self,
        vm: &VmDir,
        spec: &argv::VmSpec,
    ) -> Result<tokio::process::Child, ProviderError> {
        let argv = argv::build(spec).map_err(|e| ProviderError::Provision {
            message: e.to_string(),
            retryable: false,
        })?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&vm.qemu_log)
            .map_err(|e| other(format!("opening {}", vm.qemu_log.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| other("duplicating the QEMU log", e))?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            // QEMU and the relays it starts need nothing of the host's
            // environment, which may hold its secrets.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            // Never the host's stdout: that is the MCP channel.
            .stdout(log)
            .stderr(log2)
            .current_dir(&vm.dir)
            .process_group(0)
            // The VM outlives this handle: a restarted host finds it
            // through its pid file.
            .kill_on_drop(false);
        cmd.spawn()
            .map_err(|e| other(format!("starting {}", spec.binary.display()), e))
    }

    /// Ends QEMU: QMP `quit`, then SIGKILL to its process group.
    async fn stop(&self, vm: &VmDir) -> Result<(), String> {
        let Some(rec) = Recorded::read(&vm.pid_file) else {
            return Ok(());
        };
        if !rec.alive() {
            return Ok(());
        }
        if let Err(e) = qmp::execute(&vm.qmp, "quit", QUIT_WAIT).await {
            tracing::debug!(error = %e, "QMP quit failed; killing QEMU");
        }
        wait_gone(&rec, QUIT_WAIT).await;
        if rec.alive() {
            rec.kill_group();
            wait_gone(&rec, KILL_WAIT).await;
        }
        if rec.alive() {
            return Err(format!(
                "QEMU (pid {}) survived SIGKILL for {KILL_WAIT:?}",
                rec.pid
            ));
        }
        Ok(())
    }
}

/// What a VM directory is called until it is whole.
const STAGING_PREFIX: &str = ".new-";
/// A staging directory older than this was left by a process that died
/// between making and renaming it (no QEMU ever ran in it).
const STAGING_STALE: Duration = Duration::from_secs(60);

/// Removes staging directories left by a crash. Only old ones: another
/// process on this data directory (`doctor` beside a server) may be making
/// a VM right now.
fn remove_stale_staging(vms: &Path) {
    let Ok(entries) = std::fs::read_dir(vms) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STAGING_STALE));
        if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) && stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A micro VM's `delegate.*` kernel parameters: its workspace (the disk,
/// or a tmpfs of `disk_bytes`) and the paths hidden from it.
fn micro_params(settings: &QemuSettings, workspace_disk: bool, disk_bytes: u64) -> Vec<String> {
    let mut params = vec![if workspace_disk {
        "delegate.workspace_disk".to_string()
    } else {
        format!("delegate.workspace_size={disk_bytes}")
    }];
    for path in &settings.hide {
        let p = path.to_string_lossy();
        if p.contains(char::is_whitespace) {
            tracing::warn!(path = %p, "a path with whitespace cannot be hidden from VMs");
        } else {
            params.push(format!("delegate.hide={p}"));
        }
    }
    params
}

/// The boot disk of micro VMs with a workspace disk (built in the state
/// directory), when its tools and `mkfs.ext4` are there; otherwise they
/// boot with `-kernel`, and the log says why. Blocking.
fn boot_disk(settings: &QemuSettings, initramfs: &Path) -> Option<(PathBuf, String)> {
    settings.mkfs.as_ref()?;
    let tools = match &settings.boot_disk_tools {
        Ok(tools) => tools,
        Err(missing) => {
            tracing::warn!(
                missing,
                "micro VMs boot with -kernel, which QEMU keeps a copy of per VM \
                 (install dosfstools, mtools and syslinux to boot them from a shared disk)"
            );
            return None;
        }
    };
    let cmdline = argv::kernel_cmdline(&micro_params(settings, true, 0));
    let out = settings
        .state_dir
        .join(format!("boot-{}.img", settings.kernel.release));
    match bootdisk::build(tools, &settings.kernel.image, initramfs, &cmdline, &out) {
        Ok(()) => Some((out, cmdline)),
        Err(e) => {
            tracing::warn!(error = %e, "micro VMs boot with -kernel: the boot disk could not be built");
            None
        }
    }
}

/// The initramfs (built in the state directory) and the accelerator
/// (after the bounded KVM probe, whose outcome is kept for this machine
/// boot in `<state dir>/kvm-probe`). Blocking.
pub fn prepare(settings: &QemuSettings) -> Result<(PathBuf, AccelDecision), ProviderError> {
    private_dir(&settings.state_dir)?;
    let modules = modules::resolve(
        &settings.kernel.modules,
        modules::REQUIRED,
        modules::OPTIONAL,
    )
    .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
    let initramfs = settings
        .state_dir
        .join(format!("initramfs-{}.img", settings.kernel.release));
    initramfs::build(&settings.guest, &modules, &initramfs)
        .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
    let probe = argv::VmSpec {
        name: "kvm-probe".into(),
        binary: settings.binary.clone(),
        accel: Accel::Kvm,
        cpus: 1,
        memory_mib: 256,
        boot: argv::Boot::MicroVm {
            kernel: settings.kernel.image.clone(),
            initramfs: initramfs.clone(),
            params: vec!["delegate.probe".into()],
            boot_disk: None,
        },
        console: settings.state_dir.join("kvm-probe.log"),
        network: None,
        bootstrap: None,
        pool_port: None,
        qmp: None,
        share_root: false,
        workspace_disk: None,
        root_disk: None,
    };
    let cache_file = probe_cache_file(settings);
    let cache = kvm::ProbeCache {
        file: &cache_file,
        key: kvm::cache_key(&settings.binary, &settings.kernel.release),
    };
    let accel = kvm::decide(settings.accel, &probe, kvm::PROBE_TIMEOUT, &cache)
        .map_err(ProviderError::Unavailable)?;
    Ok((initramfs, accel))
}

fn probe_cache_file(settings: &QemuSettings) -> PathBuf {
    settings.state_dir.join("kvm-probe")
}

/// The accelerator VMs get, as far as it is known without probing (the
/// choice, or the probe's outcome kept for this boot); `None` when only a
/// probe can tell.
pub fn kept_accel(settings: &QemuSettings) -> Option<AccelDecision> {
    let file = probe_cache_file(settings);
    let cache = kvm::ProbeCache {
        file: &file,
        key: kvm::cache_key(&settings.binary, &settings.kernel.release),
    };
    let outcome = match settings.accel {
        AccelChoice::Tcg => Err(String::new()),
        _ => cache.read()?,
    };
    kvm::decide_from(settings.accel, outcome).ok()
}

/// The accelerator of VMs for a process that does not run the provider
/// (a CLI client beside a server).
pub fn known_accel(settings: &QemuSettings) -> Option<Accel> {
    kept_accel(settings).map(|d| d.accel)
}

/// The accelerator, from what is kept when it can be, else by building
/// the initramfs and probing (what `DELEGATE_PROVIDER=auto` asks).
pub fn accel(settings: &QemuSettings) -> Result<AccelDecision, ProviderError> {
    match kept_accel(settings) {
        Some(d) => Ok(d),
        None => prepare(settings).map(|(_, d)| d),
    }
}

/// The bootstrap as the VM sees it (the callback at the forwarded address)
/// and the `HOST:PORT` the relay connects to on this machine.
pub fn guest_bootstrap(host: &Bootstrap) -> Result<(Bootstrap, String), ProviderError> {
    let refuse = |why: &str| ProviderError::Provision {
        message: format!("callback URL {}: {why}", host.callback_url),
        retryable: false,
    };
    let (target, path) = forward_target(&host.callback_url).map_err(|why| {
        refuse(match why {
            NOT_HTTP => "the qemu provider forwards plain HTTP to the callback API; use an http:// CALLBACK_URL",
            other => other,
        })
    })?;
    let mut guest = host.clone();
    guest.callback_url = format!(
        "http://{}:{}{path}",
        argv::CALLBACK_GUEST_ADDR,
        argv::CALLBACK_GUEST_PORT
    );
    Ok((guest, target))
}

/// Points the VM's bootstrap at its forward to the egress gateway, when
/// the host runs one (`egress_url`, the gateway's address on this
/// machine); returns the `HOST:PORT` that forward's relay connects to.
pub fn guest_egress(
    guest: &mut Bootstrap,
    egress_url: Option<&str>,
) -> Result<Option<String>, ProviderError> {
    let Some(url) = egress_url else {
        return Ok(None);
    };
    let (target, _) = forward_target(url).map_err(|why| ProviderError::Provision {
        message: format!("egress gateway URL {url}: {why}"),
        retryable: false,
    })?;
    guest.egress_url = Some(format!(
        "http://{}:{}",
        argv::CALLBACK_GUEST_ADDR,
        argv::EGRESS_GUEST_PORT
    ));
    Ok(Some(target))
}

const NOT_HTTP: &str = "only plain http:// can be forwarded";

/// The `HOST:PORT` of an `http://host:port/path` URL (`localhost` as
/// `127.0.0.1`, which the relay connects to without a resolver), and its
/// path.
fn forward_target(url: &str) -> Result<(String, &str), &'static str> {
    let rest = url.strip_prefix("http://").ok_or(NOT_HTTP)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (h, port) = authority.rsplit_once(':').ok_or("it names no port")?;
    let port: u16 = port.parse().map_err(|_| "its port is not a number")?;
    let h = if h == "localhost" { "127.0.0.1" } else { h };
    Ok((format!("{h}:{port}"), path))
}

#[async_trait::async_trait]
impl Provider for QemuProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }

    fn describe(&self) -> String {
        self.summary()
    }

    fn accelerator(&self) -> Option<&'static str> {
        Some(self.accel.accel.as_str())
    }

    async fn provision(
        &self,
        req: ProvisionRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError> {
        let (mut guest_bootstrap, target) = guest_bootstrap(&req.bootstrap)?;
        let egress = guest_egress(&mut guest_bootstrap, req.egress_url.as_deref())?;
        // `micro` names the micro VM, whatever the default image.
        let image =
            match req.template.as_deref() {
                Some(MICRO_TEMPLATE) => None,
                template => self.settings.images.for_job(template).map_err(|e| {
                    ProviderError::Provision {
                        message: e.to_string(),
                        retryable: false,
                    }
                })?,
            };
        let name = state::new_name();
        let vm_dir = self.create_vm_dir(&name, |d| {
            write_private(&d.job_file, req.job_id.as_bytes())?;
            write_private(&d.deadline_file, req.deadline_ms.to_string().as_bytes())
        })?;
        let vm = VmRef {
            provider: NAME.into(),
            id: name,
            node: None,
        };
        // From here on there is something to destroy.
        on_created(vm.clone());
        let json =
            serde_json::to_vec(&guest_bootstrap).map_err(|e| other("encoding the bootstrap", e))?;
        write_private(&vm_dir.bootstrap, &json)?;
        let spec = match &image {
            Some(image) => {
                self.overlay(&vm_dir, image, req.size.disk_bytes).await?;
                self.image_spec(&vm_dir, &req, target, egress)
            }
            None => {
                let disk = self.workspace_disk(&vm_dir, req.size.disk_bytes).await?;
                self.spec(&vm_dir, req.size, target, egress, disk)
            }
        };
        let rec = self.launch(&vm_dir, &spec, &req.job_id)?;
        tracing::info!(job_id = %req.job_id, vm = %vm.id, accel = self.accel.accel.as_str(), "VM starting");
        let limit = self.settings.boot_timeout;
        let booted = match (&image, &spec.boot) {
            (None, _) => boot::wait_ready(&vm_dir, rec, limit).await,
            // The kernel's console is the serial port: the runner's first
            // line shows the image booted and found its bootstrap.
            (Some(_), argv::Boot::ImageKernel { .. }) => {
                boot::wait_for(&vm_dir, rec, limit, delegate_proto::microvm::BOOT_MARKER).await
            }
            // Its own boot loader decides where its console is.
            (Some(_), _) => boot::wait_started(&vm_dir, rec, limit).await,
        };
        // QEMU read the file when it started; the token need not stay on disk.
        let _ = std::fs::remove_file(&vm_dir.bootstrap);
        booted.map_err(|e| ProviderError::Provision {
            message: e.to_string(),
            retryable: false,
        })?;
        tracing::info!(job_id = %req.job_id, vm = %vm.id, "VM up");
        Ok(vm)
    }

    async fn destroy(&self, vm: &VmRef) -> Result<(), ProviderError> {
        if !is_vm_name(&vm.id) {
            return Err(ProviderError::Destroy {
                vm: vm.id.clone(),
                message: "not a qemu VM name".into(),
            });
        }
        let dir = self.vm_dir(&vm.id);
        self.stop(&dir)
            .await
            .map_err(|message| ProviderError::Destroy {
                vm: vm.id.clone(),
                message,
            })?;
        match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir.dir)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Ok(Err(e)) => Err(ProviderError::Destroy {
                vm: vm.id.clone(),
                message: format!("removing its directory: {e}"),
            }),
            Err(e) => Err(ProviderError::Destroy {
                vm: vm.id.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// QEMU ended (the guest powered off, crashed, or QEMU was killed), or
    /// the VM's directory was taken apart; the console's last lines say
    /// which.
    async fn gone(&self, vm: &VmRef) -> Result<Option<String>, ProviderError> {
        if !is_vm_name(&vm.id) {
            return Ok(None);
        }
        let dir = self.vm_dir(&vm.id);
        if !crate::provider::gone::process_ended(&dir.dir, &dir.pid_file) {
            return Ok(None);
        }
        Ok(Some(format!(
            "QEMU of VM {} exited before its guest reported a result; console:\n{}",
            vm.id,
            state::tail(&dir.console, boot::TAIL_LINES)
        )))
    }

    fn gone_interval(&self) -> Option<Duration> {
        Some(crate::provider::gone::PROCESS_GONE_INTERVAL)
    }

    /// The job VMs: every VM directory under this data directory, running
    /// or not, that is not a pool VM's.
    async fn list_owned(&self) -> Result<Vec<OwnedVm>, ProviderError> {
        Ok(self
            .vm_names()?
            .into_iter()
            .filter_map(|name| {
                let dir = self.vm_dir(&name);
                (!dir.is_pool()).then(|| OwnedVm {
                    job_id: dir.job_id(),
                    deadline_ms: dir.deadline_ms(),
                    vm: VmRef {
                        provider: NAME.into(),
                        id: name,
                        node: None,
                    },
                })
            })
            .collect())
    }

    fn supports_pool(&self) -> bool {
        true
    }

    /// A job without a template boots the micro VM unless a default image
    /// is set; `micro` always names it.
    fn pool_template(&self, template: Option<&str>) -> Option<String> {
        match template {
            None if self.settings.images.default.is_none() => Some(MICRO_TEMPLATE.into()),
            other => other.map(str::to_string),
        }
    }

    async fn prepare_idle(
        &self,
        req: IdleRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError> {
        self.prepare_idle_vm(&req, on_created).await
    }

    async fn deliver_bootstrap(
        &self,
        vm: &VmRef,
        bootstrap: &Bootstrap,
        egress_url: Option<&str>,
    ) -> Result<(), ProviderError> {
        self.deliver_to(vm, bootstrap, egress_url).await
    }

    async fn list_idle(&self) -> Result<Vec<IdleVm>, ProviderError> {
        self.idle_vms()
    }

    async fn template_version(&self, template: &str) -> Result<String, ProviderError> {
        self.template_version_of(template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap(url: &str) -> Bootstrap {
        Bootstrap {
            v: 1,
            job_id: "j".into(),
            callback_url: url.into(),
            token: "t".into(),
            egress_url: None,
        }
    }

    #[test]
    fn the_vm_calls_the_forwarded_address_and_the_relay_the_real_one() {
        let (g, target) = guest_bootstrap(&bootstrap("http://127.0.0.1:8765")).unwrap();
        assert_eq!(g.callback_url, "http://10.0.2.100:80");
        assert_eq!(target, "127.0.0.1:8765");
        assert_eq!(g.token, "t");
        let (g, target) = guest_bootstrap(&bootstrap("http://localhost:9/base")).unwrap();
        assert_eq!(g.callback_url, "http://10.0.2.100:80/base");
        assert_eq!(target, "127.0.0.1:9");
        for bad in ["https://127.0.0.1:1", "http://127.0.0.1", "http://h:x"] {
            assert!(guest_bootstrap(&bootstrap(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_vm_reaches_the_gateway_at_its_second_forward() {
        let mut g = bootstrap("http://127.0.0.1:8765");
        assert_eq!(guest_egress(&mut g, None).unwrap(), None);
        assert_eq!(g.egress_url, None);
        let target = guest_egress(&mut g, Some("http://localhost:8766")).unwrap();
        assert_eq!(target.as_deref(), Some("127.0.0.1:8766"));
        assert_eq!(g.egress_url.as_deref(), Some("http://10.0.2.100:3128"));
        assert!(guest_egress(&mut g, Some("https://gw:1")).is_err());
    }
}
