//! What each endpoint does, once the request passed routing, auth,
//! parameter checks and permissions. Cluster-wide reads, tickets and tasks
//! are here; VM operations are in [`super::vm_ops`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::http::ApiError;
use super::perms::Principal;
use super::state::PveVersion;
use super::{SimInner, TicketEntry, vm_ops};

type Params = BTreeMap<String, String>;

/// Runs the endpoint `method template` with its checked parameters.
pub fn dispatch(
    sim: &Arc<SimInner>,
    who: Option<&Principal>,
    method: &str,
    template: &str,
    p: &Params,
) -> Result<Value, ApiError> {
    let anyone = Principal::root("root@pam");
    let who = who.unwrap_or(&anyone);
    match (method, template) {
        ("POST", "/access/ticket") => ticket(sim, p),
        ("GET", "/access/permissions") => Ok(json!(who.dump(p.get("path").map(String::as_str)))),
        ("GET", "/version") => Ok(version(sim)),
        ("GET", "/nodes") => Ok(nodes(sim)),
        ("GET", "/cluster/resources") => Ok(resources(sim, who, p.get("type"))),
        ("GET", "/cluster/nextid") => nextid(sim, p),
        ("GET", "/pools") => Ok(pools(sim)),
        ("GET", "/nodes/{node}/storage") => Ok(storages(sim, who, &p["node"])),
        ("GET", "/nodes/{node}/status") => node_status(sim, &p["node"]),
        ("GET", "/nodes/{node}/tasks/{upid}/status") => task_status(sim, &p["node"], &p["upid"]),
        ("GET", "/nodes/{node}/tasks/{upid}/log") => task_log(sim, p),
        ("GET", "/cluster/firewall/options") => Ok(super::firewall::cluster_options(sim)),
        _ => vm_ops::dispatch(sim, who, method, template, p),
    }
}

fn ticket(sim: &SimInner, p: &Params) -> Result<Value, ApiError> {
    let user = p.get("username").cloned().unwrap_or_default();
    let user = match p.get("realm") {
        Some(realm) if !user.contains('@') => format!("{user}@{realm}"),
        _ => user,
    };
    let password = p.get("password").cloned().unwrap_or_default();
    let fail = || ApiError {
        status: 401,
        message: "authentication failure".into(),
        errors: BTreeMap::new(),
        bare: false,
    };
    let principal = {
        let mut tickets = sim.tickets.lock().unwrap_or_else(|e| e.into_inner());
        tickets.retain(|_, t| t.issued.elapsed() < sim.ticket_lifetime);
        // A still-valid ticket of the same user counts as its password.
        let renewing = tickets
            .get(&password)
            .filter(|t| t.principal.id == user)
            .map(|t| t.principal.clone());
        match renewing {
            Some(p) => {
                sim.renewals
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                p
            }
            None => match sim.users.get(&user) {
                Some((pw, p)) if *pw == password => p.clone(),
                _ => return Err(fail()),
            },
        }
    };
    let ticket = format!(
        "PVE:{user}:{:08X}::{}",
        Instant::now().elapsed().as_nanos() as u32 ^ fastrand::u32(..),
        random_hex(32)
    );
    let csrf = format!("{:08X}:{}", fastrand::u32(..), random_hex(22));
    sim.tickets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            ticket.clone(),
            TicketEntry {
                principal: principal.clone(),
                csrf: csrf.clone(),
                issued: Instant::now(),
            },
        );
    Ok(json!({
        "username": user,
        "ticket": ticket,
        "CSRFPreventionToken": csrf,
        "cap": {},
    }))
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect()
}

fn version(sim: &SimInner) -> Value {
    match sim.lock().version {
        PveVersion::V9 => {
            json!({"release": "9.0", "version": "9.0.8", "repoid": "f9f3bd8c5d1e3a2b"})
        }
        PveVersion::V8 => {
            json!({"release": "8.4", "version": "8.4.1", "repoid": "2a5fa54a8503f96d"})
        }
    }
}

fn nodes(sim: &SimInner) -> Value {
    let c = sim.lock();
    let list: Vec<Value> = c
        .nodes
        .iter()
        .map(|(name, n)| {
            if n.online {
                json!({
                    "node": name, "status": "online", "type": "node",
                    "maxmem": n.maxmem, "mem": c.node_mem(name), "maxcpu": n.maxcpu,
                    "cpu": 0.05, "uptime": 86400, "level": "",
                    "ssl_fingerprint": sim.fingerprint_text,
                })
            } else {
                json!({"node": name, "status": "offline", "type": "node"})
            }
        })
        .collect();
    Value::Array(list)
}

