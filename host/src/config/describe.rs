//! The settings as people read them (`delegate-host config`).

use std::time::Duration;

use delegate_proto::size::format_size;

use super::Settings;

impl Settings {
    /// The effective settings as `(variable, value)` pairs, secrets masked,
    /// for `delegate-host config`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        let secs = |d: Duration| d.as_secs().to_string();
        let mut out = vec![
            ("CALLBACK_HOST", self.callback_bind.ip().to_string()),
            ("CALLBACK_PORT", self.callback_bind.port().to_string()),
            ("CALLBACK_URL", self.callback_url.clone()),
            (
                "DELEGATE_METRICS_ADDR",
                self.metrics_bind
                    .map_or_else(|| "(off)".into(), |a| a.to_string()),
            ),
            ("DEFAULT_VM_TEMPLATE", opt(&self.default_vm_template)),
            ("DEFAULT_TIMEOUT", secs(self.default_timeout)),
            ("DELEGATE_QUEUE_TIMEOUT_SECONDS", secs(self.queue_timeout)),
            ("DEFAULT_CPU", self.default_cpu.to_string()),
            ("DEFAULT_MEMORY", format_size(self.default_memory)),
            ("DEFAULT_DISK", format_size(self.default_disk)),
            (
                "HEARTBEAT_THRESHOLD_SECONDS",
                secs(self.heartbeat_threshold),
            ),
            ("CLEANUP_INTERVAL_SECONDS", secs(self.cleanup_interval)),
            (
                "DELEGATE_PROVIDER",
                match &self.provider_pick {
                    Some(why) => format!("auto → {} ({why})", self.provider.as_str()),
                    None => self.provider.as_str().into(),
                },
            ),
            ("DELEGATE_DATA_DIR", self.data_dir.display().to_string()),
            (
                "DELEGATE_GUEST_BIN",
                self.local
                    .as_ref()
                    .map_or_else(|| "(none)".into(), |l| l.guest_bin.display().to_string()),
            ),
            ("DELEGATE_MAX_RUNNING", self.max_running.to_string()),
            (
                "DELEGATE_POOL",
                if self.pool.is_empty() {
                    "(none)".into()
                } else {
                    let classes: Vec<String> = self.pool.iter().map(|c| c.to_string()).collect();
                    classes.join(",")
                },
            ),
            ("DELEGATE_POOL_MAX_AGE", secs(self.pool_max_age)),
            (
                "DELEGATE_POOL_KEEP_ON_EXIT",
                self.pool_keep_on_exit.to_string(),
            ),
            (
                "DELEGATE_MAX_PROVISIONING",
                self.max_provisioning.to_string(),
            ),
            (
                "DELEGATE_MAX_ARTIFACT_BYTES",
                format_size(self.max_artifact_bytes),
            ),
            ("DELEGATE_MAX_LOG_BYTES", format_size(self.max_log_bytes)),
            (
                "DELEGATE_REPO_ROOTS",
                if self.repo_roots.is_empty() {
                    "(none: no repositories)".into()
                } else {
                    let roots: Vec<String> = self
                        .repo_roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect();
                    roots.join(":")
                },
            ),
            ("DELEGATE_MAX_REPO_BYTES", format_size(self.max_repo_bytes)),
            (
                "DELEGATE_MAX_BUDGET_USD",
                self.max_budget_usd
                    .map_or_else(|| "(none)".into(), |usd| usd.to_string()),
            ),
            (
                "DELEGATE_PERSISTENT_TTL",
                humantime::format_duration(self.persistent_ttl).to_string(),
            ),
            (
                "DELEGATE_RETENTION_DAYS",
                self.retention
                    .map_or_else(|| "0".into(), |d| (d.as_secs() / 86_400).to_string()),
            ),
            (
                "DELEGATE_HEARTBEAT_INTERVAL_SECONDS",
                secs(self.heartbeat_interval),
            ),
            ("DELEGATE_CANCEL_GRACE_SECONDS", secs(self.cancel_grace)),
            (
                "DELEGATE_LOCAL_UNSANDBOXED",
                self.local_unsandboxed.to_string(),
            ),
            (
                "DELEGATE_LOCAL_JOB_UID",
                self.local
                    .as_ref()
                    .map_or_else(|| "(none)".into(), |l| l.job_uid.to_string()),
            ),
            (
                "DELEGATE_LOCAL_JOB_GID",
                self.local
                    .as_ref()
                    .map_or_else(|| "(none)".into(), |l| l.job_gid.to_string()),
            ),
            (
                "DELEGATE_LOCAL_READONLY_DIRS",
                self.local.as_ref().map_or_else(
                    || "(none)".into(),
                    |l| {
                        let dirs: Vec<String> = l
                            .readonly_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect();
                        dirs.join(",")
                    },
                ),
            ),
            (
                "DELEGATE_HTTP_TOKEN",
                self.http_token
                    .as_ref()
                    .map_or_else(|| "(none)".into(), |_| delegate_proto::REDACTED.into()),
            ),
            ("DELEGATE_ALLOWED_HOSTS", self.allowed_hosts.join(",")),
            ("DELEGATE_ALLOWED_ORIGINS", self.allowed_origins.join(",")),
            ("DELEGATE_WAIT_DEFAULT_SECONDS", secs(self.wait_default)),
            ("DELEGATE_WAIT_MAX_SECONDS", secs(self.wait_max)),
            (
                "DELEGATE_MAX_RESOURCE_BYTES",
                format_size(self.max_resource_bytes),
            ),
            (
                "DELEGATE_MAX_MEMORY",
                self.max_memory.map_or_else(|| "(none)".into(), format_size),
            ),
        ];
        if let Some(p) = &self.proxmox {
            out.extend(p.describe());
        }
        if let Some(q) = &self.qemu {
            out.extend(q.describe());
        }
        out.extend(crate::callback::settings::describe(&self.callback_conn));
        out.extend(super::http_conn::describe(&self.http_conn));
        out.extend(self.egress.describe());
        out
    }
}
