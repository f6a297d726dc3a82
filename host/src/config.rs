//! Settings: flags, environment and the configuration file parsed into
//! [`RawSettings`], then checked against the machine into [`Settings`].
//!
//! [`table`] reads the one list of settings from clap's definitions (flag,
//! variable, file key, type); [`file`] reads the TOML file against it;
//! [`layers`] stacks flag over variable over file over default and records
//! where each value came from; [`example`] writes `config.example.toml`.
//!
//! Two layers, as in ripgrep's low/high args: the raw layer only parses (clap
//! with `env` on every field, so a flag and its variable are the same thing);
//! [`Settings::resolve_with`] validates ranges, picks directories and has
//! the chosen provider resolve its own settings ([`LocalArgs`],
//! [`ProxmoxArgs`]), naming the setting in every error. Everything outside
//! the arguments is read through one [`Machine`]. Nothing is read from
//! globals after that: the engine gets an `Arc<Settings>`.

pub mod auto;
mod builder;
mod describe;
pub mod example;
pub mod file;
pub mod http_conn;
pub mod layers;
pub mod table;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use delegate_proto::size::parse_size;

use crate::callback::settings::CallbackConnArgs;
use crate::egress::{EgressArgs, EgressSettings};
use crate::net::conn::ConnSettings;
use crate::pool::{PoolClass, parse_pool};
use crate::provider::local::{GUEST_BIN_NAME, LocalArgs, LocalSettings};
use crate::provider::proxmox::{ProxmoxArgs, ProxmoxSettings};
use crate::provider::qemu::{QemuArgs, QemuContext, QemuSettings};
use crate::resolve::{FileKind, Machine, ProcessMachine, Secret, SettingsError, absolute, invalid};

pub use builder::SettingsBuilder;
pub use layers::{Layered, Provenance, Source, layer};

/// Which provider creates VMs: only those this build can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// No VM: a process sandbox on this machine (user/mount/pid/ipc/uts namespaces).
    Local,
    /// Proxmox VE over its REST API.
    Proxmox,
    /// A QEMU micro VM per job on this machine.
    Qemu,
}

impl ProviderKind {
    /// Every provider this build has, in the order settings list them.
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Local,
        ProviderKind::Proxmox,
        ProviderKind::Qemu,
    ];

    /// The name used in settings and statuses.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Proxmox => "proxmox",
            ProviderKind::Qemu => "qemu",
        }
    }

    /// Reads `DELEGATE_PROVIDER` (case and surrounding blanks ignored),
    /// refusing a provider this build cannot run.
    pub fn parse(text: &str) -> Result<ProviderKind, SettingsError> {
        let wanted = text.trim().to_ascii_lowercase();
        if let Some(kind) = Self::ALL.into_iter().find(|k| k.as_str() == wanted) {
            return Ok(kind);
        }
        let known: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
        Err(invalid(
            "DELEGATE_PROVIDER",
            format!(
                "{text:?} is not a provider this build can run; say {} to let the host pick, \
                 or use one of: {}",
                auto::AUTO,
                known.join(", ")
            ),
        ))
    }
}