fn resources(sim: &SimInner, who: &Principal, kind: Option<&String>) -> Value {
    let c = sim.lock();
    let want = |k: &str| kind.is_none_or(|x| x == k || (x == "vm" && k == "qemu"));
    let mut out = Vec::new();
    if want("node") {
        for (name, n) in &c.nodes {
            let mut v = json!({"type": "node", "id": format!("node/{name}"), "node": name,
                "status": if n.online { "online" } else { "offline" }});
            if n.online {
                v["maxmem"] = json!(n.maxmem);
                v["mem"] = json!(c.node_mem(name));
                v["maxcpu"] = json!(n.maxcpu);
            }
            out.push(v);
        }
    }
    if want("storage") {
        for (id, s) in &c.storages {
            if !(who.has(&format!("/storage/{id}"), "Datastore.Audit")
                || who.has(&format!("/storage/{id}"), "Datastore.AllocateSpace"))
            {
                continue;
            }
            for node in c.nodes.keys().filter(|n| s.on(n)) {
                out.push(json!({
                    "type": "storage", "id": format!("storage/{node}/{id}"), "storage": id,
                    "node": node, "plugintype": s.kind, "content": s.content,
                    "shared": u8::from(s.shared),
                    "status": if c.node_online(node) { "available" } else { "unknown" },
                    "maxdisk": s.total, "disk": 0,
                }));
            }
        }
    }
    if want("qemu") {
        for vm in c.vms.values() {
            if !who.has(&format!("/vms/{}", vm.vmid), "VM.Audit") {
                continue;
            }
            let mut v = json!({
                "type": "qemu", "id": format!("qemu/{}", vm.vmid), "vmid": vm.vmid,
                "node": vm.node,
                "name": vm.config.get("name").cloned().unwrap_or_else(|| format!("VM {}", vm.vmid)),
                "status": if !c.node_online(&vm.node) { "unknown" } else if vm.running { "running" } else { "stopped" },
                "template": u8::from(vm.is_template()),
                "maxmem": vm.memory_mib() * 1024 * 1024,
            });
            if let Some(t) = vm.config.get("tags") {
                v["tags"] = json!(t);
            }
            if let Some(l) = vm.lock() {
                v["lock"] = json!(l);
            }
            if let Some(pool) = &vm.pool {
                v["pool"] = json!(pool);
            }
            out.push(v);
        }
    }
    Value::Array(out)
}

fn nextid(sim: &SimInner, p: &Params) -> Result<Value, ApiError> {
    let c = sim.lock();
    if let Some(id) = p.get("vmid") {
        let id: u32 = id.parse().unwrap_or(0);
        if c.vms.contains_key(&id) {
            return Err(ApiError::param("vmid", format!("VM {id} already exists")));
        }
        return Ok(json!(id.to_string()));
    }
    let next = (100..).find(|id| !c.vms.contains_key(id)).unwrap_or(100);
    // PVE answers the id as a string.
    Ok(json!(next.to_string()))
}

fn pools(sim: &SimInner) -> Value {
    let c = sim.lock();
    Value::Array(c.pools.keys().map(|id| json!({"poolid": id})).collect())
}

fn storages(sim: &SimInner, who: &Principal, node: &str) -> Value {
    let c = sim.lock();
    let list = c
        .storages
        .iter()
        .filter(|(_, s)| s.on(node))
        .filter(|(id, _)| {
            who.has(&format!("/storage/{id}"), "Datastore.Audit")
                || who.has(&format!("/storage/{id}"), "Datastore.AllocateSpace")
        })
        .map(|(id, s)| {
            json!({
                "storage": id, "type": s.kind, "content": s.content,
                "shared": u8::from(s.shared), "active": 1, "enabled": 1,
                "total": s.total, "used": 0, "avail": s.total,
            })
        })
        .collect();
    Value::Array(list)
}

fn node_status(sim: &SimInner, node: &str) -> Result<Value, ApiError> {
    let c = sim.lock();
    let n = c
        .nodes
        .get(node)
        .ok_or_else(|| ApiError::die(format!("no such node '{node}'")))?;
    let used = c.node_mem(node);
    Ok(json!({
        "memory": {"total": n.maxmem, "used": used, "free": n.maxmem.saturating_sub(used),
                   "available": n.maxmem.saturating_sub(used)},
        "cpu": 0.05, "cpuinfo": {"cpus": n.maxcpu, "cores": n.maxcpu, "sockets": 1, "model": "sim"},
        "pveversion": match c.version { PveVersion::V9 => "pve-manager/9.0.8", PveVersion::V8 => "pve-manager/8.4.1" },
        "loadavg": ["0.10", "0.05", "0.01"],
    }))
}

fn find_task<'a>(
    c: &'a super::state::Cluster,
    node: &str,
    upid: &str,
) -> Result<&'a super::state::Task, ApiError> {
    if !upid.starts_with("UPID:") || upid.split(':').count() < 8 {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    c.tasks
        .get(upid)
        .filter(|t| t.node == node)
        .ok_or_else(|| ApiError::param("upid", "no such task"))
}

fn task_status(sim: &SimInner, node: &str, upid: &str) -> Result<Value, ApiError> {
    let c = sim.lock();
    let t = find_task(&c, node, upid)?;
    let mut v = json!({
        "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pid.wrapping_mul(7919) % 0xFFF_FFFF,
        "starttime": t.starttime, "type": t.kind, "id": t.id, "user": t.user,
        "status": if t.exitstatus.is_some() { "stopped" } else { "running" },
    });
    if let Some(e) = &t.exitstatus {
        v["exitstatus"] = json!(e);
    }
    Ok(v)
}

fn task_log(sim: &SimInner, p: &Params) -> Result<Value, ApiError> {
    let c = sim.lock();
    let t = find_task(&c, &p["node"], &p["upid"])?;
    let start: usize = p.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: usize = p.get("limit").and_then(|s| s.parse().ok()).unwrap_or(50);
    let lines: Vec<Value> = t
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, l)| json!({"n": i + 1, "t": l}))
        .collect();
    Ok(Value::Array(lines))
}
