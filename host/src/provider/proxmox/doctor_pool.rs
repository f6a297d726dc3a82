//! `doctor`'s checks of the warm pools (`DELEGATE_POOL`) against the
//! cluster: pools that could never fill are reported before they spend a
//! night cloning. A class's template must be visible; a VM of the class must
//! fit a node's free memory, and all the pools together the nodes'; the
//! VMID range must hold every pool VM beside `DELEGATE_MAX_RUNNING` jobs.

use std::ops::RangeInclusive;

use super::client::PveClient;
use super::client::wire::Resource;
use super::doctor::Check;
use super::placement;
use super::settings::ProxmoxSettings;
use crate::pool::PoolClass;

const GIB: f64 = (1u64 << 30) as f64;

fn check(name: &str, ok: bool, detail: String) -> Check {
    Check {
        name: name.into(),
        ok,
        detail,
    }
}

/// The checks, from the cluster's resources as the API lists them.
pub async fn pool_checks(
    client: &PveClient,
    s: &ProxmoxSettings,
    classes: &[PoolClass],
    max_running: usize,
) -> Vec<Check> {
    if classes.is_empty() {
        return Vec::new();
    }
    match client.resources(None).await {
        Ok(res) => judge(
            &res,
            s.nodes.as_deref(),
            &s.vmid_range,
            classes,
            max_running,
        ),
        Err(e) => vec![check(
            "warm pools",
            false,
            format!("cannot list the cluster to check DELEGATE_POOL: {e}"),
        )],
    }
}

/// The checks over a listing (no I/O).
pub fn judge(
    res: &[Resource],
    nodes: Option<&[String]>,
    vmid_range: &RangeInclusive<u32>,
    classes: &[PoolClass],
    max_running: usize,
) -> Vec<Check> {
    let mut out = Vec::new();
    // Free memory per node the provider may place on.
    let free: Vec<(String, u64)> = res
        .iter()
        .filter(|r| r.kind == "node" && r.status.as_deref() == Some("online"))
        .filter(|r| nodes.is_none_or(|n| r.node.as_ref().is_some_and(|x| n.contains(x))))
        .filter_map(|r| {
            Some((
                r.node.clone()?,
                r.maxmem.unwrap_or(0).saturating_sub(r.mem.unwrap_or(0)),
            ))
        })
        .collect();
    let most_free = free.iter().map(|(_, f)| *f).max().unwrap_or(0);
    let all_free: u64 = free.iter().map(|(_, f)| *f).sum();
    let mut needed: u64 = 0;
    for c in classes {
        let name = format!("warm pool {}", c.key());
        if placement::find_templates(res, &c.template).is_empty() {
            out.push(check(
                &name,
                false,
                format!("no template named or numbered {:?} is visible", c.template),
            ));
            continue;
        }
        let mem = c.size.memory_bytes;
        needed = needed.saturating_add(mem.saturating_mul(c.target as u64));
        out.push(check(
            &name,
            mem <= most_free,
            if mem <= most_free {
                format!("{} VMs of {:.1} GiB memory", c.target, mem as f64 / GIB)
            } else {
                format!(
                    "a VM needs {:.1} GiB memory and no allowed node has that much free \
                     (most: {:.1} GiB): this pool can never fill",
                    mem as f64 / GIB,
                    most_free as f64 / GIB
                )
            },
        ));
    }
    out.push(check(
        "warm pools' memory",
        needed <= all_free,
        format!(
            "the pools hold {:.1} GiB of the {:.1} GiB free on the allowed nodes{}",
            needed as f64 / GIB,
            all_free as f64 / GIB,
            if needed <= all_free {
                ""
            } else {
                ": they can never fill; shrink DELEGATE_POOL"
            }
        ),
    ));
    let ids = u64::from(vmid_range.end().saturating_sub(*vmid_range.start())) + 1;
    let in_range_taken = res
        .iter()
        .filter_map(|r| r.vmid)
        .filter(|v| u32::try_from(*v).is_ok_and(|v| vmid_range.contains(&v)))
        .count() as u64;
    let pooled: u64 = classes.iter().map(|c| c.target as u64).sum();
    let wanted = pooled + max_running as u64;
    out.push(check(
        "warm pools' VMIDs",
        wanted <= ids,
        format!(
            "PROXMOX_VMID_RANGE holds {ids} ids ({in_range_taken} in use now); pools need \
             {pooled} beside up to {max_running} jobs (DELEGATE_MAX_RUNNING){}",
            if wanted <= ids {
                ""
            } else {
                ": widen the range or the pools can never fill"
            }
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::parse_pool;

    fn res(json: serde_json::Value) -> Vec<Resource> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn pools_that_can_never_fill_fail() {
        let gib = 1u64 << 30;
        let cluster = res(serde_json::json!([
            {"type": "node", "id": "node/pve1", "node": "pve1", "status": "online",
             "maxmem": 16 * gib, "mem": 4 * gib},
            {"type": "node", "id": "node/pve2", "node": "pve2", "status": "online",
             "maxmem": 16 * gib, "mem": 14 * gib},
            {"type": "qemu", "id": "qemu/9000", "vmid": 9000, "node": "pve1",
             "name": "delegate-template", "template": 1}
        ]));
        let fits = parse_pool("delegate-template:2c4g20g=3").unwrap();
        let checks = judge(&cluster, None, &(90000..=90999), &fits, 4);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");

        let too_big = parse_pool("delegate-template:2c16g20g=1,missing:1c1g8g=1").unwrap();
        let checks = judge(&cluster, None, &(90000..=90999), &too_big, 4);
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "warm pool delegate-template:2c16g20g",
                "warm pool missing:1c1g8g",
                "warm pools' memory"
            ],
            "{checks:#?}"
        );

        let many = parse_pool("delegate-template:1c1g8g=8").unwrap();
        let checks = judge(&cluster, None, &(90000..=90009), &many, 4);
        let ids = checks
            .iter()
            .find(|c| c.name == "warm pools' VMIDs")
            .unwrap();
        assert!(!ids.ok && ids.detail.contains("widen"), "{ids:?}");
    }
}
