//! Warm-pool bench: submit-to-running for 20 jobs on the PVE simulator with
//! a pool of 4 against none, in one run, with the latencies of a real
//! cluster (clone 10 s, start 3 s, boot to a guest agent that answers
//! 25 s, a `file-write` 100 ms, every API call 5 ms) divided by a scale
//! factor for a quick run. Jobs arrive one every `--every` seconds (12 s at
//! scale 1: a pool of 4 refills 4 VMs per 38 s, one per 9.5 s), which is
//! how a pool is meant to be used; a burst of all jobs at once is shown too
//! (the pool then serves the first 4, the rest start cold).
//!
//! `cargo run --release -p delegate-tests --bin pool-bench [-- --scale 10 --jobs 20 --every 12]`
//!
//! The scale divides the simulated cluster's delays only: the host, the
//! store and the real `delegate-guest` process keep their own speed, so
//! warm starts (mostly those) shrink less than cold ones.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use delegate_proto::{JobManifest, JobState};
use delegate_tests::bench::percentile;
use delegate_tests::pve_host::{self, host_settings, real_guest};
use delegate_tests::pve_sim::{PveSim, SimConfig, Timings};

const CLASS: &str = "delegate-template:1c1g8g";

struct Args {
    scale: u32,
    jobs: usize,
    every_s: f64,
    pool: usize,
}

fn args() -> Args {
    let mut a = Args {
        scale: 10,
        jobs: 20,
        every_s: 12.0,
        pool: 4,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--scale" => a.scale = value.parse().expect("--scale N"),
            "--jobs" => a.jobs = value.parse().expect("--jobs N"),
            "--every" => a.every_s = value.parse().expect("--every SECONDS"),
            "--pool" => a.pool = value.parse().expect("--pool N"),
            // `cargo bench`/`cargo test` harness flags.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// A real cluster's delays.
fn real_timings() -> Timings {
    Timings {
        linked_clone: Duration::from_secs(10),
        full_clone: Duration::from_secs(60),
        start: Duration::from_secs(3),
        stop: Duration::from_secs(2),
        destroy: Duration::from_secs(2),
        resize: Duration::from_millis(500),
        agent_boot: Duration::from_secs(25),
        request_latency: Duration::from_millis(5),
        file_write: Duration::from_millis(100),
    }
}

struct Outcome {
    label: String,
    ms: Vec<f64>,
    warm: usize,
}

async fn scenario(label: &str, pool: usize, jobs: usize, every: Duration, t: &Timings) -> Outcome {
    let mut cfg = SimConfig::standard();
    cfg.timings = t.clone();
    cfg.guest = Some(real_guest());
    let sim = PveSim::start(cfg).await.expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = if pool > 0 {
        format!("{CLASS}={pool}")
    } else {
        String::new()
    };
    let mut settings = host_settings(dir.path(), &spec, jobs + 1);
    settings.max_provisioning = 8;
    let engine = pve_host::start(&sim, "bench", settings).await;
    let manager = engine.manager.clone();
    if pool > 0 {
        let deadline =
            Instant::now() + t.linked_clone * 4 + t.agent_boot * 4 + Duration::from_secs(60);
        while manager.pool_stats().get(CLASS).map_or(0, |s| s.ready) < pool as u64 {
            assert!(Instant::now() < deadline, "{label}: the pool never filled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let manifest: JobManifest = serde_json::from_value(serde_json::json!({
        "task": "sleep 1", "agentType": "script", "timeout": 600
    }))
    .expect("manifest");
    let submitted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let (m, subs, man) = (manager.clone(), submitted.clone(), manifest.clone());
    let submitter = tokio::spawn(async move {
        for _ in 0..jobs {
            let rec = m.submit(man.clone()).await.expect("submit");
            subs.lock().unwrap().push((rec.id, Instant::now()));
            tokio::time::sleep(every).await;
        }
    });
    let mut ms: Vec<Option<f64>> = vec![None; jobs];
    let mut warm = 0;
    while ms.iter().any(Option::is_none) {
        let subs = submitted.lock().unwrap().clone();
        for (i, (id, at)) in subs.iter().enumerate() {
            if ms[i].is_some() {
                continue;
            }
            let rec = manager.get(id).expect("get");
            if matches!(rec.state, JobState::Running | JobState::Success) {
                ms[i] = Some(at.elapsed().as_secs_f64() * 1000.0);
                if rec.vm_start.is_some_and(|s| s.warm) {
                    warm += 1;
                }
            } else if rec.state.is_final() {
                panic!("{label}: job {id} ended {:?}: {:?}", rec.state, rec.error);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    submitter.await.expect("submitter");
    let all = submitted.lock().unwrap().clone();
    for (id, _) in &all {
        let _ = manager.cancel(id).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let busy = submitted.lock().unwrap().iter().any(|(id, _)| {
            manager
                .get(id)
                .is_ok_and(|r| r.vm.is_some() && !r.vm_destroyed)
        });
        if !busy || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.stop().await;
    Outcome {
        label: label.to_string(),
        ms: ms.into_iter().map(|m| m.unwrap_or(0.0)).collect(),
        warm,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let t = real_timings().scaled_down(a.scale);
    let every = Duration::from_secs_f64(a.every_s / f64::from(a.scale.max(1)));
    println!(
        "simulated cluster at 1/{} of real delays: clone {:?}, start {:?}, boot to agent {:?}, \
         file-write {:?}, API call {:?}; {} jobs, one every {:?} (and a burst of all at once)",
        a.scale,
        t.linked_clone,
        t.start,
        t.agent_boot,
        t.file_write,
        t.request_latency,
        a.jobs,
        every
    );
    let runs = vec![
        scenario(
            &format!("pool of {}, jobs spaced", a.pool),
            a.pool,
            a.jobs,
            every,
            &t,
        )
        .await,
        scenario("no pool, jobs spaced", 0, a.jobs, every, &t).await,
        scenario(
            &format!("pool of {}, burst", a.pool),
            a.pool,
            a.jobs,
            Duration::ZERO,
            &t,
        )
        .await,
        scenario("no pool, burst", 0, a.jobs, Duration::ZERO, &t).await,
    ];
    println!("submit-to-running (ms):");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>6}",
        "", "p50", "p99", "max", "warm"
    );
    for r in &runs {
        println!(
            "{:<28} {:>9.0} {:>9.0} {:>9.0} {:>3}/{}",
            r.label,
            percentile(&r.ms, 0.5),
            percentile(&r.ms, 0.99),
            percentile(&r.ms, 1.0),
            r.warm,
            r.ms.len()
        );
    }
    let (warm, cold) = (percentile(&runs[0].ms, 0.5), percentile(&runs[1].ms, 0.5));
    println!(
        "spaced jobs: p50 {:.0} ms with the pool against {:.0} ms without: {:.1}x faster \
         (target: p50 <= 2000 ms and >= 15x)",
        warm,
        cold,
        cold / warm.max(1.0)
    );
}
