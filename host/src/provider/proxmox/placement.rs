//! Where a job's VM goes, and how many clones run at once.
//!
//! A template may exist once on shared storage (every node that sees the
//! storage can host clones, via `target`) or as a copy per node (same name,
//! local storage: only that node). Among the online, allowed nodes that can
//! host it, the one with the most free memory wins, counting memory already
//! promised to VMs we are still provisioning, so a burst spreads out instead
//! of piling onto the node that looked emptiest a second ago. Clones are
//! capped per node and per target storage; a job waits for a slot.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::client::wire::{NodeInfo, Resource, VmConfig};

/// One copy of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateCopy {
    /// Its VMID.
    pub vmid: u32,
    /// The node holding its config.
    pub node: String,
    /// Whether it is marked a template (linked clones need that).
    pub is_template: bool,
    /// Storages of its disks.
    pub storages: Vec<String>,
    /// Whether every disk can be linked-cloned where it is.
    pub linked_ok: bool,
}

/// Storage facts from `/cluster/resources?type=storage`.
#[derive(Debug, Clone, Default)]
pub struct StorageFacts {
    /// storage id → shared.
    pub shared: BTreeMap<String, bool>,
    /// storage id → type.
    pub kind: BTreeMap<String, String>,
    /// storage id → nodes where it is available.
    pub nodes: BTreeMap<String, Vec<String>>,
}

impl StorageFacts {
    /// Collects from cluster resources.
    pub fn from_resources(res: &[Resource]) -> Self {
        let mut f = StorageFacts::default();
        for r in res.iter().filter(|r| r.kind == "storage") {
            let (Some(id), Some(node)) = (&r.storage, &r.node) else {
                continue;
            };
            if r.status.as_deref().is_some_and(|s| s != "available") {
                continue;
            }
            *f.shared.entry(id.clone()).or_default() |= r.shared;
            if let Some(k) = &r.plugintype {
                f.kind.insert(id.clone(), k.clone());
            }
            f.nodes.entry(id.clone()).or_default().push(node.clone());
        }
        f
    }
}

/// Storage types whose volumes can be linked-cloned.
pub fn linked_capable(kind: &str, volid: &str) -> bool {
    match kind {
        "lvmthin" | "zfspool" | "rbd" | "sheepdog" => true,
        "dir" | "nfs" | "cifs" | "glusterfs" | "cephfs" | "btrfs" => volid.ends_with(".qcow2"),
        _ => false,
    }
}

/// Templates named `wanted` (a name or a VMID), from `/cluster/resources`.
pub fn find_templates(res: &[Resource], wanted: &str) -> Vec<(u32, String)> {
    let by_id: Option<u64> = wanted.trim().parse().ok();
    res.iter()
        .filter(|r| r.kind == "qemu")
        .filter(|r| match by_id {
            Some(id) => r.vmid == Some(id),
            None => r.name.as_deref() == Some(wanted) && r.template,
        })
        .filter_map(|r| Some((u32::try_from(r.vmid?).ok()?, r.node.clone()?)))
        .collect()
}

/// Describes a template copy from its config.
pub fn describe_copy(vmid: u32, node: &str, cfg: &VmConfig, facts: &StorageFacts) -> TemplateCopy {
    let disks = cfg.disks();
    let linked_ok = !disks.is_empty()
        && disks.iter().all(|(_, volid)| {
            let storage = volid.split(':').next().unwrap_or("");
            facts
                .kind
                .get(storage)
                .is_some_and(|k| linked_capable(k, volid))
        });
    TemplateCopy {
        vmid,
        node: node.to_string(),
        is_template: cfg.is_template(),
        storages: cfg.storages(),
        linked_ok,
    }
}

