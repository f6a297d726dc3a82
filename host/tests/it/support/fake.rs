//! A provider double whose "VMs" are tokio tasks running a scripted guest
//! that speaks the real callback protocol over HTTP (real reqwest to the
//! real callback API). What a job does is written in its task text, and
//! the same script is its VM template ([`template_for`]; providers see no
//! manifest, and a template is what decides how a real VM behaves):
//!
//! - `run=MS` runs MS milliseconds (events, logs, heartbeats) then succeeds
//! - `exit=CODE` ends with that exit code instead (failed unless 0)
//! - `hang` runs until told to cancel
//! - `silent` never calls back (the heartbeat lease must catch it)
//! - `artifacts` uploads a small archive before the result
//! - `provision=MS` provisioning takes MS milliseconds; `provision=hang`
//!   never finishes; `provision=fail` fails
//! - `ignore-cancel` keeps running after the host said cancel

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use delegate_host::provider::{
    Isolation, OwnedVm, Provider, ProviderError, ProvisionRequest, VmRef,
};
use delegate_proto::api::{self, JobSpec, PROTOCOL_HEADER, PROTOCOL_VERSION};
use delegate_proto::event::{Event, EventBatch, EventKind, EventsAck, LogChunk, LogStream, Phase};
use delegate_proto::{Bootstrap, JobResult, OutputTail, OutputTails, ResultStatus};

/// What the job's task asks for.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub run_ms: Option<u64>,
    pub exit: i32,
    pub hang: bool,
    pub silent: bool,
    pub artifacts: bool,
    pub provision_ms: u64,
    pub provision_hang: bool,
    pub provision_fail: bool,
    pub ignore_cancel: bool,
}

/// The template naming a task's script: its words joined by `.`, each
/// `KEY=VALUE` as `KEY_VALUE` (what a template name may hold).
pub fn template_for(task: &str) -> Option<String> {
    let words: Vec<String> = task
        .split_whitespace()
        .map(|w| w.replacen('=', "_", 1))
        .collect();
    (!words.is_empty()).then(|| words.join("."))
}

impl Script {
    /// The script a [`template_for`] template names.
    pub fn from_template(template: Option<&str>) -> Script {
        let task: Vec<String> = template
            .unwrap_or_default()
            .split('.')
            .map(|w| w.replacen('_', "=", 1))
            .collect();
        Script::parse(&task.join(" "))
    }

    pub fn parse(task: &str) -> Script {
        let mut s = Script::default();
        for word in task.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            match (k, v) {
                ("run", ms) => s.run_ms = ms.parse().ok(),
                ("exit", c) => s.exit = c.parse().unwrap_or(1),
                ("hang", _) => s.hang = true,
                ("silent", _) => s.silent = true,
                ("artifacts", _) => s.artifacts = true,
                ("provision", "hang") => s.provision_hang = true,
                ("provision", "fail") => s.provision_fail = true,
                ("provision", ms) => s.provision_ms = ms.parse().unwrap_or(0),
                ("ignore-cancel", _) => s.ignore_cancel = true,
                _ => {}
            }
        }
        s
    }
}

#[derive(Default)]
pub struct Record {
    next: u64,
    /// Live VMs: id → (job id, guest task).
    vms: HashMap<String, (String, tokio::task::JoinHandle<()>)>,
    /// Destroy calls per VM id.
    pub destroys: HashMap<String, u32>,
    /// Job ids in the order provisioning started.
    pub provision_order: Vec<String>,
    provisioning: usize,
    pub max_provisioning: usize,
    pub max_alive: usize,
    /// Job id of every VM ever created.
    pub created: HashMap<String, String>,
    /// The latest bootstrap each job's VM was given (tests act as guests).
    pub bootstraps: HashMap<String, Bootstrap>,
    /// How long a destroy takes (a real VM's takes seconds).
    pub destroy_delay: Duration,
}

/// The double. Clone shares the record.
#[derive(Clone, Default)]
pub struct FakeProvider {
    pub record: Arc<Mutex<Record>>,
    /// Guests' heartbeat period.
    pub heartbeat: Duration,
}

