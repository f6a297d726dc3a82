//! A Proxmox VE API simulator, faithful where the provider depends on it.
//!
//! It serves `/api2/json` over HTTPS on 127.0.0.1 (port 0) and checks every
//! request against the official schema (`tests/data/pve/api-9.0-subset.json`):
//! parameters, privileges (PVE 9's guest-agent privileges, or PVE 8's
//! `VM.Monitor`), auth by API token or ticket + CSRF. Long operations are
//! tasks with UPIDs and logs; clones hold `lock: clone`; a started VM's guest
//! agent answers after a boot delay; and the bootstrap written through the
//! agent starts a real `delegate-guest` process, killed with the VM. Errors
//! carry PVE's real messages (`tests/data/pve/errors.txt`). Faults can be
//! injected: failed clones, lock timeouts, an agent that never comes up,
//! offline nodes (595), task errors, slow tasks, a VM dying mid-job. VM
//! firewalls (options and rules) are kept per VM so tests can assert them.

pub mod agent;
pub mod firewall;
pub mod formats;
pub mod guest;
pub mod http;
pub mod ops;
pub mod perms;
pub mod schema;
pub mod state;
pub mod tasks;
pub mod tls;
pub mod vm_ops;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use guest::GuestCommand;
pub use perms::{Grant, Principal};
pub use state::{
    BootstrapWrite, Cluster, Faults, Node, PveVersion, Storage, Timings, Vm, VmFirewall,
};

/// Where the provider writes the bootstrap, and the template's `.path` unit
/// watches.
pub const BOOTSTRAP_PATH: &str = "/run/delegate/bootstrap.json";

/// The token every standard cluster knows.
pub const TOKEN_ID: &str = "delegate@pve!host";
/// Its secret.
pub const TOKEN_SECRET: &str = "8a3c9c2e-5b1f-4d7a-9e0b-1c2d3e4f5a6b";
/// A user for ticket logins.
pub const USER: &str = "delegate@pve";
/// Its password.
pub const PASSWORD: &str = "correct horse battery staple";

/// A live ticket.
#[derive(Debug, Clone)]
pub struct TicketEntry {
    /// Who it belongs to.
    pub principal: Principal,
    /// Its CSRF token.
    pub csrf: String,
    /// When it was issued.
    pub issued: Instant,
}

/// Shared state behind the server.
pub struct SimInner {
    cluster: Mutex<Cluster>,
    /// API tokens: id → (secret, principal).
    pub tokens: Mutex<HashMap<String, (String, Principal)>>,
    /// Users: id → (password, principal).
    pub users: HashMap<String, (String, Principal)>,
    /// Issued tickets.
    pub tickets: Mutex<HashMap<String, TicketEntry>>,
    /// How long a ticket is valid.
    pub ticket_lifetime: Duration,
    /// Tickets renewed with an old ticket as password.
    pub renewals: AtomicU64,
    /// Requests served.
    pub requests: AtomicU64,
    /// How guests are started (none: VMs run nothing).
    pub guest: Option<GuestCommand>,
    /// Where VM directories live.
    pub root: PathBuf,
    /// The node certificate's fingerprint as PVE shows it.
    pub fingerprint_text: String,
}

impl SimInner {
    /// The cluster, locked.
    pub fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A template to seed.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    /// VMID.
    pub vmid: u32,
    /// Name (what `DEFAULT_VM_TEMPLATE` names).
    pub name: String,
    /// Node holding its config.
    pub node: String,
    /// Storage of its disk.
    pub storage: String,
    /// Bridge of its NIC.
    pub bridge: String,
}

/// How to build a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Release imitated.
    pub version: PveVersion,
    /// Nodes.
    pub nodes: Vec<(String, Node)>,
    /// Storages.
    pub storages: Vec<(String, Storage)>,
    /// Templates.
    pub templates: Vec<TemplateSpec>,
    /// Pools.
    pub pools: Vec<String>,
    /// Timings.
    pub timings: Timings,
    /// Guest runner command.
    pub guest: Option<GuestCommand>,
    /// Privileges of [`TOKEN_ID`] and [`USER`] (default: the delegate role
    /// on `/`).
    pub grants: Option<Vec<Grant>>,
    /// Ticket lifetime (PVE: two hours).
    pub ticket_lifetime: Duration,
}

