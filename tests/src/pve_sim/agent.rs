//! The guest agent: answers once the VM has booted (and never with the
//! `agent_never_ready` fault); `file-write` writes into the VM's directory,
//! and writing the bootstrap starts the guest runner, as the template's
//! systemd `.path` unit would.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine;

use super::guest::{GuestProcess, write_guest_file};
use super::http::ApiError;
use super::state::BootstrapWrite;
use super::{BOOTSTRAP_PATH, SimInner};

type Params = BTreeMap<String, String>;

/// `Ok` when VM `id` on `node` runs and its agent answers; PVE's error
/// otherwise.
pub fn agent_ready(sim: &SimInner, node: &str, id: u32) -> Result<(), ApiError> {
    let c = sim.lock();
    let vm = c.vm_on(node, id)?;
    if !vm.running {
        return Err(ApiError::die(format!("VM {id} is not running")));
    }
    if !vm.agent_enabled() {
        return Err(ApiError::die("No QEMU guest agent configured"));
    }
    match vm.agent_ready_at {
        Some(at) if Instant::now() >= at => Ok(()),
        _ => Err(ApiError::die("QEMU guest agent is not running")),
    }
}

/// `agent/file-write`: writes `content` (given as base64 when `encode` is
/// false) into the VM's directory at `file`, and starts the guest runner
/// when the file is the bootstrap.
pub fn file_write(sim: &SimInner, node: &str, id: u32, p: &Params) -> Result<(), ApiError> {
    agent_ready(sim, node, id)?;
    let encode = p
        .get("encode")
        .and_then(|v| super::schema::parse_bool(v))
        .unwrap_or(true);
    let content = if encode {
        p["content"].clone().into_bytes()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(&p["content"])
            .map_err(|e| ApiError::die(format!("Agent error: invalid base64: {e}")))?
    };
    let file = p["file"].clone();
    let mut c = sim.lock();
    let vm = c.vm_on_mut(node, id)?;
    let path = write_guest_file(&vm.root, &file, &content)
        .map_err(|e| ApiError::die(format!("Agent error: failed to open file '{file}': {e}")))?;
    if file == BOOTSTRAP_PATH {
        let job_id = serde_json::from_slice::<serde_json::Value>(&content)
            .ok()
            .and_then(|v| v["job_id"].as_str().map(str::to_string))
            .unwrap_or_default();
        let write = BootstrapWrite {
            vmid: id,
            vm_created: vm.created,
            job_id,
        };
        c.bootstraps.push(write);
    }
    let vm = c.vm_on_mut(node, id)?;
    if file == BOOTSTRAP_PATH
        && vm.guest.is_none()
        && let Some(cmd) = &sim.guest
    {
        {
            let g = GuestProcess::spawn(cmd, &vm.root, &path).map_err(|e| {
                ApiError::die(format!("simulated systemd could not start the runner: {e}"))
            })?;
            vm.guest = Some(g);
        }
    }
    Ok(())
}