impl FakeProvider {
    pub fn new() -> Self {
        FakeProvider {
            record: Arc::default(),
            heartbeat: Duration::from_millis(200),
        }
    }

    pub fn rec(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap()
    }

    /// VM ids created for a job.
    pub fn vms_of(&self, job_id: &str) -> Vec<String> {
        self.rec()
            .created
            .iter()
            .filter(|(_, j)| *j == job_id)
            .map(|(vm, _)| vm.clone())
            .collect()
    }

    /// The bootstrap handed to the job's VM.
    pub fn bootstrap(&self, job_id: &str) -> Option<Bootstrap> {
        self.rec().bootstraps.get(job_id).cloned()
    }

    /// A VM that no provisioning made (another engine's leftover), named
    /// as belonging to `job_id`; its guest does nothing.
    pub fn plant(&self, vm_id: &str, job_id: &str) {
        let idle = tokio::spawn(std::future::pending::<()>());
        self.rec()
            .vms
            .insert(vm_id.to_string(), (job_id.to_string(), idle));
    }

    pub fn is_alive(&self, vm_id: &str) -> bool {
        self.rec().vms.contains_key(vm_id)
    }

    pub fn alive(&self) -> usize {
        self.rec().vms.len()
    }

    pub fn destroy_count(&self, vm: &str) -> u32 {
        self.rec().destroys.get(vm).copied().unwrap_or(0)
    }

    /// Kills every guest (end of test).
    pub fn kill_all(&self) {
        for (_, (_, task)) in self.rec().vms.drain() {
            task.abort();
        }
    }
}

struct ProvisionGuard(Arc<Mutex<Record>>);

impl Drop for ProvisionGuard {
    fn drop(&mut self) {
        self.0.lock().unwrap().provisioning -= 1;
    }
}

#[async_trait::async_trait]
impl Provider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }

    async fn provision(
        &self,
        req: ProvisionRequest,
        on_created: &(dyn Fn(VmRef) + Send + Sync),
    ) -> Result<VmRef, ProviderError> {
        let script = Script::from_template(req.template.as_deref());
        let vm = {
            let mut r = self.rec();
            r.next += 1;
            r.provisioning += 1;
            r.max_provisioning = r.max_provisioning.max(r.provisioning);
            r.provision_order.push(req.job_id.clone());
            let vm = VmRef {
                provider: "fake".into(),
                id: format!("vm-{}", r.next),
                node: None,
            };
            r.created.insert(vm.id.clone(), req.job_id.clone());
            r.bootstraps
                .insert(req.job_id.clone(), req.bootstrap.clone());
            vm
        };
        let _guard = ProvisionGuard(self.record.clone());
        {
            let mut r = self.rec();
            let idle = tokio::spawn(std::future::pending::<()>());
            r.vms.insert(vm.id.clone(), (req.job_id.clone(), idle));
            r.max_alive = r.max_alive.max(r.vms.len());
        }
        on_created(vm.clone());
        if script.provision_hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(script.provision_ms)).await;
        if script.provision_fail {
            return Err(ProviderError::Provision {
                message: "the fake says no".into(),
                retryable: false,
            });
        }
        let task = tokio::spawn(guest(req.bootstrap, script, self.heartbeat));
        if let Some((_, idle)) = self.rec().vms.insert(vm.id.clone(), (req.job_id, task)) {
            idle.abort();
        }
        Ok(vm)
    }

    async fn destroy(&self, vm: &VmRef) -> Result<(), ProviderError> {
        let delay = self.rec().destroy_delay;
        tokio::time::sleep(delay).await;
        let mut r = self.rec();
        *r.destroys.entry(vm.id.clone()).or_insert(0) += 1;
        if let Some((_, task)) = r.vms.remove(&vm.id) {
            task.abort();
        }
        Ok(())
    }

    async fn list_owned(&self) -> Result<Vec<OwnedVm>, ProviderError> {
        Ok(self
            .rec()
            .vms
            .iter()
            .map(|(id, (job, _))| OwnedVm {
                vm: VmRef {
                    provider: "fake".into(),
                    id: id.clone(),
                    node: None,
                },
                job_id: Some(job.clone()),
                deadline_ms: None,
            })
            .collect())
    }
}