/// Settings as given on the command line or in the environment; parsed only.
#[derive(Debug, Clone, clap::Args)]
pub struct RawSettings {
    /// Port of the callback API that guests report to.
    #[arg(long, env = "CALLBACK_PORT", default_value_t = 8765)]
    pub callback_port: u16,
    /// Address the callback API listens on.
    #[arg(long, env = "CALLBACK_HOST", default_value = "0.0.0.0")]
    pub callback_host: String,
    /// URL guests use to reach the callback API (the advertised address).
    /// Default for the local provider: `http://127.0.0.1:<CALLBACK_PORT>`.
    #[arg(long, env = "CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// Address (`IP:port`) serving `/metrics` and `/healthz`; unset or
    /// empty: not served. Keep it off the guests' network (e.g. 127.0.0.1).
    #[arg(long, env = "DELEGATE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Template used when a manifest names none.
    #[arg(long, env = "DEFAULT_VM_TEMPLATE")]
    pub default_vm_template: Option<String>,
    /// Job timeout in seconds when a manifest sets none.
    #[arg(long, env = "DEFAULT_TIMEOUT", default_value_t = 3600)]
    pub default_timeout: u64,
    /// CPUs per VM when a manifest sets none.
    #[arg(long, env = "DEFAULT_CPU", default_value_t = 2)]
    pub default_cpu: u32,
    /// Memory per VM when a manifest sets none (e.g. 2G).
    #[arg(long, env = "DEFAULT_MEMORY", default_value = "2G")]
    pub default_memory: String,
    /// Most memory a job may ask for (e.g. 64G) [default: this machine's
    /// memory with the local provider; none with Proxmox, whose placement
    /// checks its nodes].
    #[arg(long, env = "DELEGATE_MAX_MEMORY")]
    pub max_memory: Option<String>,
    /// Disk per VM when a manifest sets none (e.g. 10G).
    #[arg(long, env = "DEFAULT_DISK", default_value = "10G")]
    pub default_disk: String,
    /// A running job silent for this long is lost (failed, VM destroyed).
    #[arg(long, env = "HEARTBEAT_THRESHOLD_SECONDS", default_value_t = 120)]
    pub heartbeat_threshold_seconds: u64,
    /// How often timeouts, leases, cleanup and retention are checked.
    #[arg(long, env = "CLEANUP_INTERVAL_SECONDS", default_value_t = 30)]
    pub cleanup_interval_seconds: u64,
    /// Where VMs come from: `auto` (qemu when KVM works, else local),
    /// `local`, `proxmox` or `qemu`.
    #[arg(long, env = "DELEGATE_PROVIDER", default_value = auto::AUTO)]
    pub provider: String,
    /// Directory for the job database, logs and artifacts.
    /// Default: `$XDG_DATA_HOME/delegate` or `~/.local/share/delegate`.
    #[arg(long, env = "DELEGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Local provider settings (`DELEGATE_GUEST_BIN`, `DELEGATE_LOCAL_UNSANDBOXED`).
    #[command(flatten)]
    pub local: LocalArgs,
    /// Most VMs alive at once; more jobs wait as `pending`.
    #[arg(long, env = "DELEGATE_MAX_RUNNING", default_value_t = 4)]
    pub max_running: usize,
    /// Seconds a job may wait as `pending` for a free VM slot before it
    /// times out (its own timeout counts from provisioning on).
    #[arg(long, env = "DELEGATE_QUEUE_TIMEOUT_SECONDS", default_value_t = 3600)]
    pub queue_timeout_seconds: u64,
    /// Most VMs being provisioned at once.
    #[arg(long, env = "DELEGATE_MAX_PROVISIONING", default_value_t = 2)]
    pub max_provisioning: usize,
    /// Largest artifact upload per job (e.g. 1G).
    #[arg(long, env = "DELEGATE_MAX_ARTIFACT_BYTES", default_value = "1G")]
    pub max_artifact_bytes: String,
    /// Directories `repo.path` may name repositories in, `:`-separated
    /// (unset: no repository is delivered).
    #[arg(long, env = "DELEGATE_REPO_ROOTS")]
    pub repo_roots: Option<String>,
    /// Largest repository archive per job (e.g. 1G).
    #[arg(long, env = "DELEGATE_MAX_REPO_BYTES", default_value = "1G")]
    pub max_repo_bytes: String,
    /// Most US dollars one `claude` job may spend; no manifest may ask for
    /// more, and jobs that set no budget get this one.
    #[arg(long, env = "DELEGATE_MAX_BUDGET_USD")]
    pub max_budget_usd: Option<f64>,
    /// How long a persistent job's VM is kept idle after its last turn
    /// before it is destroyed (e.g. 1h, 30m, 90s; plain numbers are seconds).
    #[arg(long, env = "DELEGATE_PERSISTENT_TTL", default_value = "1h")]
    pub persistent_ttl: String,
    /// Most log bytes stored per job and stream (e.g. 1G).
    #[arg(long, env = "DELEGATE_MAX_LOG_BYTES", default_value = "1G")]
    pub max_log_bytes: String,
    /// Finished jobs older than this many days are pruned (0: keep forever).
    #[arg(long, env = "DELEGATE_RETENTION_DAYS", default_value_t = 7)]
    pub retention_days: u64,
    /// How often guests send heartbeats.
    #[arg(
        long,
        env = "DELEGATE_HEARTBEAT_INTERVAL_SECONDS",
        default_value_t = 10
    )]
    pub heartbeat_interval_seconds: u64,
    /// After a cancel, how long a guest may still upload artifacts and its result.
    #[arg(long, env = "DELEGATE_CANCEL_GRACE_SECONDS", default_value_t = 15)]
    pub cancel_grace_seconds: u64,
    /// Bearer token required by `serve --http`.
    #[arg(long, env = "DELEGATE_HTTP_TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,
    /// File holding the bearer token for `serve --http`.
    #[arg(long, env = "DELEGATE_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<PathBuf>,
    /// Host names `serve --http` answers to (comma-separated).
    #[arg(
        long,
        env = "DELEGATE_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,[::1]"
    )]
    pub allowed_hosts: Vec<String>,
    /// Origins allowed beyond the same host (comma-separated).
    #[arg(long, env = "DELEGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// `wait_for_job` wait when the client gives none, in seconds.
    #[arg(long, env = "DELEGATE_WAIT_DEFAULT_SECONDS", default_value_t = 25)]
    pub wait_default_seconds: u64,
    /// Longest `wait_for_job` wait, in seconds (keep well under clients' ~60 s).
    #[arg(long, env = "DELEGATE_WAIT_MAX_SECONDS", default_value_t = 50)]
    pub wait_max_seconds: u64,
    /// Largest artifact served as an MCP resource (e.g. 4M).
    #[arg(long, env = "DELEGATE_MAX_RESOURCE_BYTES", default_value = "4M")]
    pub max_resource_bytes: String,
    /// Warm pools of idle VMs, `TEMPLATE:SIZE=COUNT,...` such as
    /// `delegate-template:2c4g20g=3` (proxmox and qemu, whose template is
    /// `micro`; unset: none).
    #[arg(long = "pool", env = "DELEGATE_POOL")]
    pub warm_pool: Option<String>,
    /// An idle pool VM older than this is replaced (seconds, or `30m`, `2h`).
    #[arg(long, env = "DELEGATE_POOL_MAX_AGE", default_value = "6h")]
    pub pool_max_age: String,
    /// Leave idle pool VMs for the next start instead of destroying them
    /// at shutdown.
    #[arg(long, env = "DELEGATE_POOL_KEEP_ON_EXIT")]
    pub pool_keep_on_exit: bool,
    /// The callback listener's connection timeouts and cap
    /// (`DELEGATE_CALLBACK_*`).
    #[command(flatten)]
    pub callback_conn: CallbackConnArgs,
    /// `serve --http`'s connection timeout and cap (`DELEGATE_HTTP_*`).
    #[command(flatten)]
    pub http_conn: http_conn::HttpConnArgs,
    /// Proxmox provider settings (`PROXMOX_*`).
    #[command(flatten)]
    pub proxmox: ProxmoxArgs,
    /// QEMU provider settings (`DELEGATE_QEMU_*`).
    #[command(flatten)]
    pub qemu: QemuArgs,
    /// The egress gateway and host-held secrets (`DELEGATE_EGRESS_*`,
    /// `DELEGATE_SECRET*`).
    #[command(flatten)]
    pub egress: EgressArgs,
}

