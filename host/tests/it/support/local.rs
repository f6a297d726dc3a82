//! The local provider with this machine's real `delegate-guest` (build it
//! first: `cargo build -p delegate-guest`), and finding a job's processes
//! by a marker in their command line (`exec -a`), which shows them
//! whatever pid namespace they run in.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use delegate_host::config::Settings;
use delegate_host::provider::local::{LocalArgs, LocalProvider, LocalSettings};
use delegate_host::resolve::ProcessMachine;
use delegate_proto::JobManifest;

use super::harness::{Host, settings};

/// This machine's local provider settings, with the sandboxes under `dir`.
pub fn local_settings(dir: &Path) -> LocalSettings {
    LocalArgs::default()
        .resolve(dir, &ProcessMachine)
        .expect("delegate-guest must be built first: cargo build -p delegate-guest")
}

/// A host on the local provider, with the test settings and `tweak`.
pub async fn local_host(dir: &Path, tweak: impl FnOnce(&mut Settings)) -> Host {
    let provider =
        Arc::new(LocalProvider::new(local_settings(dir)).expect("user namespaces are available"));
    let s = settings(dir, |s| {
        s.local = Some(local_settings(dir));
        tweak(s);
    });
    Host::start(s, provider).await
}

/// A quiet script job (`simple` status: no heartbeats, no output).
pub fn quiet_script(task: &str) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": task,
        "agentType": "script",
        "statusMode": "simple",
        "timeout": 600,
    }))
    .unwrap()
}

/// A marker unique on this machine, for `exec -a`.
pub fn marker(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "dlgt-{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Pids of live processes whose command line contains `marker` (a zombie's
/// is empty, so a process counts as gone once it exited).
pub fn pids_with(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(marker)
                .then_some(pid)
        })
        .collect()
}