/// One authenticated call, retried while the host is unreachable or
/// answers 5xx (as the real guest does). `None` when the host refused.
async fn call<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    b: &Bootstrap,
    method: reqwest::Method,
    path: String,
    body: Option<(Vec<u8>, &str)>,
) -> Option<T> {
    loop {
        let mut rb = http
            .request(method.clone(), format!("{}{path}", b.callback_url))
            .bearer_auth(&b.token)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string());
        if let Some((bytes, ctype)) = &body {
            rb = rb.header("content-type", *ctype).body(bytes.clone());
        }
        match rb.send().await {
            Ok(resp) if resp.status().is_success() => return resp.json().await.ok(),
            Ok(resp) if resp.status().is_server_error() => {}
            Ok(_) => return None,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn guest(b: Bootstrap, script: Script, heartbeat: Duration) {
    if script.silent {
        return;
    }
    let http = reqwest::Client::new();
    let Some(_spec): Option<JobSpec> = call(
        &http,
        &b,
        reqwest::Method::GET,
        api::manifest_path(&b.job_id),
        None,
    )
    .await
    else {
        return;
    };
    let mut seq = 0u64;
    let mut offset = 0u64;
    let mut next = |kind: EventKind| {
        seq += 1;
        Event {
            seq,
            time_ms: delegate_proto::clock::now_ms(),
            kind,
        }
    };
    let mut batch = vec![next(EventKind::Phase {
        phase: Phase::Running,
        message: Some("fake agent".into()),
    })];
    let started = tokio::time::Instant::now();
    let run_for = Duration::from_millis(script.run_ms.unwrap_or(0));
    let mut cancelled = false;
    let mut line = 0;
    loop {
        if !script.hang && started.elapsed() >= run_for {
            break;
        }
        line += 1;
        let text = format!("line {line}\n");
        batch.push(next(EventKind::Log(LogChunk::new(
            LogStream::Stdout,
            offset,
            text.as_bytes(),
        ))));
        offset += text.len() as u64;
        batch.push(next(EventKind::Heartbeat {
            stdout_bytes: offset,
            stderr_bytes: 0,
        }));
        let body = serde_json::to_vec(&EventBatch {
            events: std::mem::take(&mut batch),
        })
        .unwrap();
        let ack: Option<EventsAck> = call(
            &http,
            &b,
            reqwest::Method::POST,
            api::events_path(&b.job_id),
            Some((body, "application/json")),
        )
        .await;
        match ack {
            None => return,
            Some(a) if a.cancel && !script.ignore_cancel => {
                cancelled = true;
                break;
            }
            Some(_) => {}
        }
        tokio::time::sleep(heartbeat).await;
    }
    if script.artifacts {
        let bytes = super::tar::tar_gz(&[super::tar::Entry::File(
            "out/result.txt",
            format!("job {} done\n", b.job_id).as_bytes(),
        )]);
        let _: Option<serde_json::Value> = call(
            &http,
            &b,
            reqwest::Method::PUT,
            api::artifacts_path(&b.job_id),
            Some((bytes, "application/gzip")),
        )
        .await;
    }
    let status = if cancelled {
        ResultStatus::Cancelled
    } else if script.exit == 0 {
        ResultStatus::Success
    } else {
        ResultStatus::Failed
    };
    let result = JobResult {
        status,
        exit_code: (!cancelled).then_some(script.exit),
        signal: cancelled.then(|| "SIGTERM".to_string()),
        duration_ms: started.elapsed().as_millis() as u64,
        output: OutputTails {
            stdout: OutputTail {
                text: format!("line {line}\n"),
                truncated: line > 1,
                total_bytes: offset,
            },
            stderr: OutputTail::default(),
        },
        artifacts: vec![],
        error: (status != ResultStatus::Success).then(|| format!("fake ended {status:?}")),
        error_kind: None,
        agent_result: None,
        patch: None,
        turn_patch: None,
    };
    let _: Option<serde_json::Value> = call(
        &http,
        &b,
        reqwest::Method::POST,
        api::result_path(&b.job_id),
        Some((serde_json::to_vec(&result).unwrap(), "application/json")),
    )
    .await;
}
