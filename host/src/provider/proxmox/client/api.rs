//! Typed wrappers for the endpoints the provider uses, one method each, with
//! parameter names exactly as in the API schema.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::PveError;
use super::wire::{NodeInfo, Params, Resource, StorageInfo, Version, VmConfig, VmStatus};
use super::{Method, PveClient, Upid};

/// Options of `POST /nodes/{node}/qemu/{vmid}/clone`.
#[derive(Debug, Clone, Default)]
pub struct CloneOptions {
    /// `full=1` for a full copy; `false` asks for a linked clone.
    pub full: bool,
    /// Target storage (full clones only).
    pub storage: Option<String>,
    /// Name of the new VM (`dns-name`).
    pub name: Option<String>,
    /// Description of the new VM.
    pub description: Option<String>,
    /// Pool to add it to.
    pub pool: Option<String>,
    /// Node to create it on, when not the template's (shared storage only).
    pub target: Option<String>,
}

/// Effective permissions: path → privilege → propagate.
pub type Permissions = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

fn vm_path(node: &str, vmid: u32) -> String {
    format!("/nodes/{node}/qemu/{vmid}")
}

impl PveClient {
    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, PveError> {
        self.get("/version", Params::new()).await
    }

    /// `GET /nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, PveError> {
        self.get("/nodes", Params::new()).await
    }

    /// `GET /cluster/resources?type=...`.
    pub async fn resources(&self, kind: Option<&str>) -> Result<Vec<Resource>, PveError> {
        self.get("/cluster/resources", Params::new().opt_text("type", kind))
            .await
    }

    /// `GET /nodes/{node}/storage`.
    pub async fn storages(&self, node: &str) -> Result<Vec<StorageInfo>, PveError> {
        self.get(&format!("/nodes/{node}/storage"), Params::new())
            .await
    }

    /// `GET /nodes/{node}/qemu/{vmid}/config`.
    pub async fn vm_config(&self, node: &str, vmid: u32) -> Result<VmConfig, PveError> {
        self.get(&format!("{}/config", vm_path(node, vmid)), Params::new())
            .await
    }

    /// `GET /nodes/{node}/qemu/{vmid}/status/current`.
    pub async fn vm_status(&self, node: &str, vmid: u32) -> Result<VmStatus, PveError> {
        self.get(
            &format!("{}/status/current", vm_path(node, vmid)),
            Params::new(),
        )
        .await
    }

    /// `POST .../clone`: starts the clone and returns its UPID without
    /// waiting, so the caller can record the new VM first.
    pub async fn clone_vm(
        &self,
        node: &str,
        vmid: u32,
        newid: u32,
        opts: &CloneOptions,
    ) -> Result<Upid, PveError> {
        let mut p = Params::new()
            .int("newid", newid)
            .flag("full", opts.full)
            .opt_text("name", opts.name.as_deref())
            .opt_text("description", opts.description.as_deref())
            .opt_text("pool", opts.pool.as_deref())
            .opt_text("target", opts.target.as_deref().filter(|t| *t != node));
        if opts.full {
            p = p.opt_text("storage", opts.storage.as_deref());
        }
        let path = format!("{}/clone", vm_path(node, vmid));
        // No retry here: a clone that may have started must not be started
        // twice; the caller handles `config file already exists`.
        let value = self.call_once(Method::Post, &path, p).await?;
        upid_of(Method::Post, &path, &value)
    }

    /// `PUT .../config` (synchronous).
    pub async fn set_config(&self, node: &str, vmid: u32, params: Params) -> Result<(), PveError> {
        self.call(
            Method::Put,
            &format!("{}/config", vm_path(node, vmid)),
            params,
        )
        .await?;
        Ok(())
    }

    /// `PUT .../resize`; waits for the task when one is returned.
    pub async fn resize(
        &self,
        node: &str,
        vmid: u32,
        disk: &str,
        size: &str,
        timeout: Duration,
    ) -> Result<(), PveError> {
        let path = format!("{}/resize", vm_path(node, vmid));
        let value = self
            .call(
                Method::Put,
                &path,
                Params::new().text("disk", disk).text("size", size),
            )
            .await?;
        if value.is_string() {
            let upid = upid_of(Method::Put, &path, &value)?;
            self.wait_task(&upid, timeout).await?;
        }
        Ok(())
    }

    /// `POST .../status/start` and wait.
    pub async fn start_vm(&self, node: &str, vmid: u32, timeout: Duration) -> Result<(), PveError> {
        self.run_task(
            Method::Post,
            &format!("{}/status/start", vm_path(node, vmid)),
            Params::new(),
            timeout,
        )
        .await
        .map(drop)
    }

    /// `POST .../status/stop` (hard) and wait.
    pub async fn stop_vm(&self, node: &str, vmid: u32, timeout: Duration) -> Result<(), PveError> {
        self.run_task(
            Method::Post,
            &format!("{}/status/stop", vm_path(node, vmid)),
            Params::new(),
            timeout,
        )
        .await
        .map(drop)
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}?purge=1&destroy-unreferenced-disks=1`
    /// and wait.
    pub async fn destroy_vm(
        &self,
        node: &str,
        vmid: u32,
        timeout: Duration,
    ) -> Result<(), PveError> {
        self.run_task(
            Method::Delete,
            &vm_path(node, vmid),
            Params::new()
                .flag("purge", true)
                .flag("destroy-unreferenced-disks", true),
            timeout,
        )
        .await
        .map(drop)
    }

    /// `POST .../agent/ping`, once (the caller paces its own retries).
    pub async fn agent_ping(&self, node: &str, vmid: u32) -> Result<(), PveError> {
        self.call_once(
            Method::Post,
            &format!("{}/agent/ping", vm_path(node, vmid)),
            Params::new(),
        )
        .await
        .map(drop)
    }

    /// `POST .../agent/file-write` with PVE doing the base64 (`encode=1`).
    pub async fn agent_file_write(
        &self,
        node: &str,
        vmid: u32,
        file: &str,
        content: &str,
    ) -> Result<(), PveError> {
        self.call(
            Method::Post,
            &format!("{}/agent/file-write", vm_path(node, vmid)),
            Params::new().text("file", file).text("content", content),
        )
        .await
        .map(drop)
    }

    /// `GET /access/permissions` (for the calling token or user).
    pub async fn permissions(&self, path: Option<&str>) -> Result<Permissions, PveError> {
        self.get("/access/permissions", Params::new().opt_text("path", path))
            .await
    }
}

fn upid_of(method: Method, path: &str, value: &serde_json::Value) -> Result<Upid, PveError> {
    let text = value.as_str().ok_or_else(|| PveError::Decode {
        method: method.as_str(),
        path: path.to_string(),
        message: format!("expected a UPID, got {value}"),
    })?;
    Upid::parse(text)
}
