//! VM firewall endpoints (`/nodes/{node}/qemu/{vmid}/firewall/...`) and the
//! datacenter firewall's options, kept in memory per VM so tests can assert
//! exactly what the provider set. Routing, parameters and privileges
//! (`VM.Audit` to read, `VM.Config.Network` to change) were checked against
//! the schema before these run.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::SimInner;
use super::http::ApiError;

type Params = BTreeMap<String, String>;

/// Keys that are not part of what is stored.
const META: [&str; 5] = ["node", "vmid", "digest", "delete", "pos"];

/// Integer-typed options and rule fields come back as JSON numbers.
fn value(key: &str, v: &str) -> Value {
    match key {
        "enable" | "dhcp" | "ipfilter" | "macfilter" | "ndp" | "radv" | "pos" | "log_ratelimit" => {
            v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n))
        }
        _ => json!(v),
    }
}

fn object(map: &BTreeMap<String, String>) -> Value {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), value(k, v))).collect())
}

/// `GET /cluster/firewall/options`.
pub fn cluster_options(sim: &SimInner) -> Value {
    object(&sim.lock().cluster_firewall)
}

/// The VM firewall endpoints.
pub fn dispatch(
    sim: &SimInner,
    method: &str,
    template: &str,
    p: &Params,
) -> Result<Value, ApiError> {
    let node = p.get("node").cloned().unwrap_or_default();
    let id: u32 = p.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut c = sim.lock();
    c.vm_on(&node, id)?;
    let fw = c.firewalls.entry(id).or_default();
    let fields = || -> BTreeMap<String, String> {
        p.iter()
            .filter(|(k, _)| !META.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    match (method, template) {
        ("GET", "/nodes/{node}/qemu/{vmid}/firewall/options") => Ok(object(&fw.options)),
        ("PUT", "/nodes/{node}/qemu/{vmid}/firewall/options") => {
            if let Some(d) = p.get("delete") {
                for k in d.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
                    fw.options.remove(k);
                }
            }
            fw.options.extend(fields());
            Ok(Value::Null)
        }
        ("GET", "/nodes/{node}/qemu/{vmid}/firewall/rules") => Ok(Value::Array(
            fw.rules
                .iter()
                .enumerate()
                .map(|(pos, r)| {
                    let mut o = object(r);
                    o["pos"] = json!(pos);
                    o
                })
                .collect(),
        )),
        ("POST", "/nodes/{node}/qemu/{vmid}/firewall/rules") => {
            // PVE inserts at `pos`, or first when none is given.
            let pos = p
                .get("pos")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
                .min(fw.rules.len());
            fw.rules.insert(pos, fields());
            Ok(Value::Null)
        }
        ("DELETE", "/nodes/{node}/qemu/{vmid}/firewall/rules/{pos}") => {
            let pos = p.get("pos").and_then(|v| v.parse::<usize>().ok());
            match pos.filter(|&i| i < fw.rules.len()) {
                Some(i) => {
                    fw.rules.remove(i);
                    Ok(Value::Null)
                }
                // The simulator's own wording (no PVE message recorded).
                None => Err(ApiError::die(format!(
                    "no rule at position {}",
                    p.get("pos").map_or("", String::as_str)
                ))),
            }
        }
        _ => Err(ApiError {
            status: 501,
            message: format!("Method '{method} {template}' not implemented"),
            errors: BTreeMap::new(),
            bare: false,
        }),
    }
}
