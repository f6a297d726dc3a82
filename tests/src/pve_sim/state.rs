//! The simulated cluster: nodes, storages, VMs with their configuration
//! text, tasks with logs, pools, and the faults to inject. One mutex guards
//! it; handlers never hold it across an await.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::guest::GuestProcess;

/// Which PVE release to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PveVersion {
    /// 8.4: guest-agent calls check `VM.Monitor`.
    V8,
    /// 9.0: guest-agent calls check `VM.GuestAgent.*`.
    V9,
}

/// A node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Reachable.
    pub online: bool,
    /// Memory in bytes.
    pub maxmem: u64,
    /// Memory used by things other than our VMs.
    pub base_mem: u64,
    /// CPUs.
    pub maxcpu: u32,
}

/// A storage.
#[derive(Debug, Clone)]
pub struct Storage {
    /// `lvmthin`, `zfspool`, `rbd`, `dir`, `lvm`, ...
    pub kind: String,
    /// Same content on every node.
    pub shared: bool,
    /// Nodes it is available on (`None`: all).
    pub nodes: Option<Vec<String>>,
    /// Content types.
    pub content: String,
    /// Size in bytes.
    pub total: u64,
}

impl Storage {
    /// Whether linked clones work on it.
    pub fn supports_linked_clone(&self) -> bool {
        matches!(self.kind.as_str(), "lvmthin" | "zfspool" | "rbd")
    }
    /// Whether it exists on `node`.
    pub fn on(&self, node: &str) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|n| n.iter().any(|x| x == node))
    }
}

/// A VM.
#[derive(Debug)]
pub struct Vm {
    /// VMID.
    pub vmid: u32,
    /// Its node.
    pub node: String,
    /// Config keys as PVE stores them (text).
    pub config: BTreeMap<String, String>,
    /// Running.
    pub running: bool,
    /// When the agent starts answering (None: never / not running).
    pub agent_ready_at: Option<Instant>,
    /// When it started.
    pub started_at: Option<Instant>,
    /// Pool membership.
    pub pool: Option<String>,
    /// Its guest runner, once the bootstrap arrived.
    pub guest: Option<GuestProcess>,
    /// Directory standing in for its root filesystem.
    pub root: std::path::PathBuf,
    /// When it was created.
    pub created: Instant,
}

impl Vm {
    /// The config lock.
    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }
    /// Whether it is a template.
    pub fn is_template(&self) -> bool {
        self.config.get("template").is_some_and(|v| v == "1")
    }
    /// Memory in MiB from the config.
    pub fn memory_mib(&self) -> u64 {
        self.config
            .get("memory")
            .and_then(|m| {
                m.trim_start_matches("current=")
                    .split(',')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(512)
    }
    /// Whether the guest agent is enabled in the config.
    pub fn agent_enabled(&self) -> bool {
        self.config.get("agent").is_some_and(|a| {
            let first = a.split(',').next().unwrap_or("");
            let v = first.strip_prefix("enabled=").unwrap_or(first);
            super::schema::parse_bool(v) == Some(true)
        })
    }
    /// The config digest (PVE: SHA1 of the file; here a 40-hex SHA-256 prefix).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.config {
            h.update(k.as_bytes());
            h.update(b": ");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        let full: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        full[..40].to_string()
    }
    /// Disks: key → (storage, volume name, size text).
    pub fn disks(&self) -> Vec<(String, String, String)> {
        self.config
            .iter()
            .filter(|(k, v)| is_disk_key(k) && !v.contains("media=cdrom"))
            .filter_map(|(k, v)| {
                let vol = v.split(',').next()?;
                let (storage, _) = vol.split_once(':')?;
                Some((k.clone(), storage.to_string(), vol.to_string()))
            })
            .collect()
    }
}

/// `scsi0`, `virtio1`, `sata2`, `ide3`, `efidisk0`, ...
pub fn is_disk_key(k: &str) -> bool {
    ["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"]
        .iter()
        .any(|b| {
            k.strip_prefix(b)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        })
}

/// A task.
#[derive(Debug, Clone)]
pub struct Task {
    /// UPID.
    pub upid: String,
    /// Node.
    pub node: String,
    /// Type.
    pub kind: String,
    /// Object id.
    pub id: String,
    /// Who started it.
    pub user: String,
    /// Worker pid (in the UPID).
    pub pid: u32,
    /// Start, unix seconds.
    pub starttime: u64,
    /// `None` while running.
    pub exitstatus: Option<String>,
    /// Log lines.
    pub log: Vec<String>,
}

/// Faults to inject; counters count down as they fire.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// The next N clone tasks fail with `clone failed: ...`.
    pub clone_failures: u32,
    /// The next N config writes fail with `can't lock file ... got timeout`.
    pub config_lock_timeouts: u32,
    /// The next N config writes fail with a `cfs-lock` timeout.
    pub cfs_lock_timeouts: u32,
    /// The next N start tasks fail.
    pub start_failures: u32,
    /// The next N destroy tasks fail with the VM locked.
    pub destroy_lock_failures: u32,
    /// Started VMs' agents never answer.
    pub agent_never_ready: bool,
    /// Clone tasks never finish (the new VM stays `lock: clone`).
    pub clone_hangs: bool,
    /// Every task takes this much longer.
    pub extra_task_delay: Duration,
    /// The next N requests answer `500 Internal Server Error` (a 5xx
    /// without a known cause).
    pub server_errors: u32,
    /// The next clone finds its VMID taken by someone else just before it
    /// (another tool raced us to the id).
    pub steal_next_vmid: bool,
    /// Errors answer with only the status line and `errors`, no `message`
    /// in the body (older pve-http-server).
    pub legacy_error_shape: bool,
}

