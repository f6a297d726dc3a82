//! [`ProxmoxProvider`]: the [`Provider`] trait over the PVE API.
//!
//! Provisioning, in order: find the template's copies and the nodes that
//! can host a clone; place (most free memory, clone caps); pick a VMID from
//! our range; clone (linked when possible, description already carrying our
//! metadata, so even a VM still locked by its clone is recognisably ours);
//! report the VM to the caller at once; wait for the clone task; configure
//! (cores, memory, tags, description, smbios1 serial), grow the disk; start;
//! wait for the guest agent; write the bootstrap with `file-write`.
//! Destroying and listing are in [`super::cleanup`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delegate_proto::Bootstrap;

use super::client::api::CloneOptions;
use super::client::{FailureKind, Params, PveClient, PveError};
use super::firewall::{self, FirewallMode, FirewallState, Target};
use super::metadata::{self, VmMeta};
use super::placement::{self, Slots, StorageFacts, TemplateCopy};
use super::settings::{CloneMode, ProxmoxSettings};
use super::vmid::VmidAllocator;
use crate::clock::now_ms;
use crate::provider::{
    IdleRequest, IdleVm, Isolation, OwnedVm, Provider, ProviderError, ProvisionRequest, VmRef,
    VmSize,
};
use crate::retry::RetryPolicy;

/// How long each PVE task may take.
#[derive(Debug, Clone)]
pub struct TaskTimeouts {
    /// Clone (a full clone copies the disk).
    pub clone: Duration,
    /// Start, stop, resize.
    pub power: Duration,
    /// Destroy.
    pub destroy: Duration,
}

impl Default for TaskTimeouts {
    fn default() -> Self {
        TaskTimeouts {
            clone: Duration::from_secs(30 * 60),
            power: Duration::from_secs(5 * 60),
            destroy: Duration::from_secs(10 * 60),
        }
    }
}

/// Clone attempts: a busy or locked PVE is retried after a short wait; a
/// VMID someone else took meanwhile is retried with the next one.
const CLONE_RETRY: RetryPolicy =
    RetryPolicy::new(8, Duration::from_millis(200), Duration::from_millis(1600));

/// Pings of a starting VM's guest agent: quick at first (agents usually
/// answer within seconds), then every 3 s; the limit is the time budget
/// `PROXMOX_AGENT_WAIT_SECONDS`, not a count. No jitter: this polls one VM.
const AGENT_POLL: RetryPolicy =
    RetryPolicy::new(u32::MAX, Duration::from_millis(100), Duration::from_secs(3)).without_jitter();

/// The Proxmox VE provider.
pub struct ProxmoxProvider {
    pub(super) client: PveClient,
    pub(super) settings: Arc<ProxmoxSettings>,
    pub(super) vmids: VmidAllocator,
    pub(super) slots: Arc<Slots>,
    pub(super) timeouts: TaskTimeouts,
    /// PVE major version, once seen.
    pub(super) major: Arc<std::sync::OnceLock<u32>>,
    /// Whether the last VM's egress was firewalled.
    pub(super) firewall: Arc<FirewallState>,
}

fn fail(stage: &str, e: &PveError) -> ProviderError {
    ProviderError::Provision {
        message: format!("{stage}: {e}"),
        retryable: e.is_retryable(),
    }
}

fn permanent(message: String) -> ProviderError {
    ProviderError::Provision {
        message,
        retryable: false,
    }
}

impl ProxmoxProvider {
    /// Connects: builds the client, logs where the settings came from, and
    /// reads the PVE version (failing clearly when the API is unreachable or
    /// refuses the credentials).
    pub async fn connect(settings: ProxmoxSettings) -> Result<Self, ProviderError> {
        for origin in &settings.origins {
            tracing::info!("proxmox: {origin}");
        }
        let client =
            PveClient::new(&settings).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let p = Self::with_client(client, settings);
        let v = p.client.version().await.map_err(|e| {
            ProviderError::Unavailable(format!(
                "cannot use the Proxmox API at {}: {e}",
                p.settings.url
            ))
        })?;
        if let Some(m) = v.major() {
            let _ = p.major.set(m);
        }
        tracing::info!(version = %v.version, release = %v.release, "proxmox: connected");
        Ok(p)
    }

    /// A provider over an existing client (no network until used).
    pub fn with_client(client: PveClient, settings: ProxmoxSettings) -> Self {
        ProxmoxProvider {
            vmids: VmidAllocator::new(settings.vmid_range.clone()),
            slots: Slots::new(
                settings.max_clones_per_node,
                settings.max_clones_per_storage,
            ),
            client,
            settings: Arc::new(settings),
            timeouts: TaskTimeouts::default(),
            major: Arc::default(),
            firewall: Arc::default(),
        }
    }

