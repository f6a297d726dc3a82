//! VM operations with PVE's checks, locks and error messages
//! (`tests/data/pve/errors.txt`): clone (with `lock: clone` held until the task
//! ends), config, resize, start, stop, destroy, status, and the guest agent
//! (ping, file-write, which starts the guest runner for the bootstrap).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::SimInner;
use super::agent::{agent_ready, file_write};
use super::http::ApiError;
use super::perms::Principal;
use super::state::{Cluster, Vm, is_disk_key, take_fault};
use super::tasks::{self, TaskSpec};

type Params = BTreeMap<String, String>;

fn vmid(p: &Params, key: &str) -> u32 {
    p.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn locked(vm: &Vm) -> Result<(), String> {
    match vm.lock() {
        Some(l) => Err(format!("VM {} is locked ({l})", vm.vmid)),
        None => Ok(()),
    }
}

/// VM endpoints.
pub fn dispatch(
    sim: &Arc<SimInner>,
    who: &Principal,
    method: &str,
    template: &str,
    p: &Params,
) -> Result<Value, ApiError> {
    let node = p.get("node").cloned().unwrap_or_default();
    let id = vmid(p, "vmid");
    match (method, template) {
        ("GET", "/nodes/{node}/qemu") => Ok(list(sim, who, &node)),
        ("POST", "/nodes/{node}/qemu/{vmid}/clone") => clone(sim, who, &node, id, p),
        ("GET", "/nodes/{node}/qemu/{vmid}/config") => {
            let c = sim.lock();
            let vm = c.vm_on(&node, id)?;
            let mut m: serde_json::Map<String, Value> = vm
                .config
                .iter()
                .map(|(k, v)| (k.clone(), config_value(k, v)))
                .collect();
            m.insert("digest".into(), json!(vm.digest()));
            Ok(Value::Object(m))
        }
        ("PUT" | "POST", "/nodes/{node}/qemu/{vmid}/config") => {
            network_privilege(who, id, p)?;
            set_config(sim, &node, id, p)?;
            Ok(Value::Null)
        }
        ("PUT", "/nodes/{node}/qemu/{vmid}/resize") => resize(sim, who, &node, id, p),
        ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => status(sim, &node, id),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/start") => start(sim, who, &node, id),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => stop(sim, who, &node, id),
        ("DELETE", "/nodes/{node}/qemu/{vmid}") => destroy(sim, who, &node, id),
        ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping") => {
            agent_ready(sim, &node, id)?;
            Ok(json!({"result": {}}))
        }
        ("POST", "/nodes/{node}/qemu/{vmid}/agent/file-write") => {
            file_write(sim, &node, id, p)?;
            Ok(Value::Null)
        }
        (_, t) if t.contains("/firewall") => super::firewall::dispatch(sim, method, template, p),
        (_, t) if t.contains("/agent") => {
            agent_ready(sim, &node, id)?;
            Ok(json!({"result": {}}))
        }
        _ => Err(ApiError {
            status: 501,
            message: format!("Method '{method} {template}' not implemented"),
            errors: BTreeMap::new(),
            bare: false,
        }),
    }
}

/// PVE checks config keys beyond the endpoint's own check
/// (`check_vm_modify_config_perm`): a NIC (`netN`) needs `VM.Config.Network`.
fn network_privilege(who: &Principal, id: u32, p: &Params) -> Result<(), ApiError> {
    let path = format!("/vms/{id}");
    let touches_net = p.keys().any(|k| {
        k.strip_prefix("net")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if touches_net && !who.has(&path, "VM.Config.Network") {
        return Err(ApiError {
            status: 403,
            message: super::perms::Denied {
                path,
                privs: vec!["VM.Config.Network".into()],
            }
            .to_string(),
            errors: BTreeMap::new(),
            bare: false,
        });
    }
    Ok(())
}

/// Numbers come back as JSON numbers where PVE's schema says integer.
fn config_value(key: &str, v: &str) -> Value {
    match key {
        "cores" | "sockets" | "template" | "vcpus" | "balloon" => {
            v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n))
        }
        _ => json!(v),
    }
}