/// How long things take.
#[derive(Debug, Clone)]
pub struct Timings {
    /// A linked clone.
    pub linked_clone: Duration,
    /// A full clone (copies the disk).
    pub full_clone: Duration,
    /// VM start.
    pub start: Duration,
    /// Hard stop.
    pub stop: Duration,
    /// Destroy.
    pub destroy: Duration,
    /// Disk resize.
    pub resize: Duration,
    /// From start until the guest agent answers.
    pub agent_boot: Duration,
    /// Every API request (network + pveproxy), before it is answered.
    pub request_latency: Duration,
    /// A guest agent `file-write`, on top of the request latency.
    pub file_write: Duration,
}

impl Timings {
    /// Every delay divided by `factor` (at least 1), for quick runs of
    /// realistic timings.
    pub fn scaled_down(&self, factor: u32) -> Timings {
        let f = factor.max(1);
        Timings {
            linked_clone: self.linked_clone / f,
            full_clone: self.full_clone / f,
            start: self.start / f,
            stop: self.stop / f,
            destroy: self.destroy / f,
            resize: self.resize / f,
            agent_boot: self.agent_boot / f,
            request_latency: self.request_latency / f,
            file_write: self.file_write / f,
        }
    }
}

/// A bootstrap the guest agent wrote into a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapWrite {
    /// The VM's id.
    pub vmid: u32,
    /// When that VM was created (VMIDs are reused; this tells VMs apart).
    pub vm_created: Instant,
    /// The job the bootstrap names.
    pub job_id: String,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            linked_clone: Duration::from_millis(200),
            full_clone: Duration::from_millis(1500),
            start: Duration::from_millis(200),
            stop: Duration::from_millis(100),
            destroy: Duration::from_millis(150),
            resize: Duration::from_millis(50),
            agent_boot: Duration::from_millis(600),
            request_latency: Duration::ZERO,
            file_write: Duration::ZERO,
        }
    }
}

/// The whole cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Release imitated.
    pub version: PveVersion,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Storages by id.
    pub storages: BTreeMap<String, Storage>,
    /// VMs by VMID.
    pub vms: BTreeMap<u32, Vm>,
    /// Tasks by UPID.
    pub tasks: HashMap<String, Task>,
    /// Pools.
    pub pools: BTreeMap<String, ()>,
    /// Faults.
    pub faults: Faults,
    /// Timings.
    pub timings: Timings,
    /// Next worker pid for UPIDs.
    pub next_pid: u32,
    /// Running clone tasks per node, and the most seen at once (for tests
    /// of the provider's caps).
    pub clones_running: BTreeMap<String, u32>,
    /// Highest concurrent clones per node observed.
    pub clones_peak: BTreeMap<String, u32>,
    /// Clones started per node over the run.
    pub clones_total: BTreeMap<String, u32>,
    /// Bootstrap `file-write`s received (counted before they take effect).
    pub bootstrap_writes_started: u64,
    /// Bootstraps written, in order.
    pub bootstraps: Vec<BootstrapWrite>,
    /// Each VM's firewall (`/etc/pve/firewall/<vmid>.fw`), copied by a
    /// clone and removed with the VM.
    pub firewalls: BTreeMap<u32, VmFirewall>,
    /// The datacenter firewall's options (`/etc/pve/firewall/cluster.fw`).
    pub cluster_firewall: BTreeMap<String, String>,
}

/// A VM's firewall: options and rules, as the API was given them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFirewall {
    /// `enable`, `policy_in`, `policy_out`, `dhcp`, ...
    pub options: BTreeMap<String, String>,
    /// Rules in order (position 0 first), without `pos`.
    pub rules: Vec<BTreeMap<String, String>>,
}

impl Cluster {
    /// Memory in use on a node: its base plus running VMs.
    pub fn node_mem(&self, node: &str) -> u64 {
        let base = self.nodes.get(node).map_or(0, |n| n.base_mem);
        base + self
            .vms
            .values()
            .filter(|v| v.node == node && v.running)
            .map(|v| v.memory_mib() * 1024 * 1024)
            .sum::<u64>()
    }

    /// Whether the node exists and is up.
    pub fn node_online(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.online)
    }

    /// `Configuration file 'nodes/N/qemu-server/ID.conf' does not exist`.
    pub fn missing_config(node: &str, vmid: u32) -> String {
        format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")
    }

    /// The VM on `node`, or PVE's error.
    pub fn vm_on(&self, node: &str, vmid: u32) -> Result<&Vm, String> {
        self.vms
            .get(&vmid)
            .filter(|v| v.node == node)
            .ok_or_else(|| Self::missing_config(node, vmid))
    }

    /// Mutable access to the VM on `node`.
    pub fn vm_on_mut(&mut self, node: &str, vmid: u32) -> Result<&mut Vm, String> {
        self.vms
            .get_mut(&vmid)
            .filter(|v| v.node == node)
            .ok_or_else(|| Self::missing_config(node, vmid))
    }

    /// The VM wherever it is now (a task's work, which runs after its
    /// request), or PVE's error.
    pub fn vm_mut(&mut self, vmid: u32) -> Result<&mut Vm, String> {
        self.vms
            .get_mut(&vmid)
            .ok_or_else(|| Self::missing_config("?", vmid))
    }
}

/// Uses up one of the next-N faults of `count`: true when there was one.
pub fn take_fault(count: &mut u32) -> bool {
    let left = *count > 0;
    if left {
        *count -= 1;
    }
    left
}