    /// Replaces the task timeouts.
    pub fn with_timeouts(mut self, t: TaskTimeouts) -> Self {
        self.timeouts = t;
        self
    }

    /// The API client.
    pub fn client(&self) -> &PveClient {
        &self.client
    }

    /// The settings.
    pub fn settings(&self) -> &ProxmoxSettings {
        &self.settings
    }

    /// The PVE major version, once seen.
    pub fn pve_major(&self) -> Option<u32> {
        self.major.get().copied()
    }

    /// Builds the provider from its settings without waiting for the
    /// network: the version is read in the background and logged, and the
    /// first job reports any connection problem. (`doctor` checks a setup
    /// up front.)
    pub fn from_settings(px: ProxmoxSettings) -> Result<Self, ProviderError> {
        for origin in &px.origins {
            tracing::info!("proxmox: {origin}");
        }
        let client = PveClient::new(&px).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let p = Self::with_client(client, px);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let client = p.client.clone();
            let major = p.major.clone();
            let url = p.settings.url.clone();
            rt.spawn(async move {
                match client.version().await {
                    Ok(v) => {
                        tracing::info!(version = %v.version, "proxmox: connected to {url}");
                        if let Some(m) = v.major() {
                            let _ = major.set(m);
                        }
                    }
                    Err(e) => tracing::error!("proxmox: cannot use the API at {url}: {e}"),
                }
            });
        }
        Ok(p)
    }

    /// The template's copies (name or VMID) with their facts.
    async fn template_copies(
        &self,
        wanted: &str,
        res: &[super::client::wire::Resource],
        facts: &StorageFacts,
    ) -> Result<Vec<TemplateCopy>, ProviderError> {
        let found = placement::find_templates(res, wanted);
        if found.is_empty() {
            return Err(permanent(format!(
                "template {wanted:?} not found: no template VM with that name or VMID is \
                 visible to {} (check DEFAULT_VM_TEMPLATE / vmTemplate and VM.Audit on it)",
                self.client.principal()
            )));
        }
        let mut copies = Vec::new();
        let mut last_err = None;
        for (vmid, node) in found {
            match self.client.vm_config(&node, vmid).await {
                Ok(cfg) => copies.push(placement::describe_copy(vmid, &node, &cfg, facts)),
                Err(e) => last_err = Some(e),
            }
        }
        if copies.is_empty() {
            let e = last_err.expect("found was not empty");
            return Err(fail(&format!("reading template {wanted:?}"), &e));
        }
        Ok(copies)
    }

    /// Chooses node and copy, waiting for a clone slot.
    async fn place(
        &self,
        template: &str,
        mem_bytes: u64,
    ) -> Result<(placement::Placement, TemplateCopy, bool, BTreeSet<u32>), ProviderError> {
        let res = self
            .client
            .resources(None)
            .await
            .map_err(|e| fail("listing cluster resources", &e))?;
        let facts = StorageFacts::from_resources(&res);
        let copies = self.template_copies(template, &res, &facts).await?;
        let online: Vec<String> = res
            .iter()
            .filter(|r| r.kind == "node" && r.status.as_deref() == Some("online"))
            .filter_map(|r| r.node.clone())
            .collect();
        let free: std::collections::BTreeMap<String, u64> = res
            .iter()
            .filter(|r| r.kind == "node" && r.status.as_deref() == Some("online"))
            .filter_map(|r| {
                Some((
                    r.node.clone()?,
                    r.maxmem.unwrap_or(0).saturating_sub(r.mem.unwrap_or(0)),
                ))
            })
            .collect();
        let used: BTreeSet<u32> = res
            .iter()
            .filter_map(|r| r.vmid.and_then(|v| u32::try_from(v).ok()))
            .collect();

        // (node, storage the clone writes to) → (copy, linked).
        let mut hosts = Vec::new();
        let mut choice = std::collections::BTreeMap::new();
        for copy in &copies {
            let linked = match self.settings.clone {
                CloneMode::Full => false,
                CloneMode::Auto => copy.is_template && copy.linked_ok,
                CloneMode::Linked => {
                    if !(copy.is_template && copy.linked_ok) {
                        continue;
                    }
                    true
                }
            };
            let storage = if linked {
                copy.storages.first().cloned()
            } else {
                self.settings
                    .storage
                    .clone()
                    .or_else(|| copy.storages.first().cloned())
            }
            .unwrap_or_default();
            for node in placement::hosts_for(copy, &facts, &online, self.settings.nodes.as_deref())
            {
                if let std::collections::btree_map::Entry::Vacant(slot) = choice.entry(node) {
                    hosts.push((slot.key().clone(), storage.clone()));
                    slot.insert((copy.clone(), linked));
                }
            }
        }
        if hosts.is_empty() {
            let why = if self.settings.clone == CloneMode::Linked {
                " with a linked clone (PROXMOX_CLONE=linked needs a template on storage that \
                 supports linked clones)"
            } else {
                ""
            };
            return Err(ProviderError::Provision {
                message: format!(
                    "no online node can host template {template:?}{why} (online: {}; allowed: {})",
                    online.join(","),
                    self.settings
                        .nodes
                        .as_ref()
                        .map_or_else(|| "all".into(), |n| n.join(","))
                ),
                retryable: self.settings.clone != CloneMode::Linked,
            });
        }
        loop {
            let freed = self.slots.freed();
            if let Some(p) = self.slots.try_place(&hosts, &free, mem_bytes) {
                let (copy, linked) = choice[&p.node].clone();
                return Ok((p, copy, linked, used));
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn provision_inner(
        &self,
        req: &ProvisionRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError> {
        let template = req.template.clone().ok_or_else(|| {
            permanent("no VM template: set DEFAULT_VM_TEMPLATE or the manifest's vmTemplate".into())
        })?;
        let meta = VmMeta {
            job_id: req.job_id.clone(),
            host_instance: self.settings.instance.clone(),
            created_ms: now_ms(),
            deadline_ms: req.deadline_ms,
            pool: None,
        };
        let egress = req
            .egress_url
            .as_deref()
            .or(req.bootstrap.egress_url.as_deref());
        let targets = self.firewall_targets(Some(&req.bootstrap.callback_url), egress);
        let (vm, node, vmid) = self
            .boot(&template, &meta, req.size, &targets, on_created)
            .await?;
        self.deliver(&node, vmid, &req.bootstrap).await?;
        Ok(vm)
    }

    /// What a VM's firewall lets through: the callback API and the egress
    /// gateway, each given here or else by the settings.
    pub(super) fn firewall_targets(
        &self,
        callback_url: Option<&str>,
        egress_url: Option<&str>,
    ) -> Vec<Target> {
        let fw = &self.settings.firewall;
        let callback = callback_url.or(fw.callback_url.as_deref());
        let egress = egress_url.or(fw.egress_url.as_deref());
        let mut out = Vec::new();
        for t in [
            callback.and_then(|u| firewall::target_of("callback", u)),
            egress.and_then(|u| firewall::target_of("gateway", u)),
        ]
        .into_iter()
        .flatten()
        {
            if !out
                .iter()
                .any(|o: &Target| o.host == t.host && o.port == t.port)
            {
                out.push(t);
            }
        }
        out
    }

    /// Why egress is not enforced by delegate on this host's VMs, when the
    /// last VM went without its firewall.
    pub fn egress_unenforced(&self) -> Option<String> {
        self.firewall.unenforced()
    }

    /// Firewalls a new VM per `DELEGATE_PROXMOX_FIREWALL`: `auto` carries
    /// on without the privilege (saying so), `required` fails.
    async fn apply_firewall(
        &self,
        node: &str,
        vmid: u32,
        targets: &[Target],
    ) -> Result<(), ProviderError> {
        let mode = self.settings.firewall.mode;
        if mode == FirewallMode::Off {
            return Ok(());
        }
        match firewall::apply(&self.client, node, vmid, targets).await {
            Ok(()) => {
                self.firewall.record(vmid, None);
                Ok(())
            }
            Err(e) if mode == FirewallMode::Auto && (e.is_forbidden() || targets.is_empty()) => {
                let why = format!(
                    "egress is not enforced by delegate: {e}; VM {vmid} relies on the \
                     network layout (grant {} or set DELEGATE_PROXMOX_FIREWALL=off)",
                    firewall::PRIVILEGE
                );
                tracing::warn!(vmid, "{why}");
                self.firewall.record(vmid, Some(why));
                Ok(())
            }
            Err(e) => {
                let retryable = match &e {
                    firewall::FirewallError::Api { source, .. } => source.is_retryable(),
                    _ => false,
                };
                let hint = if e.is_forbidden() {
                    format!(
                        " (DELEGATE_PROXMOX_FIREWALL=required: grant {} on /vms to {})",
                        firewall::PRIVILEGE,
                        self.client.principal()
                    )
                } else {
                    String::new()
                };
                Err(ProviderError::Provision {
                    message: format!("firewalling VM {vmid}: {e}{hint}"),
                    retryable,
                })
            }
        }
    }

    /// Clones `template` into a new VM carrying `meta`, configures and
    /// firewalls it (allowing `targets`), starts it and waits for its guest
    /// agent: everything but the bootstrap. The VM is named after
    /// `meta.job_id` (a job id, or a pool VM's own id).
    pub(super) async fn boot(
        &self,
        template: &str,
        meta: &VmMeta,
        size: VmSize,
        targets: &[Target],
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<(VmRef, String, u32), ProviderError> {
        let (placement, copy, linked, mut used) = self.place(template, size.memory_bytes).await?;
        let node = placement.node.clone();
        let opts = CloneOptions {
            full: !linked,
            storage: if linked {
                None
            } else {
                self.settings.storage.clone()
            },
            name: Some(metadata::vm_name(&meta.job_id)),
            description: Some(metadata::description(meta)),
            pool: self.settings.pool.clone(),
            target: Some(node.clone()),
        };

        // Clone, retrying with another VMID when someone else took ours.
        let mut attempt: u32 = 0;
        let (vmid, upid) = loop {
            attempt += 1;
            let more = attempt < CLONE_RETRY.attempts;
            let vmid = self
                .vmids
                .allocate(&used)
                .map_err(|e| permanent(e.to_string()))?;
            match self
                .client
                .clone_vm(&copy.node, copy.vmid, vmid, &opts)
                .await
            {
                Ok(upid) => break (vmid, upid),
                Err(e) if e.kind() == FailureKind::ConfigExists && more => {
                    tracing::info!(vmid, "VMID taken meanwhile, trying the next one");
                    used.insert(vmid);
                    self.vmids.release(vmid);
                }
                Err(e) if e.is_retryable() && more => {
                    // The clone may or may not have started: let the caller
                    // clean up whatever exists under this id.
                    self.vmids.release(vmid);
                    if matches!(e.kind(), FailureKind::Transient) {
                        on_created(vm_ref(vmid, &node));
                        return Err(fail(
                            &format!("cloning template {} on {}", copy.vmid, copy.node),
                            &e,
                        ));
                    }
                    tokio::time::sleep(CLONE_RETRY.delay(attempt)).await;
                }
                Err(e) => {
                    self.vmids.release(vmid);
                    return Err(fail(
                        &format!("cloning template {} on {}", copy.vmid, copy.node),
                        &e,
                    ));
                }
            }
        };
        let vm = vm_ref(vmid, &node);
        on_created(vm.clone());
        tracing::info!(job = %meta.job_id, vmid, node = %node, linked, template = copy.vmid, pool = ?meta.pool, "cloning");

        self.client
            .wait_task(&upid, self.timeouts.clone)
            .await
            .map_err(|e| {
                fail(
                    &format!("clone of template {} into VM {vmid}", copy.vmid),
                    &e,
                )
            })?;
        drop(placement.slot);

        self.configure(&node, vmid, meta, size).await?;
        self.apply_firewall(&node, vmid, targets).await?;
        self.client
            .start_vm(&node, vmid, self.timeouts.power)
            .await
            .map_err(|e| fail(&format!("starting VM {vmid}"), &e))?;
        drop(placement.promise);
        self.wait_for_agent(&node, vmid).await?;
        Ok((vm, node, vmid))
    }

    async fn configure(
        &self,
        node: &str,
        vmid: u32,
        meta: &VmMeta,
        size: VmSize,
    ) -> Result<(), ProviderError> {
        let tags = if meta.pool.is_some() {
            format!("{};{}", self.settings.tags(), metadata::POOL_TAG)
        } else {
            self.settings.tags()
        };
        let disk = size.disk_bytes;
        let cfg = self
            .client
            .vm_config(node, vmid)
            .await
            .map_err(|e| fail(&format!("reading VM {vmid}'s config"), &e))?;
        let params = Params::new()
            .int("cores", i64::from(size.cpus))
            .text(
                "memory",
                metadata::memory_mib(size.memory_bytes).to_string(),
            )
            .text("tags", tags)
            .text("description", metadata::description(meta))
            .text(
                "smbios1",
                metadata::smbios1(cfg.text("smbios1").as_deref(), &meta.job_id),
            );
        self.client
            .set_config(node, vmid, params)
            .await
            .map_err(|e| fail(&format!("configuring VM {vmid}"), &e))?;
        if let Some((key, _)) = cfg.disks().first() {
            let current = cfg.text(key).as_deref().and_then(metadata::disk_size);
            if current.is_some_and(|c| disk > c) {
                self.client
                    .resize(
                        node,
                        vmid,
                        key,
                        &metadata::size_text(disk),
                        self.timeouts.power,
                    )
                    .await
                    .map_err(|e| fail(&format!("growing VM {vmid}'s disk {key}"), &e))?;
            }
        }
        Ok(())
    }

    /// Pings the guest agent with backoff until it answers or the budget
    /// (`PROXMOX_AGENT_WAIT_SECONDS`) is spent.
    async fn wait_for_agent(&self, node: &str, vmid: u32) -> Result<(), ProviderError> {
        let started = Instant::now();
        let budget = self.settings.agent_wait;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let delay = AGENT_POLL.delay(attempt);
            match self.client.agent_ping(node, vmid).await {
                Ok(()) => {
                    tracing::debug!(
                        vmid,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "guest agent up"
                    );
                    return Ok(());
                }
                Err(e) => {
                    let waiting = matches!(
                        e.kind(),
                        FailureKind::AgentNotRunning | FailureKind::Transient | FailureKind::Locked
                    );
                    if !waiting {
                        return Err(fail(&format!("waiting for VM {vmid}'s guest agent"), &e));
                    }
                    if started.elapsed() + delay > budget {
                        return Err(ProviderError::Provision {
                            message: format!(
                                "VM {vmid}'s guest agent did not answer within {} s \
                                 (PROXMOX_AGENT_WAIT_SECONDS); last answer: {}",
                                budget.as_secs(),
                                e.message()
                            ),
                            retryable: true,
                        });
                    }
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Writes the whole bootstrap to `/run/delegate/bootstrap.json`.
    pub(super) async fn deliver(
        &self,
        node: &str,
        vmid: u32,
        b: &Bootstrap,
    ) -> Result<(), ProviderError> {
        let json = serde_json::to_string(b).map_err(|e| ProviderError::Other {
            context: "encoding the bootstrap".into(),
            source: Box::new(e),
        })?;
        self.client
            .agent_file_write(node, vmid, BOOTSTRAP_FILE, &json)
            .await
            .map_err(|e| fail(&format!("writing the bootstrap into VM {vmid}"), &e))
    }
}

/// Where the template's `.path` unit expects the bootstrap.
pub const BOOTSTRAP_FILE: &str = "/run/delegate/bootstrap.json";

pub(super) fn vm_ref(vmid: u32, node: &str) -> VmRef {
    VmRef {
        provider: "proxmox".into(),
        id: vmid.to_string(),
        node: Some(node.to_string()),
    }
}

#[async_trait::async_trait]
impl Provider for ProxmoxProvider {
    fn name(&self) -> &'static str {
        "proxmox"
    }

    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }

    fn describe(&self) -> String {
        let base = self.isolation().describe().to_string();
        match self.egress_unenforced() {
            Some(why) => format!("{base}; {why}"),
            None => base,
        }
    }

    async fn provision(
        &self,
        req: ProvisionRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError> {
        self.provision_inner(&req, on_created).await
    }

    async fn destroy(&self, vm: &VmRef) -> Result<(), ProviderError> {
        self.destroy_vm(vm).await?;
        if let Ok(vmid) = vm.id.parse() {
            self.firewall.forget(vmid);
        }
        Ok(())
    }

    fn warnings(&self, vm: &VmRef) -> Vec<String> {
        vm.id
            .parse()
            .ok()
            .and_then(|vmid| self.firewall.unenforced_for(vmid))
            .into_iter()
            .collect()
    }

    async fn list_owned(&self) -> Result<Vec<OwnedVm>, ProviderError> {
        self.owned_vms().await
    }

    async fn stuck(&self) -> Result<Vec<VmRef>, ProviderError> {
        self.stuck_clones().await
    }

    fn supports_pool(&self) -> bool {
        true
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
        _egress_url: Option<&str>,
    ) -> Result<(), ProviderError> {
        // The VM's firewall lets it reach the host's configured gateway,
        // whichever job runs in it.
        self.deliver_to(vm, bootstrap).await
    }

    async fn list_idle(&self) -> Result<Vec<IdleVm>, ProviderError> {
        self.idle_vms().await
    }

    async fn template_version(&self, template: &str) -> Result<String, ProviderError> {
        self.template_version_of(template).await
    }

    async fn gone(&self, vm: &VmRef) -> Result<Option<String>, ProviderError> {
        self.vm_gone(vm).await
    }

    fn gone_interval(&self) -> Option<Duration> {
        Some(super::liveness::GONE_INTERVAL)
    }
}
