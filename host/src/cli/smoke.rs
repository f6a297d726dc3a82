//! `smoke`: after `packer build`, proves that the new template runs jobs
//! through the Proxmox provider, with the host's own settings. In order:
//! `doctor`; the template's cloud-init drives (at most one, and with
//! `ipconfig0` DHCP when there is one, or clones come up without a network);
//! then one small script job, timed. The clone and boot times are watched
//! from outside the provider (VM status polled every [`POLL`]); the job's
//! own times come from the store.
//!
//! When a `serve` owns the data directory the job goes through it, as any
//! `submit` would; otherwise an engine runs here for this one job (a second
//! engine on the same data directory would fight over the same VMs).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use delegate_proto::{JobManifest, JobState};
use tokio_util::sync::CancellationToken;

use crate::config::{ProviderKind, Settings};
use crate::engine::start_engine;
use crate::jobs::{JobError, JobManager};
use crate::model::{JobRecord, UnixMs};
use crate::provider::proxmox::PveClient;
use crate::provider::proxmox::client::wire::VmConfig;
use crate::provider::proxmox::placement;
use crate::store::Store;

use super::exit::{self, CliError};
use super::{doctor, jobs, out};

/// How often the VM and the job are looked at.
const POLL: Duration = Duration::from_millis(100);

/// How long the host may take to destroy the job's VM.
const DESTROY_WAIT: Duration = Duration::from_secs(600);

/// What the job prints, so the output proves it ran in the VM.
const MARKER: &str = "delegate smoke test: hello from";

/// Where smoke's report goes: stdout as it happens, or (with `--json`)
/// stderr as it happens and one JSON object on stdout at the end.
struct Say {
    json: bool,
    summary: serde_json::Map<String, serde_json::Value>,
}

impl Say {
    fn line(&self, text: &str) -> Result<(), CliError> {
        if self.json {
            out::note(text);
            Ok(())
        } else {
            out::line(text)
        }
    }

    fn text(&self, text: &str) -> Result<(), CliError> {
        if self.json {
            out::note(text.trim_end_matches('\n'));
            Ok(())
        } else {
            out::text(text)
        }
    }

    fn set(&mut self, key: &str, value: serde_json::Value) {
        self.summary.insert(key.to_string(), value);
    }

    /// Ends the report: with `--json`, `{ok, exitCode, stage, ...}` on stdout.
    fn finish(mut self, stage: &str, code: u8) -> Result<u8, CliError> {
        if self.json {
            self.set("ok", (code == exit::OK).into());
            self.set("exitCode", code.into());
            self.set("stage", stage.into());
            out::json(&self.summary)?;
        }
        Ok(code)
    }
}