/// Validated settings; what the engine runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the callback API listens.
    pub callback_bind: SocketAddr,
    /// The URL guests are told to call.
    pub callback_url: String,
    /// True when `callback_url` was derived from the bind address, so the
    /// engine may fix its port after binding port 0.
    pub callback_url_derived: bool,
    /// Where `/metrics` and `/healthz` are served (never on the callback
    /// listener, which every guest reaches); `None`: not served.
    pub metrics_bind: Option<SocketAddr>,
    /// Template for manifests that name none.
    pub default_vm_template: Option<String>,
    /// Default job timeout (counted from provisioning on).
    pub default_timeout: Duration,
    /// How long a job may wait as `pending` for a free VM slot.
    pub queue_timeout: Duration,
    /// Default CPUs.
    pub default_cpu: u32,
    /// Default memory in bytes.
    pub default_memory: u64,
    /// Default disk in bytes.
    pub default_disk: u64,
    /// Most memory a job may ask for, in bytes, when known.
    pub max_memory: Option<u64>,
    /// Heartbeat lease.
    pub heartbeat_threshold: Duration,
    /// Period of the housekeeping loop.
    pub cleanup_interval: Duration,
    /// The provider.
    pub provider: ProviderKind,
    /// Why `DELEGATE_PROVIDER=auto` picked [`Settings::provider`]; `None`
    /// when the provider was named.
    pub provider_pick: Option<String>,
    /// The data directory (absolute).
    pub data_dir: PathBuf,
    /// Concurrent VM limit.
    pub max_running: usize,
    /// Concurrent provisioning limit.
    pub max_provisioning: usize,
    /// Artifact upload cap.
    pub max_artifact_bytes: u64,
    /// Log cap per job and stream.
    pub max_log_bytes: u64,
    /// `DELEGATE_REPO_ROOTS`, absolute.
    pub repo_roots: Vec<PathBuf>,
    /// Repository archive cap.
    pub max_repo_bytes: u64,
    /// `DELEGATE_MAX_BUDGET_USD`.
    pub max_budget_usd: Option<f64>,
    /// `DELEGATE_PERSISTENT_TTL`: a kept VM's idle time-to-live.
    pub persistent_ttl: Duration,
    /// Age after which finished jobs are pruned; `None` keeps them.
    pub retention: Option<Duration>,
    /// Heartbeat period sent to guests.
    pub heartbeat_interval: Duration,
    /// Grace after a cancel for the guest's last uploads.
    pub cancel_grace: Duration,
    /// `DELEGATE_LOCAL_UNSANDBOXED`: the local provider may run jobs
    /// without namespaces (also in [`LocalSettings`]; kept here for the
    /// isolation a manager without a provider reports).
    pub local_unsandboxed: bool,
    /// Bearer token for `serve --http`.
    pub http_token: Option<Secret>,
    /// Host names `serve --http` answers to.
    pub allowed_hosts: Vec<String>,
    /// Extra allowed origins.
    pub allowed_origins: Vec<String>,
    /// Default `wait_for_job` wait.
    pub wait_default: Duration,
    /// Longest `wait_for_job` wait.
    pub wait_max: Duration,
    /// Largest artifact served as an MCP resource.
    pub max_resource_bytes: u64,
    /// Resolved local provider settings, with `DELEGATE_PROVIDER=local`
    /// (settings from [`Settings::builder`] have none unless given).
    pub local: Option<LocalSettings>,
    /// Warm pools (`DELEGATE_POOL`); empty: none.
    pub pool: Vec<PoolClass>,
    /// `DELEGATE_POOL_MAX_AGE`.
    pub pool_max_age: Duration,
    /// `DELEGATE_POOL_KEEP_ON_EXIT`.
    pub pool_keep_on_exit: bool,
    /// Resolved Proxmox settings, with `DELEGATE_PROVIDER=proxmox`.
    pub proxmox: Option<ProxmoxSettings>,
    /// Resolved QEMU settings, with `DELEGATE_PROVIDER=qemu`.
    pub qemu: Option<QemuSettings>,
    /// The callback listener's connection timeouts and cap.
    pub callback_conn: ConnSettings,
    /// `serve --http`'s connection timeouts and cap.
    pub http_conn: ConnSettings,
    /// The egress gateway and the host's secrets.
    pub egress: EgressSettings,
}