impl SimConfig {
    /// Three nodes (`pve1..3`, 64 GiB each, `pve2` the emptiest), local
    /// LVM-thin on each, shared Ceph RBD, a `dir` storage without linked
    /// clones; template 9000 `delegate-template` on Ceph and template 9001
    /// `delegate-local` on pve1's local-lvm; pool `delegate`.
    pub fn standard() -> Self {
        let gib = 1024 * 1024 * 1024u64;
        let node = |base_gib: u64| Node {
            online: true,
            maxmem: 64 * gib,
            base_mem: base_gib * gib,
            maxcpu: 16,
        };
        SimConfig {
            version: PveVersion::V9,
            nodes: vec![
                ("pve1".into(), node(20)),
                ("pve2".into(), node(8)),
                ("pve3".into(), node(14)),
            ],
            storages: vec![
                (
                    "local-lvm".into(),
                    Storage {
                        kind: "lvmthin".into(),
                        shared: false,
                        nodes: None,
                        content: "images,rootdir".into(),
                        total: 2048 * gib,
                    },
                ),
                (
                    "ceph".into(),
                    Storage {
                        kind: "rbd".into(),
                        shared: true,
                        nodes: None,
                        content: "images".into(),
                        total: 8192 * gib,
                    },
                ),
                (
                    "local".into(),
                    Storage {
                        kind: "dir".into(),
                        shared: false,
                        nodes: None,
                        content: "iso,vztmpl,backup,images".into(),
                        total: 512 * gib,
                    },
                ),
            ],
            templates: vec![
                TemplateSpec {
                    vmid: 9000,
                    name: "delegate-template".into(),
                    node: "pve1".into(),
                    storage: "ceph".into(),
                    bridge: "vmbr0".into(),
                },
                TemplateSpec {
                    vmid: 9001,
                    name: "delegate-local".into(),
                    node: "pve1".into(),
                    storage: "local-lvm".into(),
                    bridge: "vmbr0".into(),
                },
            ],
            pools: vec!["delegate".into()],
            timings: Timings::default(),
            guest: None,
            grants: None,
            ticket_lifetime: Duration::from_secs(2 * 3600),
        }
    }
}