/// Runs doctor, the template check and one timed job; exit 0 when all pass.
/// With `json`, the progress goes to stderr and stdout gets one object:
/// `ok`, `exitCode`, `stage` (where it ended: doctor, template, job),
/// `doctor` (doctor's JSON), `templates`, `job` and `phases`.
pub async fn run(settings: Settings, json: bool) -> Result<u8, CliError> {
    let mut say = Say {
        json,
        summary: serde_json::Map::new(),
    };
    let (Some(pve), Some(template)) = (
        settings.proxmox.clone(),
        settings.default_vm_template.clone(),
    ) else {
        return Err(CliError::Usage(
            "smoke tests a Proxmox template: set DELEGATE_PROVIDER=proxmox, the PROXMOX_* \
             settings and DEFAULT_VM_TEMPLATE"
                .into(),
        ));
    };
    if settings.provider != ProviderKind::Proxmox {
        return Err(CliError::Usage(
            "smoke tests a Proxmox template: set DELEGATE_PROVIDER=proxmox".into(),
        ));
    }

    say.line("== doctor")?;
    let (doctor_ok, doctor_text, doctor_value) = doctor::report(&settings).await;
    say.text(&doctor_text)?;
    say.set("doctor", doctor_value);
    if !doctor_ok {
        say.line("smoke: doctor found problems (above); no job was started")?;
        return say.finish("doctor", exit::FAILURE);
    }

    // The report's last line has no line break of its own.
    say.line("")?;
    say.line(&format!("== template {template}"))?;
    let client =
        PveClient::new(&pve).map_err(|e| CliError::Usage(format!("the Proxmox settings: {e}")))?;
    match check_template(&client, &template).await {
        Ok(lines) => {
            for l in &lines {
                say.line(&format!("[ ok ] {l}"))?;
            }
            say.set("templates", lines.into());
        }
        Err(why) => {
            say.line(&format!("[FAIL] {why}"))?;
            say.set("templates", serde_json::json!({ "error": why }));
            return say.finish("template", exit::FAILURE);
        }
    }

    say.line(&format!("== hello job on {template}"))?;
    let manifest = JobManifest::from_value(serde_json::json!({
        "task": format!("echo \"{MARKER} $(hostname)\"; uname -sr"),
        "agentType": "script",
        "timeout": 600,
    }))
    .map_err(|e| CliError::Job(JobError::InvalidManifest(e)))?;
    let store = Store::open(&settings.data_dir)?;
    let record = if jobs::engine_running(&store)? {
        say.line(&format!(
            "(a server owns {}: it runs the job)",
            settings.data_dir.display()
        ))?;
        let jobs = JobManager::connect(Arc::new(settings), store);
        let id = jobs.submit(manifest).await?.id;
        watch(&jobs, &client, &id, &mut say).await?
    } else {
        drop(store);
        // The smoke test times a cold start of the template; a warm pool
        // filled for one job would only be destroyed again.
        let mut settings = settings;
        settings.pool.clear();
        let engine = start_engine(settings, CancellationToken::new()).await?;
        let outcome = async {
            let id = engine.manager.submit(manifest).await?.id;
            watch(&engine.manager, &client, &id, &mut say).await
        }
        .await;
        engine.stop().await;
        outcome?
    };
    let code = report(&record, &say)?;
    say.set(
        "job",
        serde_json::json!({
            "id": record.id,
            "state": record.state.as_str(),
            "error": record.error,
            "vmDestroyed": record.vm_destroyed,
            "stdout": record.result.as_ref().map(|r| r.output.stdout.text.as_str()),
        }),
    );
    say.finish("job", code)
}

/// Reads every copy of the template (one per node for local storage) and
/// judges its cloud-init drives; names the bridge every clone will keep.
async fn check_template(client: &PveClient, template: &str) -> Result<Vec<String>, String> {
    let res = client
        .resources(None)
        .await
        .map_err(|e| format!("listing cluster resources: {e}"))?;
    let found = placement::find_templates(&res, template);
    if found.is_empty() {
        return Err(format!("template {template:?} not found (doctor said why)"));
    }
    let mut lines = Vec::new();
    for (vmid, node) in &found {
        let cfg = client
            .vm_config(node, *vmid)
            .await
            .map_err(|e| format!("reading template {vmid}'s config on {node}: {e}"))?;
        lines.push(format!(
            "template {vmid} on {node}: {}",
            judge_cloud_init(*vmid, &cfg)?
        ));
        lines.push(format!(
            "template {vmid}: NIC on {} (every clone keeps it)",
            match cfg.bridges().as_slice() {
                [] => "no bridge".to_string(),
                b => b.join(", "),
            }
        ));
    }
    Ok(lines)
}