/// Nodes that can host a clone of `copy`, with the copy to clone from.
pub fn hosts_for(
    copy: &TemplateCopy,
    facts: &StorageFacts,
    online: &[String],
    allowed: Option<&[String]>,
) -> Vec<String> {
    let all_shared = !copy.storages.is_empty()
        && copy
            .storages
            .iter()
            .all(|s| facts.shared.get(s).copied().unwrap_or(false));
    let ok = |n: &String| online.contains(n) && allowed.is_none_or(|a| a.contains(n));
    if all_shared {
        online
            .iter()
            .filter(|n| ok(n))
            .filter(|n| {
                copy.storages
                    .iter()
                    .all(|s| facts.nodes.get(s).is_some_and(|ns| ns.contains(n)))
            })
            .cloned()
            .collect()
    } else if ok(&copy.node) {
        vec![copy.node.clone()]
    } else {
        Vec::new()
    }
}

/// Free memory per online node.
pub fn free_memory(nodes: &[NodeInfo]) -> BTreeMap<String, u64> {
    nodes
        .iter()
        .filter(|n| n.status == "online")
        .map(|n| {
            let free = n.maxmem.unwrap_or(0).saturating_sub(n.mem.unwrap_or(0));
            (n.node.clone(), free)
        })
        .collect()
}

#[derive(Debug, Default)]
struct Counts {
    node_clones: HashMap<String, usize>,
    storage_clones: HashMap<String, usize>,
    /// Memory promised to VMs not yet running, per node.
    pending_mem: HashMap<String, u64>,
}

/// Clone caps and memory promises, shared by all provisionings.
#[derive(Debug)]
pub struct Slots {
    per_node: usize,
    per_storage: usize,
    counts: Mutex<Counts>,
    freed: Notify,
}

/// A clone slot on a node and a storage; given back on drop.
#[derive(Debug)]
pub struct CloneSlot {
    slots: Arc<Slots>,
    node: String,
    storage: String,
}

impl Drop for CloneSlot {
    fn drop(&mut self) {
        {
            let mut c = self.slots.lock();
            if let Some(n) = c.node_clones.get_mut(&self.node) {
                *n = n.saturating_sub(1);
            }
            if let Some(n) = c.storage_clones.get_mut(&self.storage) {
                *n = n.saturating_sub(1);
            }
        }
        self.slots.freed.notify_waiters();
    }
}

/// Memory promised to a VM until it runs; withdrawn on drop.
#[derive(Debug)]
pub struct MemPromise {
    slots: Arc<Slots>,
    node: String,
    bytes: u64,
}

impl Drop for MemPromise {
    fn drop(&mut self) {
        let mut c = self.slots.lock();
        if let Some(m) = c.pending_mem.get_mut(&self.node) {
            *m = m.saturating_sub(self.bytes);
        }
    }
}

/// A node chosen for a clone, with its slot and memory promise.
#[derive(Debug)]
pub struct Placement {
    /// The node.
    pub node: String,
    /// Held until the clone task ends.
    pub slot: CloneSlot,
    /// Held until the VM runs.
    pub promise: MemPromise,
}