/// Client tool calls time out around 60 s; a wait must end well before.
const WAIT_CEILING_SECONDS: u64 = 55;

impl Settings {
    /// Resolves against this process's environment and file system.
    pub fn resolve(raw: RawSettings) -> Result<Settings, SettingsError> {
        Settings::resolve_with(raw, &ProcessMachine)
    }

    /// Resolves against the given machine (tests feed their own).
    pub fn resolve_with(
        raw: RawSettings,
        machine: &dyn Machine,
    ) -> Result<Settings, SettingsError> {
        let auto = raw.provider.trim().eq_ignore_ascii_case(auto::AUTO);
        let provider = if auto {
            // The sandbox's defaults until the pick says otherwise.
            ProviderKind::Local
        } else {
            ProviderKind::parse(&raw.provider)?
        };
        let mut settings = Settings::resolve_common(&raw, provider, machine)?;
        if auto {
            let pick = auto::pick(
                machine.kvm_device(),
                || {
                    raw.qemu
                        .resolve(&qemu_context(&raw, machine, &settings.data_dir))
                },
                |q| crate::provider::qemu::accel(q).map_err(|e| e.to_string()),
            );
            settings.provider = pick.kind;
            settings.provider_pick = Some(pick.reason);
            if let Some(qemu) = pick.qemu {
                // A VM's memory is not bounded by this machine's as a
                // sandbox's is.
                if raw.max_memory.is_none() {
                    settings.max_memory = None;
                }
                settings.qemu = Some(qemu);
                return Ok(settings);
            }
        }
        match settings.provider {
            ProviderKind::Local => {
                settings.local = Some(raw.local.resolve(&settings.data_dir, machine)?);
            }
            ProviderKind::Proxmox => {
                let mut px = raw.proxmox.resolve(machine)?;
                // The VM firewall lets guests reach the callback and gateway.
                px.firewall.callback_url = Some(settings.callback_url.clone());
                px.firewall.egress_url = settings.egress.url.clone().or_else(|| {
                    settings
                        .egress
                        .listen
                        .map(|l| settings.egress.url_for(&settings.callback_url, l))
                });
                // Jobs never reach the Proxmox API through the gateway.
                settings
                    .egress
                    .always_denied_hosts
                    .push(crate::egress::settings::host_of_url(&px.url));
                settings.proxmox = Some(px);
            }
            ProviderKind::Qemu => {
                let qemu = raw
                    .qemu
                    .resolve(&qemu_context(&raw, machine, &settings.data_dir))
                    .map_err(|e| invalid(e.setting, e.message))?;
                settings.qemu = Some(qemu);
            }
        }
        Ok(settings)
    }

