//! Proxmox bench: submit-to-running for 20 jobs on the PVE simulator, with
//! linked clones and with full ("cold") clones under the same simulated
//! timings, and the host's own share: the same run with every simulated PVE
//! delay at zero, so what remains is the host (scheduling, API calls,
//! polling, placement) plus process start-up of the real `delegate-guest`.
//!
//! `cargo run --release -p delegate-tests --bin pve-bench [-- JOBS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use delegate_host::config::Settings;
use delegate_host::engine::start_engine_with;
use delegate_host::provider::proxmox::settings::TlsSettings;
use delegate_host::provider::proxmox::{
    CloneMode, Credentials, ProxmoxProvider, ProxmoxSettings, PveClient,
};
use delegate_host::resolve::Secret;
use delegate_host::retry::RetryPolicy;
use delegate_proto::{JobManifest, JobState};
use delegate_tests::bins::bins;
use delegate_tests::pve_sim::{self, GuestCommand, PveSim, SimConfig, Timings};
use tokio_util::sync::CancellationToken;

struct Run {
    label: &'static str,
    per_job_ms: Vec<f64>,
    wall_ms: f64,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(label: &'static str, timings: Timings, mode: CloneMode, jobs: usize) -> Run {
    let mut cfg = SimConfig::standard();
    cfg.timings = timings;
    cfg.guest = Some(GuestCommand {
        program: bins().guest.clone(),
        args: vec![
            "boot".into(),
            "--bootstrap".into(),
            "{bootstrap}".into(),
            "--workspace".into(),
            "{root}/workspace".into(),
            "--no-drop-privileges".into(),
        ],
        env: vec![("DELEGATE_GUEST_NO_CGROUP".into(), "1".into())],
    });
    let sim = PveSim::start(cfg).await.expect("simulator");
    let px = ProxmoxSettings {
        url: sim.url.clone(),
        credentials: Credentials::Token {
            id: pve_sim::TOKEN_ID.into(),
            secret: Secret::new(pve_sim::TOKEN_SECRET),
        },
        tls: TlsSettings {
            fingerprints: vec![sim.fingerprint],
            ..TlsSettings::default()
        },
        nodes: None,
        pool: Some("delegate".into()),
        storage: Some("ceph".into()),
        bridge: None,
        vmid_range: 90000..=90999,
        clone: mode,
        agent_wait: Duration::from_secs(120),
        max_clones_per_node: 4,
        max_clones_per_storage: 12,
        clone_lock_grace: Duration::from_secs(600),
        instance: "bench".into(),
        firewall: delegate_host::provider::proxmox::FirewallSettings::default(),
        origins: vec![],
    };
    let client = PveClient::build(
        &px.url,
        px.credentials.clone(),
        &px.tls,
        RetryPolicy::default(),
    )
    .expect("client");
    let provider = ProxmoxProvider::with_client(client, px);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::builder(dir.path()).build().expect("settings");
    settings.default_vm_template = Some("delegate-template".into());
    settings.default_cpu = 1;
    settings.default_memory = 1 << 30;
    settings.default_disk = 8 << 30;
    settings.max_running = jobs;
    settings.max_provisioning = jobs;
    let shutdown = CancellationToken::new();
    let engine = start_engine_with(settings, Arc::new(provider), shutdown.clone())
        .await
        .expect("engine");
    let manifest: JobManifest = serde_json::from_value(serde_json::json!({
        "task": "sleep 30", "agentType": "script", "timeout": 600
    }))
    .expect("manifest");

    let t0 = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..jobs {
        let rec = engine
            .manager
            .submit(manifest.clone())
            .await
            .expect("submit");
        ids.push((rec.id, Instant::now()));
    }
    let mut per_job_ms = vec![0.0; jobs];
    let mut done = vec![false; jobs];
    while done.iter().any(|d| !d) {
        for (i, (id, submitted)) in ids.iter().enumerate() {
            if done[i] {
                continue;
            }
            let rec = engine.manager.get(id).expect("get");
            match rec.state {
                JobState::Running => {
                    per_job_ms[i] = submitted.elapsed().as_secs_f64() * 1000.0;
                    done[i] = true;
                }
                s if s.is_final() => panic!("{label}: job {id} ended {s:?}: {:?}", rec.error),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
    for (id, _) in &ids {
        let _ = engine.manager.cancel(id).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sim.guest_vmids().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine.stop().await;
    Run {
        label,
        per_job_ms,
        wall_ms,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    // One realistic timing set, used for both clone kinds.
    let timings = Timings {
        linked_clone: Duration::from_millis(800),
        full_clone: Duration::from_millis(6000),
        start: Duration::from_millis(700),
        stop: Duration::from_millis(300),
        destroy: Duration::from_millis(400),
        resize: Duration::from_millis(200),
        agent_boot: Duration::from_millis(2500),
        request_latency: Duration::from_millis(2),
        file_write: Duration::ZERO,
    };
    let zero = Timings {
        linked_clone: Duration::ZERO,
        full_clone: Duration::ZERO,
        start: Duration::ZERO,
        stop: Duration::ZERO,
        destroy: Duration::ZERO,
        resize: Duration::ZERO,
        agent_boot: Duration::ZERO,
        request_latency: Duration::ZERO,
        file_write: Duration::ZERO,
    };
    let runs = vec![
        run("linked clone", timings.clone(), CloneMode::Auto, jobs).await,
        run("full clone (cold)", timings, CloneMode::Full, jobs).await,
        run(
            "host share (PVE delays zero, linked)",
            zero,
            CloneMode::Auto,
            jobs,
        )
        .await,
    ];
    println!("submit-to-running, {jobs} jobs submitted at once (ms):");
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>10}",
        "", "p50", "p90", "max", "all running"
    );
    for r in &runs {
        println!(
            "{:<40} {:>8.0} {:>8.0} {:>8.0} {:>10.0}",
            r.label,
            percentile(&r.per_job_ms, 0.5),
            percentile(&r.per_job_ms, 0.9),
            percentile(&r.per_job_ms, 1.0),
            r.wall_ms
        );
    }
    let host = percentile(&runs[2].per_job_ms, 0.5);
    for r in &runs[..2] {
        let p50 = percentile(&r.per_job_ms, 0.5);
        println!(
            "{}: host's own share of the median ≈ {:.0} ms of {:.0} ms ({:.1}%)",
            r.label,
            host,
            p50,
            100.0 * host / p50
        );
    }
}