impl Slots {
    /// Caps per node and per storage.
    pub fn new(per_node: usize, per_storage: usize) -> Arc<Self> {
        Arc::new(Slots {
            per_node,
            per_storage,
            counts: Mutex::new(Counts::default()),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Picks the node with the most free memory (after promises) that has a
    /// free clone slot, among `hosts` (each with the storage its clone
    /// writes to). `None` when every slot is taken: call [`Slots::freed`].
    pub fn try_place(
        self: &Arc<Self>,
        hosts: &[(String, String)],
        free: &BTreeMap<String, u64>,
        mem_bytes: u64,
    ) -> Option<Placement> {
        let mut c = self.lock();
        let mut ranked: Vec<&(String, String)> = hosts.iter().collect();
        let avail = |n: &str, c: &Counts| {
            free.get(n)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.pending_mem.get(n).copied().unwrap_or(0))
        };
        ranked.sort_by(|a, b| avail(&b.0, &c).cmp(&avail(&a.0, &c)).then(a.0.cmp(&b.0)));
        for (node, storage) in ranked {
            let n = c.node_clones.get(node).copied().unwrap_or(0);
            let s = c.storage_clones.get(storage).copied().unwrap_or(0);
            if n >= self.per_node || s >= self.per_storage {
                continue;
            }
            *c.node_clones.entry(node.clone()).or_default() += 1;
            *c.storage_clones.entry(storage.clone()).or_default() += 1;
            *c.pending_mem.entry(node.clone()).or_default() += mem_bytes;
            return Some(Placement {
                node: node.clone(),
                slot: CloneSlot {
                    slots: self.clone(),
                    node: node.clone(),
                    storage: storage.clone(),
                },
                promise: MemPromise {
                    slots: self.clone(),
                    node: node.clone(),
                    bytes: mem_bytes,
                },
            });
        }
        None
    }

    /// Resolves when some slot was given back.
    pub async fn freed(&self) {
        self.freed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter().map(|(n, m)| (n.to_string(), *m)).collect()
    }

    #[test]
    fn most_free_memory_wins_and_promises_spread_a_burst() {
        let slots = Slots::new(10, 10);
        let hosts = vec![
            ("a".to_string(), "ceph".to_string()),
            ("b".to_string(), "ceph".to_string()),
        ];
        let f = free(&[("a", 10), ("b", 12)]);
        let p1 = slots.try_place(&hosts, &f, 4).unwrap();
        assert_eq!(p1.node, "b");
        let p2 = slots.try_place(&hosts, &f, 4).unwrap();
        assert_eq!(p2.node, "a", "b has 8 left after the promise, a 10");
        drop(p1);
        let p3 = slots.try_place(&hosts, &f, 4).unwrap();
        assert_eq!(p3.node, "b");
    }

    #[test]
    fn caps_per_node_and_storage() {
        let slots = Slots::new(1, 2);
        let hosts = vec![
            ("a".to_string(), "s".to_string()),
            ("b".to_string(), "s".to_string()),
            ("c".to_string(), "s".to_string()),
        ];
        let f = free(&[("a", 3), ("b", 2), ("c", 1)]);
        let p1 = slots.try_place(&hosts, &f, 0).unwrap();
        let p2 = slots.try_place(&hosts, &f, 0).unwrap();
        assert_eq!((p1.node.as_str(), p2.node.as_str()), ("a", "b"));
        assert!(slots.try_place(&hosts, &f, 0).is_none(), "storage cap 2");
        drop(p1);
        assert_eq!(slots.try_place(&hosts, &f, 0).unwrap().node, "a");
    }

    #[test]
    fn hosts_follow_storage_sharing() {
        let mut facts = StorageFacts::default();
        facts.shared.insert("ceph".into(), true);
        facts.shared.insert("local-lvm".into(), false);
        facts
            .nodes
            .insert("ceph".into(), vec!["a".into(), "b".into()]);
        let online = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let shared = TemplateCopy {
            vmid: 1,
            node: "a".into(),
            is_template: true,
            storages: vec!["ceph".into()],
            linked_ok: true,
        };
        assert_eq!(hosts_for(&shared, &facts, &online, None), vec!["a", "b"]);
        let allowed = vec!["b".to_string()];
        assert_eq!(
            hosts_for(&shared, &facts, &online, Some(&allowed)),
            vec!["b"]
        );
        let local = TemplateCopy {
            storages: vec!["local-lvm".into()],
            ..shared
        };
        assert_eq!(hosts_for(&local, &facts, &online, None), vec!["a"]);
        assert!(hosts_for(&local, &facts, &online, Some(&allowed)).is_empty());
        assert!(linked_capable("lvmthin", "local-lvm:base-1-disk-0"));
        assert!(!linked_capable("dir", "local:1/base-1-disk-0.raw"));
        assert!(linked_capable("dir", "local:1/base-1-disk-0.qcow2"));
    }
}