    /// Everything but the provider's own settings.
    fn resolve_common(
        raw: &RawSettings,
        provider: ProviderKind,
        machine: &dyn Machine,
    ) -> Result<Settings, SettingsError> {
        let host: IpAddr = raw.callback_host.trim().parse().map_err(|_| {
            invalid(
                "CALLBACK_HOST",
                format!("{:?} is not an IP address", raw.callback_host),
            )
        })?;
        let callback_bind = SocketAddr::new(host, raw.callback_port);
        let metrics_bind = match raw.metrics_addr.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(addr) => Some(addr.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "DELEGATE_METRICS_ADDR",
                    format!("{addr:?} is not an IP address and port, e.g. 127.0.0.1:9464"),
                )
            })?),
        };
        let (callback_url, callback_url_derived) = match &raw.callback_url {
            Some(url) => (check_url(url)?, false),
            None => (derive_callback_url(provider, callback_bind)?, true),
        };

        let positive = |setting: &'static str, v: u64| {
            if v == 0 {
                Err(invalid(setting, "must be at least 1"))
            } else {
                Ok(Duration::from_secs(v))
            }
        };
        if raw.default_timeout > delegate_proto::manifest::MAX_TIMEOUT_SECONDS {
            return Err(invalid(
                "DEFAULT_TIMEOUT",
                format!(
                    "{} s is more than the longest job timeout, {} s",
                    raw.default_timeout,
                    delegate_proto::manifest::MAX_TIMEOUT_SECONDS
                ),
            ));
        }
        let default_timeout = positive("DEFAULT_TIMEOUT", raw.default_timeout)?;
        if raw.default_cpu == 0 || u64::from(raw.default_cpu) > delegate_proto::manifest::MAX_CPU {
            return Err(invalid(
                "DEFAULT_CPU",
                format!("must be 1..={}", delegate_proto::manifest::MAX_CPU),
            ));
        }
        let heartbeat_threshold = positive(
            "HEARTBEAT_THRESHOLD_SECONDS",
            raw.heartbeat_threshold_seconds,
        )?;
        let heartbeat_interval = positive(
            "DELEGATE_HEARTBEAT_INTERVAL_SECONDS",
            raw.heartbeat_interval_seconds,
        )?;
        if heartbeat_interval * 2 > heartbeat_threshold {
            return Err(invalid(
                "DELEGATE_HEARTBEAT_INTERVAL_SECONDS",
                format!(
                    "{} s leaves no margin under HEARTBEAT_THRESHOLD_SECONDS ({} s): \
                     use at most half of it",
                    raw.heartbeat_interval_seconds, raw.heartbeat_threshold_seconds
                ),
            ));
        }
        let cleanup_interval = positive("CLEANUP_INTERVAL_SECONDS", raw.cleanup_interval_seconds)?;
        let queue_timeout = positive("DELEGATE_QUEUE_TIMEOUT_SECONDS", raw.queue_timeout_seconds)?;
        if raw.max_running == 0 {
            return Err(invalid("DELEGATE_MAX_RUNNING", "must be at least 1"));
        }
        if raw.max_provisioning == 0 {
            return Err(invalid("DELEGATE_MAX_PROVISIONING", "must be at least 1"));
        }
        let wait_default = positive("DELEGATE_WAIT_DEFAULT_SECONDS", raw.wait_default_seconds)?;
        let wait_max = positive("DELEGATE_WAIT_MAX_SECONDS", raw.wait_max_seconds)?;
        if raw.wait_max_seconds > WAIT_CEILING_SECONDS {
            return Err(invalid(
                "DELEGATE_WAIT_MAX_SECONDS",
                format!(
                    "{} s would outlast clients' tool timeouts (about 60 s); use at most {WAIT_CEILING_SECONDS}",
                    raw.wait_max_seconds
                ),
            ));
        }
        if wait_default > wait_max {
            return Err(invalid(
                "DELEGATE_WAIT_DEFAULT_SECONDS",
                "must not exceed DELEGATE_WAIT_MAX_SECONDS",
            ));
        }

        let data_dir = match &raw.data_dir {
            Some(dir) => absolute("DELEGATE_DATA_DIR", dir, machine)?,
            None => machine.default_data_dir().ok_or_else(|| {
                invalid(
                    "DELEGATE_DATA_DIR",
                    "not set, and neither XDG_DATA_HOME nor HOME is set to derive it from",
                )
            })?,
        };
        if machine
            .file_kind(&data_dir)
            .is_some_and(|k| k != FileKind::Directory)
        {
            return Err(invalid(
                "DELEGATE_DATA_DIR",
                format!("{} exists and is not a directory", data_dir.display()),
            ));
        }

        let http_token = match (&raw.http_token, &raw.http_token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "DELEGATE_HTTP_TOKEN_FILE",
                    "set either DELEGATE_HTTP_TOKEN or DELEGATE_HTTP_TOKEN_FILE, not both",
                ));
            }
            (Some(t), None) => Some(check_token("DELEGATE_HTTP_TOKEN", t.clone())?),
            (None, Some(path)) => {
                let bytes = machine.read(path).map_err(|source| SettingsError::Read {
                    setting: "DELEGATE_HTTP_TOKEN_FILE",
                    path: path.clone(),
                    source,
                })?;
                Some(check_token(
                    "DELEGATE_HTTP_TOKEN_FILE",
                    String::from_utf8_lossy(&bytes).trim().to_string(),
                )?)
            }
            (None, None) => None,
        };

        let allowed_hosts = clean_list(&raw.allowed_hosts);
        if allowed_hosts.is_empty() {
            return Err(invalid(
                "DELEGATE_ALLOWED_HOSTS",
                "must name at least one host",
            ));
        }

        let pool = pool_classes(raw.warm_pool.as_deref(), provider)?;
        let pool_max_age = duration("DELEGATE_POOL_MAX_AGE", &raw.pool_max_age)?;

        Ok(Settings {
            callback_bind,
            callback_url,
            callback_url_derived,
            metrics_bind,
            default_vm_template: raw
                .default_vm_template
                .clone()
                .filter(|t| !t.trim().is_empty()),
            default_timeout,
            queue_timeout,
            default_cpu: raw.default_cpu,
            default_memory: size("DEFAULT_MEMORY", &raw.default_memory)?,
            default_disk: size("DEFAULT_DISK", &raw.default_disk)?,
            max_memory: match &raw.max_memory {
                Some(text) => Some(size("DELEGATE_MAX_MEMORY", text)?),
                None if provider == ProviderKind::Local => machine_memory(machine),
                None => None,
            },
            heartbeat_threshold,
            cleanup_interval,
            provider,
            provider_pick: None,
            data_dir,
            max_running: raw.max_running,
            max_provisioning: raw.max_provisioning,
            max_artifact_bytes: size("DELEGATE_MAX_ARTIFACT_BYTES", &raw.max_artifact_bytes)?,
            max_log_bytes: size("DELEGATE_MAX_LOG_BYTES", &raw.max_log_bytes)?,
            repo_roots: repo_roots(raw.repo_roots.as_deref())?,
            max_repo_bytes: size("DELEGATE_MAX_REPO_BYTES", &raw.max_repo_bytes)?,
            max_budget_usd: budget(raw.max_budget_usd)?,
            persistent_ttl: duration("DELEGATE_PERSISTENT_TTL", &raw.persistent_ttl)?,
            retention: (raw.retention_days > 0)
                .then(|| Duration::from_secs(raw.retention_days.saturating_mul(86_400))),
            heartbeat_interval,
            cancel_grace: Duration::from_secs(raw.cancel_grace_seconds),
            local_unsandboxed: raw.local.local_unsandboxed,
            http_token,
            allowed_hosts,
            allowed_origins: clean_list(&raw.allowed_origins),
            wait_default,
            wait_max,
            max_resource_bytes: size("DELEGATE_MAX_RESOURCE_BYTES", &raw.max_resource_bytes)?,
            pool,
            pool_max_age,
            pool_keep_on_exit: raw.pool_keep_on_exit,
            local: None,
            proxmox: None,
            qemu: None,
            egress: raw.egress.resolve(machine)?,
            callback_conn: raw.callback_conn.resolve()?,
            http_conn: raw.http_conn.resolve()?,
        })
    }
}

