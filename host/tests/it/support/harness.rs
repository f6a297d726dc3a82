//! Starts the real engine (store, manager, callback API on 127.0.0.1) in a
//! temporary data directory, and polls for conditions with generous
//! deadlines instead of sleeping for fixed times.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use delegate_host::config::Settings;
use delegate_host::engine::{Engine, start_engine_with};
use delegate_host::jobs::JobManager;
use delegate_host::model::JobRecord;
use delegate_host::provider::Provider;
use delegate_proto::{JobManifest, JobState};
use tokio_util::sync::CancellationToken;

/// Settings for engine tests: short leases and intervals, nothing from
/// the environment.
pub fn settings(dir: &Path, tweak: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = Settings::builder(dir).build().expect("test settings");
    s.heartbeat_threshold = Duration::from_secs(30);
    s.heartbeat_interval = Duration::from_secs(1);
    s.cleanup_interval = Duration::from_secs(1);
    s.cancel_grace = Duration::from_secs(2);
    tweak(&mut s);
    s
}

/// A started engine.
pub struct Host {
    pub engine: Option<Engine>,
}

impl Host {
    pub async fn start(settings: Settings, provider: Arc<dyn Provider>) -> Host {
        let engine = start_engine_with(settings, provider, CancellationToken::new())
            .await
            .expect("engine starts");
        Host {
            engine: Some(engine),
        }
    }

    pub fn manager(&self) -> &JobManager {
        &self.engine.as_ref().unwrap().manager
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.engine.as_ref().unwrap().callback_addr)
    }

    pub fn port(&self) -> u16 {
        self.engine.as_ref().unwrap().callback_addr.port()
    }

    /// Stops the engine and waits for it (VMs are left as they are).
    pub async fn stop(mut self) {
        if let Some(e) = self.engine.take() {
            e.stop().await;
        }
    }
}

/// A manifest for the fake provider's script language: the task, and the
/// template that hands the same script to the fake's VM.
pub fn job(task: &str) -> JobManifest {
    JobManifest::from_value(serde_json::json!({
        "task": task,
        "agentType": "script",
        "vmTemplate": super::fake::template_for(task),
    }))
    .unwrap()
}

/// Polls `check` every 20 ms until it gives `Some`, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the job is in `state`.
pub async fn until_state(m: &JobManager, id: &str, state: JobState, secs: u64) -> JobRecord {
    eventually(secs, &format!("job {id} to be {state}"), || async {
        m.get(id).ok().filter(|r| r.state == state)
    })
    .await
}
