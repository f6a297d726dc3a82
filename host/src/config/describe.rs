//! The settings as people read them (`delegate-host config`), and the
//! settings tests and benchmarks start from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use delegate_proto::size::format_size;

use super::{MachineEnv, ProviderKind, RawSettings, Settings};

impl Settings {
    /// Settings for tests and benchmarks: everything at its default, the
    /// data under `data_dir`, the callback API on 127.0.0.1 port 0.
    pub fn for_tests(data_dir: &Path, guest_bin: Option<PathBuf>) -> Settings {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            raw: RawSettings,
        }
        // Parsing an empty command line still reads the environment; the
        // values below override whatever matters for isolation.
        let mut raw = Wrapper::try_parse_from(["delegate-host"])
            .unwrap_or_else(|e| panic!("test settings: the environment does not parse: {e}"))
            .raw;
        raw.callback_host = "127.0.0.1".into();
        raw.callback_port = 0;
        raw.callback_url = None;
        raw.provider = ProviderKind::Local;
        raw.data_dir = Some(data_dir.to_path_buf());
        raw.http_token = None;
        raw.http_token_file = None;
        let machine = MachineEnv::current();
        // Resolution insists on an executable guest for the local provider;
        // tests that use a provider double have none, so any executable
        // stands in and is removed again below.
        raw.guest_bin = guest_bin.clone().or(machine.current_exe.clone());
        let mut s = Settings::resolve_with(raw, &machine)
            .unwrap_or_else(|e| panic!("test settings failed to resolve: {e}"));
        s.guest_bin = guest_bin;
        s
    }

    /// The effective settings as `(variable, value)` pairs, secrets masked,
    /// for `delegate-host config`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        let secs = |d: Duration| d.as_secs().to_string();
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "(none)".into(), |p| p.display().to_string())
        };
        let mut out = vec![
            ("CALLBACK_HOST", self.callback_bind.ip().to_string()),
            ("CALLBACK_PORT", self.callback_bind.port().to_string()),
            ("CALLBACK_URL", self.callback_url.clone()),
            ("DEFAULT_VM_TEMPLATE", opt(&self.default_vm_template)),
            ("DEFAULT_TIMEOUT", secs(self.default_timeout)),
            ("DEFAULT_CPU", self.default_cpu.to_string()),
            ("DEFAULT_MEMORY", format_size(self.default_memory)),
            ("DEFAULT_DISK", format_size(self.default_disk)),
            (
                "HEARTBEAT_THRESHOLD_SECONDS",
                secs(self.heartbeat_threshold),
            ),
            ("CLEANUP_INTERVAL_SECONDS", secs(self.cleanup_interval)),
            ("DELEGATE_PROVIDER", self.provider.as_str().into()),
            ("DELEGATE_DATA_DIR", self.data_dir.display().to_string()),
            ("DELEGATE_GUEST_BIN", path(&self.guest_bin)),
            ("DELEGATE_MAX_RUNNING", self.max_running.to_string()),
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
        ];
        if let Some(p) = &self.proxmox {
            out.extend(p.describe());
        }
        if let Some(q) = &self.qemu {
            out.extend(q.describe());
        }
        out
    }
}