/// What the QEMU settings are resolved against.
fn qemu_context(raw: &RawSettings, machine: &dyn Machine, data_dir: &Path) -> QemuContext {
    QemuContext::standard(
        machine.var_os("PATH"),
        qemu_guest_candidates(&raw.local, machine),
        data_dir,
    )
}

/// Where a static guest for the qemu provider may be, in order:
/// DELEGATE_GUEST_BIN, the guest found beside delegate-host or on PATH,
/// and the workspace's musl build next to this executable's profile
/// directory (`target/x86_64-unknown-linux-musl/release`).
fn qemu_guest_candidates(local: &LocalArgs, machine: &dyn Machine) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = local
        .guest_bin
        .as_deref()
        .and_then(|p| absolute("DELEGATE_GUEST_BIN", p, machine).ok())
        .into_iter()
        .collect();
    out.extend(machine.find_beside_exe_or_on_path(GUEST_BIN_NAME));
    if let Some(exe) = machine.current_exe() {
        let musl = std::path::Path::new("x86_64-unknown-linux-musl/release").join(GUEST_BIN_NAME);
        // target/<profile>/ and, under cargo test, target/<profile>/deps/.
        for up in exe.ancestors().skip(2).take(2) {
            out.push(up.join(&musl));
        }
    }
    out
}