/// A running simulator. Dropping it stops the server and kills every guest.
pub struct PveSim {
    inner: Arc<SimInner>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    /// The node certificate's SHA-256.
    pub fingerprint: [u8; 32],
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn template_config(t: &TemplateSpec) -> BTreeMap<String, String> {
    let mut c = BTreeMap::new();
    c.insert("name".into(), t.name.clone());
    c.insert("template".into(), "1".into());
    c.insert("cores".into(), "1".into());
    c.insert("memory".into(), "1024".into());
    c.insert("agent".into(), "enabled=1".into());
    c.insert("ostype".into(), "l26".into());
    c.insert("scsihw".into(), "virtio-scsi-pci".into());
    c.insert(
        "scsi0".into(),
        format!("{}:base-{}-disk-0,size=8G", t.storage, t.vmid),
    );
    c.insert("boot".into(), "order=scsi0".into());
    c.insert(
        "net0".into(),
        format!(
            "virtio=BC:24:11:00:{:02X}:01,bridge={}",
            t.vmid % 256,
            t.bridge
        ),
    );
    c.insert(
        "smbios1".into(),
        "uuid=5d2c9b1e-8f3a-4c6d-9e7f-0a1b2c3d4e5f".into(),
    );
    c.insert(
        "vmgenid".into(),
        "7f1f2a5e-2b0e-4a55-9d8c-3e0f1a2b3c4d".into(),
    );
    c
}

impl PveSim {
    /// Builds the cluster and serves it on 127.0.0.1, port 0.
    pub async fn start(cfg: SimConfig) -> std::io::Result<PveSim> {
        let certs = tls::generate().map_err(std::io::Error::other)?;
        let dir = tempfile::tempdir()?;
        let mut cluster = Cluster {
            version: cfg.version,
            nodes: cfg.nodes.into_iter().collect(),
            storages: cfg.storages.into_iter().collect(),
            vms: BTreeMap::new(),
            tasks: HashMap::new(),
            pools: cfg.pools.into_iter().map(|p| (p, ())).collect(),
            faults: Faults::default(),
            timings: cfg.timings,
            next_pid: 0x1000,
            clones_running: BTreeMap::new(),
            clones_peak: BTreeMap::new(),
            clones_total: BTreeMap::new(),
            bootstrap_writes_started: 0,
            bootstraps: Vec::new(),
            firewalls: BTreeMap::new(),
            cluster_firewall: BTreeMap::new(),
        };
        for t in &cfg.templates {
            let root = dir.path().join(format!("vm-{}", t.vmid));
            std::fs::create_dir_all(&root)?;
            cluster.vms.insert(
                t.vmid,
                Vm {
                    vmid: t.vmid,
                    node: t.node.clone(),
                    config: template_config(t),
                    running: false,
                    agent_ready_at: None,
                    started_at: None,
                    pool: None,
                    guest: None,
                    root,
                    created: Instant::now(),
                },
            );
        }
        let pve8 = cfg.version == PveVersion::V8;
        let grants = cfg.grants.unwrap_or_else(|| {
            vec![Grant {
                path: "/".into(),
                privs: perms::delegate_role(pve8),
                propagate: true,
            }]
        });
        let mut tokens = HashMap::new();
        tokens.insert(
            TOKEN_ID.to_string(),
            (
                TOKEN_SECRET.to_string(),
                Principal::with_grants(TOKEN_ID, grants.clone()),
            ),
        );
        let mut users = HashMap::new();
        users.insert(
            USER.to_string(),
            (PASSWORD.to_string(), Principal::with_grants(USER, grants)),
        );
        users.insert(
            "root@pam".to_string(),
            ("rootpw".to_string(), Principal::root("root@pam")),
        );
        let fingerprint_text = certs
            .leaf_fingerprint
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let inner = Arc::new(SimInner {
            cluster: Mutex::new(cluster),
            tokens: Mutex::new(tokens),
            users,
            tickets: Mutex::new(HashMap::new()),
            ticket_lifetime: cfg.ticket_lifetime,
            renewals: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            guest: cfg.guest,
            root: dir.path().to_path_buf(),
            fingerprint_text,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = axum::Router::new()
            .fallback(http::handle)
            .with_state(inner.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server.clone());
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let router = router.clone();
                tokio::spawn(async move {
                    // A client that rejects our certificate ends here.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let svc = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Ok(PveSim {
            inner,
            url: format!("https://127.0.0.1:{}", addr.port()),
            ca_pem: certs.ca_pem,
            fingerprint: certs.leaf_fingerprint,
            server,
            _dir: dir,
        })
    }

    /// Runs `f` on the locked cluster (inspect or change it).
    pub fn with<R>(&self, f: impl FnOnce(&mut Cluster) -> R) -> R {
        f(&mut self.inner.lock())
    }

    /// Changes the faults.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.inner.lock().faults);
    }

    /// Takes a node off the network (requests for it answer 595) or back.
    pub fn set_node_online(&self, node: &str, online: bool) {
        if let Some(n) = self.inner.lock().nodes.get_mut(node) {
            n.online = online;
        }
    }

    /// The VM dies mid-job: QEMU exits, its guest processes with it.
    pub fn crash_vm(&self, vmid: u32) -> bool {
        match self.inner.lock().vms.get_mut(&vmid) {
            Some(vm) => {
                vm_ops::power_off(vm);
                true
            }
            None => false,
        }
    }

    /// The VM is deleted behind the host's back (by another tool or
    /// person): powered off, then removed with its config.
    pub fn delete_vm(&self, vmid: u32) -> bool {
        match self.inner.lock().vms.remove(&vmid) {
            Some(mut vm) => {
                vm_ops::power_off(&mut vm);
                true
            }
            None => false,
        }
    }

    /// VMIDs that are not templates.
    pub fn guest_vmids(&self) -> Vec<u32> {
        self.inner
            .lock()
            .vms
            .values()
            .filter(|v| !v.is_template())
            .map(|v| v.vmid)
            .collect()
    }

    /// Pids of running guest processes.
    pub fn guest_pids(&self) -> Vec<u32> {
        self.inner
            .lock()
            .vms
            .values_mut()
            .filter_map(|v| {
                let g = v.guest.as_mut()?;
                g.alive().then_some(g.pid)
            })
            .collect()
    }

    /// The directory standing in for a VM's disk.
    pub fn vm_root(&self, vmid: u32) -> Option<PathBuf> {
        self.inner.lock().vms.get(&vmid).map(|v| v.root.clone())
    }

    /// Adds (or replaces) an API token with its own grants.
    pub fn add_token(&self, id: &str, secret: &str, grants: Vec<Grant>) {
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.to_string(),
                (secret.to_string(), Principal::with_grants(id, grants)),
            );
    }

    /// Tickets renewed by presenting an old ticket.
    pub fn ticket_renewals(&self) -> u64 {
        self.inner
            .renewals
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.inner
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The node certificate fingerprint as `AB:CD:...`.
    pub fn fingerprint_text(&self) -> String {
        self.inner.fingerprint_text.clone()
    }
}

impl Drop for PveSim {
    fn drop(&mut self) {
        self.server.abort();
        for vm in self.inner.lock().vms.values_mut() {
            vm_ops::power_off(vm);
        }
    }
}
