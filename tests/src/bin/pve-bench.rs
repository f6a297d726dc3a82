//! Proxmox bench: submit-to-running for 20 jobs on the PVE simulator, with
//! linked clones and with full ("cold") clones under the same simulated
//! timings, and the host's own share: the same run with every simulated PVE
//! delay at zero, so what remains is the host (scheduling, API calls,
//! polling, placement) plus process start-up of the real `delegate-guest`.
//!
//! `cargo run --release -p delegate-tests --bin pve-bench [-- JOBS]`

use std::time::{Duration, Instant};

use delegate_host::provider::proxmox::CloneMode;
use delegate_proto::{JobManifest, JobState};
use delegate_tests::bench::percentile;
use delegate_tests::pve_host::{self, host_settings, proxmox_settings, real_guest};
use delegate_tests::pve_sim::{PveSim, SimConfig, Timings};

struct Run {
    label: &'static str,
    per_job_ms: Vec<f64>,
    wall_ms: f64,
}

async fn run(label: &'static str, timings: Timings, mode: CloneMode, jobs: usize) -> Run {
    let mut cfg = SimConfig::standard();
    cfg.timings = timings;
    cfg.guest = Some(real_guest());
    let sim = PveSim::start(cfg).await.expect("simulator");
    let mut px = proxmox_settings(&sim, "bench", 4);
    px.clone = mode;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = pve_host::start_with(px, host_settings(dir.path(), "", jobs)).await;
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