/// This machine's memory (`MemTotal` in `/proc/meminfo`): the most a
/// local sandbox can be given, and what `doctor` weighs warm pools against.
pub(crate) fn machine_memory(machine: &dyn Machine) -> Option<u64> {
    let text = machine.read(Path::new("/proc/meminfo")).ok()?;
    let text = String::from_utf8_lossy(&text);
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `DELEGATE_REPO_ROOTS`: the directories `repo.path` may be under.
fn repo_roots(text: Option<&str>) -> Result<Vec<PathBuf>, SettingsError> {
    let mut roots = Vec::new();
    for part in text.unwrap_or_default().split(':').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let path = PathBuf::from(part);
        if !path.is_absolute() {
            return Err(invalid(
                "DELEGATE_REPO_ROOTS",
                format!("{part:?} is not an absolute path"),
            ));
        }
        roots.push(path);
    }
    Ok(roots)
}

fn budget(usd: Option<f64>) -> Result<Option<f64>, SettingsError> {
    match usd {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(invalid(
            "DELEGATE_MAX_BUDGET_USD",
            format!("must be a number of US dollars above 0, got {v}"),
        )),
        other => Ok(other),
    }
}

/// `DELEGATE_POOL`, for providers that keep idle VMs.
fn pool_classes(
    text: Option<&str>,
    provider: ProviderKind,
) -> Result<Vec<PoolClass>, SettingsError> {
    let classes =
        parse_pool(text.unwrap_or("")).map_err(|e| invalid("DELEGATE_POOL", e.to_string()))?;
    match provider {
        _ if classes.is_empty() => {}
        ProviderKind::Proxmox => {}
        ProviderKind::Qemu => {
            // The qemu provider pools micro VMs only: a disk image's own
            // init would need the pool's bootstrap port too.
            let micro = crate::provider::qemu::MICRO_TEMPLATE;
            if let Some(c) = classes.iter().find(|c| c.template != micro) {
                return Err(invalid(
                    "DELEGATE_POOL",
                    format!(
                        "{}: the qemu provider pools micro VMs only; name the class \
                         {micro}:{} (a job without vmTemplate, or with vmTemplate {micro}, \
                         takes them)",
                        c.key(),
                        c.size_text
                    ),
                ));
            }
        }
        ProviderKind::Local => {
            return Err(invalid(
                "DELEGATE_POOL",
                format!(
                    "warm pools need DELEGATE_PROVIDER=proxmox or qemu; the {} provider \
                     keeps no idle VMs",
                    provider.as_str()
                ),
            ));
        }
    }
    Ok(classes)
}