fn list(sim: &SimInner, who: &Principal, node: &str) -> Value {
    let c = sim.lock();
    let items = c
        .vms
        .values()
        .filter(|v| v.node == node && who.has(&format!("/vms/{}", v.vmid), "VM.Audit"))
        .map(|v| {
            let mut o = json!({
                "vmid": v.vmid, "name": v.config.get("name"),
                "status": if v.running { "running" } else { "stopped" },
                "template": u8::from(v.is_template()), "maxmem": v.memory_mib() * 1024 * 1024,
            });
            if let Some(t) = v.config.get("tags") {
                o["tags"] = json!(t);
            }
            if let Some(l) = v.lock() {
                o["lock"] = json!(l);
            }
            o
        })
        .collect();
    Value::Array(items)
}

fn clone(
    sim: &Arc<SimInner>,
    who: &Principal,
    node: &str,
    src: u32,
    p: &Params,
) -> Result<Value, ApiError> {
    let newid = vmid(p, "newid");
    let target = p.get("target").cloned().unwrap_or_else(|| node.to_string());
    let full_param = p.get("full").and_then(|v| super::schema::parse_bool(v));
    let mut c = sim.lock();
    if c.faults.steal_next_vmid {
        c.faults.steal_next_vmid = false;
        let mut foreign = BTreeMap::new();
        foreign.insert("name".to_string(), "someone-else".to_string());
        let root = sim.root.join(format!("vm-{newid}"));
        c.vms.insert(
            newid,
            Vm {
                vmid: newid,
                node: node.to_string(),
                config: foreign,
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
    let source = c.vm_on(node, src)?;
    let template = source.is_template();
    let full = full_param.unwrap_or(!template) || !template;
    if !full && p.contains_key("storage") {
        return Err(ApiError::die(
            "parameter 'storage' not allowed for linked clones",
        ));
    }
    if !full && p.contains_key("format") {
        return Err(ApiError::die(
            "parameter 'format' not allowed for linked clones",
        ));
    }
    if !template {
        locked(source)?;
    }
    if c.vms.contains_key(&newid) {
        return Err(ApiError::die(format!(
            "unable to create VM {newid}: config file already exists"
        )));
    }
    let disks = source.disks();
    if target != node {
        if !c.node_online(&target) {
            return Err(ApiError::die(format!(
                "target node '{target}' is not online"
            )));
        }
        let local = disks
            .iter()
            .any(|(_, s, _)| c.storages.get(s).is_none_or(|st| !st.shared));
        if local {
            return Err(ApiError::die(format!(
                "can't clone VM to node '{target}' (VM uses local storage)"
            )));
        }
    }
    let dest_storage = p.get("storage").cloned();
    if let Some(s) = &dest_storage {
        let Some(st) = c.storages.get(s) else {
            return Err(ApiError::die(format!("storage '{s}' does not exist")));
        };
        if !st.on(&target) {
            return Err(ApiError::die(format!(
                "storage '{s}' is not available on node '{target}'"
            )));
        }
    }
    // Space is allocated on every storage the clone writes to.
    for (_, s, _) in &disks {
        let storage = dest_storage.as_deref().unwrap_or(s);
        let path = format!("/storage/{storage}");
        if !who.has(&path, "Datastore.AllocateSpace") {
            return Err(ApiError {
                status: 403,
                message: format!("Permission check failed ({path}, Datastore.AllocateSpace)"),
                errors: BTreeMap::new(),
                bare: false,
            });
        }
        if !full
            && c.storages
                .get(s)
                .is_some_and(|st| !st.supports_linked_clone())
        {
            let key = disks.iter().find(|d| &d.1 == s).map_or("scsi0", |d| &d.0);
            return Err(ApiError::die(format!(
                "Linked clone feature is not supported for drive '{key}'"
            )));
        }
    }
    if let Some(pool) = p.get("pool")
        && !c.pools.contains_key(pool)
    {
        return Err(ApiError::die(format!("pool '{pool}' does not exist")));
    }

    let mut config = source.config.clone();
    config.remove("template");
    config.remove("lock");
    config.insert("lock".into(), "clone".into());
    if let Some(name) = p.get("name") {
        config.insert("name".into(), name.clone());
    }
    if let Some(d) = p.get("description") {
        config.insert("description".into(), d.clone());
    }
    for (key, storage, vol) in &disks {
        let storage = dest_storage.clone().unwrap_or_else(|| storage.clone());
        let base = vol.split_once(':').map_or("", |(_, v)| v);
        let new_vol = if full {
            format!("{storage}:vm-{newid}-disk-0")
        } else {
            format!("{storage}:{base}/vm-{newid}-disk-0")
        };
        let rest: String = source.config[key]
            .split(',')
            .skip(1)
            .map(|s| format!(",{s}"))
            .collect();
        config.insert(key.clone(), format!("{new_vol}{rest}"));
    }
    let root = sim.root.join(format!("vm-{newid}"));
    let _ = std::fs::create_dir_all(&root);
    // PVE copies the source's VM firewall config to the clone.
    if let Some(fw) = c.firewalls.get(&src).cloned() {
        c.firewalls.insert(newid, fw);
    }
    c.vms.insert(
        newid,
        Vm {
            vmid: newid,
            node: target.clone(),
            config,
            running: false,
            agent_ready_at: None,
            started_at: None,
            pool: p.get("pool").cloned(),
            guest: None,
            root,
            created: Instant::now(),
        },
    );
    let running = c.clones_running.entry(target.clone()).or_default();
    *running += 1;
    let now = *running;
    let peak = c.clones_peak.entry(target.clone()).or_default();
    *peak = (*peak).max(now);
    *c.clones_total.entry(target.clone()).or_default() += 1;

    let fail = take_fault(&mut c.faults.clone_failures);
    let hang = c.faults.clone_hangs;
    let delay = if full {
        c.timings.full_clone
    } else {
        c.timings.linked_clone
    };
    let delay = if hang {
        std::time::Duration::from_secs(24 * 3600)
    } else {
        delay
    };
    let kind = if full { "full" } else { "linked" };
    let upid = tasks::spawn(
        sim,
        &mut c,
        TaskSpec {
            node,
            kind: "qmclone",
            id: &src.to_string(),
            user: &who.id,
        },
        delay,
        move |c: &mut Cluster, _| {
            if let Some(n) = c.clones_running.get_mut(&target) {
                *n = n.saturating_sub(1);
            }
            if fail {
                c.vms.remove(&newid);
                return Err(
                    "clone failed: copy failed: storage error: No space left on device".into(),
                );
            }
            match c.vms.get_mut(&newid) {
                Some(vm) => {
                    vm.config.remove("lock");
                    Ok(vec![
                        format!("create {kind} clone of drive scsi0"),
                        "transferred".into(),
                    ])
                }
                None => Err("clone failed: VM vanished during clone".into()),
            }
        },
    );
    Ok(json!(upid))
}

fn set_config(sim: &SimInner, node: &str, id: u32, p: &Params) -> Result<(), ApiError> {
    let mut c = sim.lock();
    if take_fault(&mut c.faults.config_lock_timeouts) {
        return Err(ApiError::die(format!(
            "can't lock file '/var/lock/qemu-server/lock-{id}.conf' - got timeout"
        )));
    }
    if take_fault(&mut c.faults.cfs_lock_timeouts) {
        return Err(ApiError::die(
            "cfs-lock 'file-qemu_server' error: got lock request timeout",
        ));
    }
    let vm = c.vm_on_mut(node, id)?;
    let skiplock = p
        .get("skiplock")
        .and_then(|v| super::schema::parse_bool(v))
        .unwrap_or(false);
    if !skiplock {
        locked(vm)?;
    }
    if let Some(d) = p.get("digest")
        && *d != vm.digest()
    {
        return Err(ApiError::die(
            "checksum mismatch (file change by other user?)",
        ));
    }
    const META: [&str; 6] = [
        "node",
        "vmid",
        "digest",
        "delete",
        "skiplock",
        "background_delay",
    ];
    let changes: Vec<(&String, &String)> = p
        .iter()
        .filter(|(k, _)| !META.contains(&k.as_str()))
        .collect();
    let deletes: Vec<&str> = p
        .get("delete")
        .map(|d| d.split([',', ';', ' ']).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if changes.is_empty() && deletes.is_empty() {
        return Err(ApiError::die("no options specified"));
    }
    for k in deletes {
        vm.config.remove(k);
    }
    for (k, v) in changes {
        if is_disk_key(k) && vm.config.contains_key(k) && vm.config[k] != *v {
            return Err(ApiError::die(format!(
                "only root can modify '{k}' config for real devices"
            )));
        }
        vm.config.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// `8G`, `512M`, `1.5T`, `+2G` in bytes.
fn size_bytes(text: &str) -> Option<u64> {
    let t = text.trim_start_matches('+');
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let n: f64 = num.parse().ok()?;
    let mul = match unit {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mul) as u64)
}

fn resize(
    sim: &Arc<SimInner>,
    who: &Principal,
    node: &str,
    id: u32,
    p: &Params,
) -> Result<Value, ApiError> {
    let disk = p["disk"].clone();
    let size = p["size"].clone();
    let mut c = sim.lock();
    let vm = c.vm_on(node, id)?;
    locked(vm)?;
    let Some(current) = vm.config.get(&disk) else {
        return Err(ApiError::die(format!("disk '{disk}' does not exist")));
    };
    if current.contains("media=cdrom") {
        return Err(ApiError::die("you can't resize a cdrom"));
    }
    let cur_size = current
        .split(',')
        .find_map(|kv| kv.strip_prefix("size="))
        .and_then(size_bytes)
        .unwrap_or(0);
    let add = size_bytes(&size).ok_or_else(|| ApiError::param("size", "invalid size"))?;
    let new = if size.starts_with('+') {
        cur_size + add
    } else {
        add
    };
    if new < cur_size {
        return Err(ApiError::die("shrinking disks is not supported"));
    }
    let delay = c.timings.resize;
    let upid = vm_task(
        sim,
        &mut c,
        who,
        node,
        "resize",
        id,
        delay,
        move |c: &mut Cluster, _| {
            let vm = c.vm_mut(id)?;
            let Some(entry) = vm.config.get_mut(&disk) else {
                return Err(format!("disk '{disk}' does not exist"));
            };
            let parts: Vec<String> = entry
                .split(',')
                .filter(|kv| !kv.starts_with("size="))
                .map(str::to_string)
                .chain(std::iter::once(format!("size={}M", new / (1024 * 1024))))
                .collect();
            *entry = parts.join(",");
            Ok(vec![format!("Image resized to {new} bytes")])
        },
    );
    Ok(json!(upid))
}

fn status(sim: &SimInner, node: &str, id: u32) -> Result<Value, ApiError> {
    let c = sim.lock();
    let vm = c.vm_on(node, id)?;
    let mut v = json!({
        "vmid": id, "status": if vm.running { "running" } else { "stopped" },
        "qmpstatus": if vm.running { "running" } else { "stopped" },
        "name": vm.config.get("name"), "maxmem": vm.memory_mib() * 1024 * 1024,
        "template": u8::from(vm.is_template()), "agent": u8::from(vm.agent_enabled()),
        "ha": {"managed": 0},
        "uptime": vm.started_at.map_or(0, |s| s.elapsed().as_secs()),
    });
    if let Some(l) = vm.lock() {
        v["lock"] = json!(l);
    }
    if let Some(t) = vm.config.get("tags") {
        v["tags"] = json!(t);
    }
    if let Some(g) = &vm.guest {
        v["pid"] = json!(g.pid);
    }
    Ok(v)
}

/// Starts a task of `kind` on VM `id` for `who`, whose `work` runs after
/// `delay`: its UPID.
#[allow(clippy::too_many_arguments)]
fn vm_task<F>(
    sim: &Arc<SimInner>,
    c: &mut Cluster,
    who: &Principal,
    node: &str,
    kind: &str,
    id: u32,
    delay: std::time::Duration,
    work: F,
) -> String
where
    F: FnOnce(&mut Cluster, &SimInner) -> Result<Vec<String>, String> + Send + 'static,
{
    let spec = TaskSpec {
        node,
        kind,
        id: &id.to_string(),
        user: &who.id,
    };
    tasks::spawn(sim, c, spec, delay, work)
}

fn start(sim: &Arc<SimInner>, who: &Principal, node: &str, id: u32) -> Result<Value, ApiError> {
    let mut c = sim.lock();
    c.vm_on(node, id)?;
    let delay = c.timings.start;
    let boot = c.timings.agent_boot;
    let fail = take_fault(&mut c.faults.start_failures);
    let upid = vm_task(
        sim,
        &mut c,
        who,
        node,
        "qmstart",
        id,
        delay,
        move |c: &mut Cluster, _| {
            let never = c.faults.agent_never_ready;
            let vm = c.vm_mut(id)?;
            if vm.is_template() {
                return Err("you can't start a vm if it's a template".into());
            }
            locked(vm)?;
            if vm.running {
                return Err(format!("VM {id} already running"));
            }
            if fail {
                return Err("start failed: QEMU exited with code 1".into());
            }
            vm.running = true;
            vm.started_at = Some(Instant::now());
            vm.agent_ready_at = (!never && vm.agent_enabled()).then(|| Instant::now() + boot);
            Ok(vec![format!("starting VM {id}")])
        },
    );
    Ok(json!(upid))
}

/// Pulls the plug: the guest's processes die with the VM.
pub fn power_off(vm: &mut Vm) {
    vm.running = false;
    vm.agent_ready_at = None;
    vm.started_at = None;
    if let Some(g) = vm.guest.take() {
        g.kill();
    }
}

fn stop(sim: &Arc<SimInner>, who: &Principal, node: &str, id: u32) -> Result<Value, ApiError> {
    let mut c = sim.lock();
    c.vm_on(node, id)?;
    let delay = c.timings.stop;
    let upid = vm_task(
        sim,
        &mut c,
        who,
        node,
        "qmstop",
        id,
        delay,
        move |c: &mut Cluster, _| {
            let vm = c.vm_mut(id)?;
            locked(vm)?;
            power_off(vm);
            Ok(vec![])
        },
    );
    Ok(json!(upid))
}

fn destroy(sim: &Arc<SimInner>, who: &Principal, node: &str, id: u32) -> Result<Value, ApiError> {
    let mut c = sim.lock();
    let vm = c.vm_on(node, id)?;
    if vm.running {
        return Err(ApiError::die(format!(
            "VM {id} is running - destroy failed"
        )));
    }
    let delay = c.timings.destroy;
    let fail_locked = take_fault(&mut c.faults.destroy_lock_failures);
    let upid = vm_task(
        sim,
        &mut c,
        who,
        node,
        "qmdestroy",
        id,
        delay,
        move |c: &mut Cluster, _| {
            let vm = c
                .vms
                .get(&id)
                .ok_or_else(|| Cluster::missing_config("?", id))?;
            if fail_locked {
                return Err(format!("VM {id} is locked (backup)"));
            }
            locked(vm)?;
            c.firewalls.remove(&id);
            if let Some(mut vm) = c.vms.remove(&id) {
                power_off(&mut vm);
                let _ = std::fs::remove_dir_all(&vm.root);
            }
            Ok(vec![
                format!("Removing image: 100% complete...done."),
                "purging VM {id} from related configurations".replace("{id}", &id.to_string()),
            ])
        },
    );
    Ok(json!(upid))
}