/// At most one cloud-init drive, and DHCP on net0 through it when present.
pub fn judge_cloud_init(vmid: u32, cfg: &VmConfig) -> Result<String, String> {
    let drives: Vec<&String> = cfg
        .0
        .iter()
        .filter(|(k, v)| is_drive_key(k) && v.as_str().is_some_and(|s| s.contains("cloudinit")))
        .map(|(k, _)| k)
        .collect();
    match drives.as_slice() {
        [] => Ok("no cloud-init drive: clones configure their network from the image".into()),
        [one] => match cfg.text("ipconfig0") {
            Some(ip) if ip.split(',').any(|kv| kv == "ip=dhcp") => {
                Ok(format!("one cloud-init drive ({one}), ipconfig0 {ip}"))
            }
            other => Err(format!(
                "template {vmid} has a cloud-init drive ({one}) but ipconfig0 is {}: clones \
                 would come up without a network. Set it once: qm set {vmid} --ipconfig0 ip=dhcp",
                other.map_or_else(|| "unset".to_string(), |v| format!("{v:?}"))
            )),
        },
        many => Err(format!(
            "template {vmid} has {} cloud-init drives ({}); keep one: qm set {vmid} --delete {}",
            many.len(),
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            many[1..]
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
}

fn is_drive_key(key: &str) -> bool {
    ["ide", "sata", "scsi", "virtio"].iter().any(|bus| {
        key.strip_prefix(bus)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
    })
}

/// When each phase ended, unix ms; `None` when it was not seen.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Phases {
    /// Submitted.
    pub submitted: UnixMs,
    /// The clone finished (the VM exists without its clone lock).
    pub cloned: Option<UnixMs>,
    /// The VM runs (configured, disk grown, started).
    pub booted: Option<UnixMs>,
    /// The runner in the VM fetched its job (agent up, bootstrap written).
    pub ready: Option<UnixMs>,
    /// The job was final.
    pub done: Option<UnixMs>,
    /// The host destroyed the VM.
    pub destroyed: Option<UnixMs>,
}

impl Phases {
    /// The table printed at the end.
    pub fn render(&self) -> String {
        let rows = [
            ("clone", self.cloned, "submitted -> clone finished"),
            ("boot", self.booted, "-> VM configured and running"),
            (
                "guest-ready",
                self.ready,
                "-> guest agent up, runner fetched its job",
            ),
            ("job", self.done, "-> job final"),
            ("destroy", self.destroyed, "-> VM destroyed"),
        ];
        let mut out = String::new();
        let mut from = Some(self.submitted);
        for (name, at, what) in rows {
            let took = match (from, at) {
                (Some(a), Some(b)) => format!("{:>7.1} s", (b - a).max(0) as f64 / 1000.0),
                _ => format!("{:>9}", "-"),
            };
            let _ = writeln!(out, "  {name:<12}{took}   {what}");
            if at.is_some() {
                from = at;
            }
        }
        if let Some(done) = self.done {
            let total = (done - self.submitted).max(0) as f64 / 1000.0;
            let _ = writeln!(
                out,
                "  {:<12}{total:>7.1} s   submitted -> job final",
                "total"
            );
        }
        out
    }
}

/// Follows the job to its end, noting when each phase ended. A state
/// change announced by an engine in this process is read at once (a hello
/// job may be `running` for less than one poll); a server's is seen at the
/// next poll.
async fn watch(
    jobs: &JobManager,
    client: &PveClient,
    id: &str,
    say: &mut Say,
) -> Result<JobRecord, CliError> {
    let mut changes = jobs.subscribe();
    let mut record = jobs.get(id)?;
    say.line(&format!("submitted job {id}"))?;
    let mut phases = Phases {
        submitted: record.created_at,
        ..Phases::default()
    };
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut cancelled = false;
    loop {
        if phases.ready.is_none() && record.state == JobState::Running {
            phases.ready = Some(now_ms());
            say.line("the runner in the VM has its job")?;
        }
        if record.state.is_final() {
            break;
        }
        if let Some(vm) = &record.vm
            && let (Ok(vmid), Some(node)) = (vm.id.parse::<u32>(), vm.node.as_deref())
            && phases.booted.is_none()
            && let Ok(st) = client.vm_status(node, vmid).await
        {
            let now = now_ms();
            if phases.cloned.is_none() && st.lock.as_deref() != Some("clone") {
                phases.cloned = Some(now);
                say.line(&format!("VM {vmid} cloned on {node}"))?;
            }
            if st.status == "running" {
                phases.booted = Some(now);
                say.line(&format!("VM {vmid} running"))?;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = changes.recv() => {}
            _ = &mut interrupt, if !cancelled => {
                say.line(&format!("interrupted: cancelling job {id} (its VM is destroyed)"))?;
                jobs.cancel(id).await?;
                cancelled = true;
            }
        }
        record = jobs.get(id)?;
    }
    phases.done = record.completed_at.or_else(|| Some(now_ms()));
    // The job is over before its VM is: wait for the host to destroy it (an
    // engine stopped now could leave it behind, and it is part of the test).
    let until = tokio::time::Instant::now() + DESTROY_WAIT;
    while record.vm.is_some() && !record.vm_destroyed && tokio::time::Instant::now() < until {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = changes.recv() => {}
        }
        record = jobs.get(id)?;
    }
    phases.destroyed = record.vm_destroyed.then(now_ms);
    let rendered = phases.render();
    say.text(&rendered)?;
    say.set("phases", rendered.lines().collect::<Vec<_>>().into());
    Ok(record)
}

/// Prints the verdict; the exit code.
fn report(record: &JobRecord, say: &Say) -> Result<u8, CliError> {
    let stdout = record
        .result
        .as_ref()
        .map(|r| r.output.stdout.text.as_str())
        .unwrap_or_default();
    for line in stdout.lines() {
        say.line(&format!("  | {line}"))?;
    }
    if let Some(vm) = record.vm.as_ref().filter(|_| !record.vm_destroyed) {
        say.line(&format!(
            "smoke: FAILED, VM {} was not destroyed within {} s (the host's cleanup retries)",
            vm.id,
            DESTROY_WAIT.as_secs()
        ))?;
        return Ok(exit::FAILURE);
    }
    if record.state == JobState::Success && stdout.contains(MARKER) {
        say.line("smoke: ok, the template runs jobs")?;
        return Ok(exit::OK);
    }
    say.line(&format!(
        "smoke: FAILED, job {} ended {}{}",
        record.id,
        record.state,
        record
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    ))?;
    Ok(match exit::for_state(record.state) {
        exit::OK => exit::FAILURE,
        other => other,
    })
}

fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> VmConfig {
        VmConfig(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect(),
        )
    }

    #[test]
    fn one_cloud_init_drive_needs_dhcp_on_ipconfig0() {
        let ok = cfg(&[
            ("ide0", "local-lvm:vm-9000-cloudinit,media=cdrom"),
            ("ipconfig0", "ip=dhcp"),
        ]);
        assert!(judge_cloud_init(9000, &ok).unwrap().contains("ide0"));
        let unset = cfg(&[("ide0", "local-lvm:vm-9000-cloudinit,media=cdrom")]);
        let e = judge_cloud_init(9000, &unset).unwrap_err();
        assert!(e.contains("qm set 9000 --ipconfig0 ip=dhcp"), "{e}");
        let fixed = cfg(&[
            ("ide0", "local-lvm:vm-9000-cloudinit,media=cdrom"),
            ("ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1"),
        ]);
        assert!(judge_cloud_init(9000, &fixed).is_err());
    }

    #[test]
    fn two_cloud_init_drives_are_refused_and_none_is_fine() {
        let two = cfg(&[
            ("ide0", "local-lvm:vm-9000-cloudinit,media=cdrom"),
            ("ide2", "local-lvm:vm-9100-cloudinit,media=cdrom"),
            ("ipconfig0", "ip=dhcp"),
        ]);
        let e = judge_cloud_init(9000, &two).unwrap_err();
        assert!(
            e.contains("2 cloud-init drives") && e.contains("--delete ide2"),
            "{e}"
        );
        let none = cfg(&[
            ("scsi0", "ceph:base-9000-disk-0,size=8G"),
            ("ide2", "none,media=cdrom"),
        ]);
        assert!(judge_cloud_init(9000, &none).is_ok());
    }

    #[test]
    fn phases_render_each_step_from_the_one_before() {
        let p = Phases {
            submitted: 1_000,
            cloned: Some(3_500),
            booted: Some(4_000),
            ready: Some(9_000),
            done: Some(10_200),
            destroyed: Some(10_500),
        };
        let text = p.render();
        assert!(text.contains("clone") && text.contains("2.5 s"), "{text}");
        assert!(text.contains("boot") && text.contains("0.5 s"), "{text}");
        assert!(
            text.contains("guest-ready") && text.contains("5.0 s"),
            "{text}"
        );
        assert!(text.contains("job") && text.contains("1.2 s"), "{text}");
        assert!(text.contains("destroy") && text.contains("0.3 s"), "{text}");
        assert!(text.contains("total") && text.contains("9.2 s"), "{text}");
        let unseen = Phases {
            submitted: 0,
            done: Some(500),
            ..Phases::default()
        };
        let text = unseen.render();
        assert!(text.lines().next().unwrap().contains('-'), "{text}");
        assert!(text.contains("0.5 s"), "{text}");
    }
}