/// A duration in seconds (`90`) or with units (`30m`, `2h`), above zero.
fn duration(setting: &'static str, text: &str) -> Result<Duration, SettingsError> {
    let text = text.trim();
    let d = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            invalid(
                setting,
                format!("{text:?} is not a duration like 3600, 30m or 2h: {e}"),
            )
        })?,
    };
    if d.is_zero() {
        return Err(invalid(setting, "must be more than 0 seconds"));
    }
    Ok(d)
}

fn size(setting: &'static str, text: &str) -> Result<u64, SettingsError> {
    match parse_size(text) {
        Ok(0) => Err(invalid(setting, "must be more than 0 bytes")),
        Ok(n) => Ok(n),
        Err(e) => Err(invalid(setting, e.to_string())),
    }
}

fn check_url(url: &str) -> Result<String, SettingsError> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            invalid(
                "CALLBACK_URL",
                format!("{url:?} must start with http:// or https://"),
            )
        })?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(invalid(
            "CALLBACK_URL",
            format!("{url:?} must be a base URL like http://10.0.0.1:8765"),
        ));
    }
    Ok(url.to_string())
}

/// The callback URL guests get when `CALLBACK_URL` is not set, derived
/// from the address the callback API listens on.
pub fn derive_callback_url(
    provider: ProviderKind,
    bind: SocketAddr,
) -> Result<String, SettingsError> {
    let port = bind.port();
    match (provider, bind.ip()) {
        // QEMU VMs reach the callback through a relay this host runs.
        (ProviderKind::Local | ProviderKind::Qemu, ip)
            if ip.is_unspecified() || ip.is_loopback() =>
        {
            Ok(format!("http://127.0.0.1:{port}"))
        }
        (_, ip) if !ip.is_unspecified() && !ip.is_loopback() => Ok(match ip {
            IpAddr::V4(v4) => format!("http://{v4}:{port}"),
            IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
        }),
        (ProviderKind::Local | ProviderKind::Qemu, ip) => Ok(format!("http://{ip}:{port}")),
        (p, _) => Err(invalid(
            "CALLBACK_URL",
            format!(
                "must be set for the {} provider when CALLBACK_HOST is {}: \
                 VMs need an address of this host that they can reach",
                p.as_str(),
                bind.ip()
            ),
        )),
    }
}

fn check_token(setting: &'static str, token: String) -> Result<Secret, SettingsError> {
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            setting,
            "the token must be at least 16 printable characters without spaces",
        ));
    }
    Ok(Secret::new(token))
}

fn clean_list(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
