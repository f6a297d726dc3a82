//! Warm pools on the PVE simulator with Proxmox-like latencies (scaled
//! down): a burst larger than the pool takes the ready VMs, then starts
//! cold, and the pool refills; no pool VM ever serves two jobs; a changed
//! template or an old VM is replaced; the clone caps hold; idle VMs kept at
//! exit are adopted by the next start; and a host killed with SIGKILL at
//! each step of a claim neither hands a VM to two jobs nor leaks one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use delegate_host::engine::Engine;
use delegate_host::model::PoolVmState;
use delegate_proto::{JobManifest, JobState};
use delegate_tests::mcp::{Client, HostEnv, Revision, connect_stdio, free_port};
use delegate_tests::pve_host::{self, host_settings, real_guest, serve_env};
use delegate_tests::pve_sim::{PveSim, SimConfig, Timings};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

const CLASS: &str = "delegate-template:1c1g8g";
const LIMIT: Duration = Duration::from_secs(120);

/// Proxmox's shape (a clone, a start, a boot that dominates), scaled so a
/// test takes seconds.
fn timings() -> Timings {
    Timings {
        linked_clone: Duration::from_millis(400),
        full_clone: Duration::from_millis(1500),
        start: Duration::from_millis(150),
        stop: Duration::from_millis(50),
        destroy: Duration::from_millis(50),
        resize: Duration::from_millis(20),
        agent_boot: Duration::from_millis(1200),
        request_latency: Duration::from_millis(1),
        file_write: Duration::from_millis(10),
    }
}

async fn sim() -> PveSim {
    let mut cfg = SimConfig::standard();
    cfg.timings = timings();
    cfg.guest = Some(real_guest());
    PveSim::start(cfg).await.unwrap()
}

fn sleeper(secs: u32) -> JobManifest {
    serde_json::from_value(json!({
        "task": format!("sleep {secs}"), "agentType": "script", "timeout": 300
    }))
    .unwrap()
}

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(engine: &Engine) -> u64 {
    engine
        .manager
        .pool_stats()
        .get(CLASS)
        .map_or(0, |s| s.ready)
}

fn ready_rows(engine: &Engine) -> Vec<String> {
    let rows = engine.manager.store().pool_list().unwrap();
    rows.into_iter()
        .filter(|r| r.state == PoolVmState::Ready)
        .map(|r| r.vm.id)
        .collect()
}

/// No VM (told apart by its creation time, as VMIDs are reused) got the
/// bootstrap of two different jobs.
fn assert_no_vm_served_twice(sim: &PveSim) {
    let writes = sim.with(|c| c.bootstraps.clone());
    let mut jobs_of: BTreeMap<(u32, Instant), BTreeSet<String>> = BTreeMap::new();
    for w in &writes {
        jobs_of
            .entry((w.vmid, w.vm_created))
            .or_default()
            .insert(w.job_id.clone());
    }
    for ((vmid, _), jobs) in &jobs_of {
        assert!(jobs.len() == 1, "VM {vmid} served {jobs:?}");
    }
}

async fn assert_no_vm_left(sim: &PveSim, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = sim.guest_vmids();
        if left.is_empty() && sim.guest_pids().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "VMs left behind: {left:?}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_burst_takes_warm_vms_then_cold_ones_and_the_pool_refills() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = pve_host::start(
        &sim,
        "pool-burst",
        host_settings(dir.path(), &format!("{CLASS}=3"), 8),
    )
    .await;
    until("the pool is full", LIMIT, || ready(&engine) == 3).await;
    // Idle pool VMs run, their guests wait for a bootstrap.
    assert_eq!(sim.guest_vmids().len(), 3);
    assert!(sim.guest_pids().is_empty());

    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(engine.manager.submit(sleeper(60)).await.unwrap().id);
    }
    until("every job runs", LIMIT, || {
        ids.iter()
            .all(|id| engine.manager.get(id).unwrap().state == JobState::Running)
    })
    .await;
    let recs: Vec<_> = ids
        .iter()
        .map(|id| engine.manager.get(id).unwrap())
        .collect();
    let warm: Vec<_> = recs.iter().filter(|r| r.vm_start.unwrap().warm).collect();
    let cold: Vec<_> = recs.iter().filter(|r| !r.vm_start.unwrap().warm).collect();
    assert_eq!(warm.len(), 3, "{recs:#?}");
    assert_eq!(cold.len(), 4);
    // A warm start is a bootstrap's delivery; a cold one a clone and a boot.
    let slowest_warm = warm.iter().map(|r| r.vm_start.unwrap().ms).max().unwrap();
    let fastest_cold = cold.iter().map(|r| r.vm_start.unwrap().ms).min().unwrap();
    assert!(
        slowest_warm * 2 < fastest_cold,
        "warm {slowest_warm} ms, cold {fastest_cold} ms"
    );
    let vms: BTreeSet<_> = recs.iter().map(|r| r.vm.clone().unwrap().id).collect();
    assert_eq!(vms.len(), 7, "every job has a VM of its own");
    let stats = engine.manager.pool_stats()[CLASS].clone();
    assert_eq!((stats.hits, stats.misses), (3, 4), "{stats:?}");

    // The pool refills beside the running jobs, within the clone caps.
    until("the pool is full again", LIMIT, || ready(&engine) == 3).await;
    let peak = sim.with(|c| c.clones_peak.values().copied().max().unwrap_or(0));
    assert!(peak <= 4, "clones at once on one node: {peak}");
    let metrics = engine.manager.render_metrics().await.unwrap();
    for line in [
        format!("delegate_pool_ready{{class=\"{CLASS}\"}} 3"),
        format!("delegate_pool_hits_total{{class=\"{CLASS}\"}} 3"),
        "delegate_vm_starts_total{kind=\"warm\"} 3".to_string(),
        "delegate_vm_starts_total{kind=\"cold\"} 4".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    // The status says how the VM started.
    let view = delegate_host::views::StatusView::of(warm[0], 0, None);
    let vm = serde_json::to_value(&view).unwrap()["vm"].clone();
    assert_eq!(vm["start"], "warm", "{vm}");
    assert!(vm["start_seconds"].as_f64().is_some(), "{vm}");

    for id in &ids {
        engine.manager.cancel(id).await.unwrap();
    }
    until("the jobs' VMs are gone", LIMIT, || {
        sim.guest_vmids().len() == 3
    })
    .await;
    engine.stop().await;
    assert_no_vm_left(&sim, String::new).await;
    assert_no_vm_served_twice(&sim);
    assert!(sim.with(|c| c.bootstraps.len()) == 7);
}

#[tokio::test]
async fn pooled_vms_are_replaced_when_the_template_changes_or_grow_old() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = host_settings(dir.path(), &format!("{CLASS}=2"), 4);
    settings.pool_max_age = Duration::from_secs(3600);
    let engine = pve_host::start(&sim, "pool-template", settings).await;
    until("the pool is full", LIMIT, || ready(&engine) == 2).await;
    let before: BTreeSet<_> = ready_rows(&engine).into_iter().collect();

    // Someone edits the template: its config digest changes.
    sim.with(|c| {
        c.vms
            .get_mut(&9000)
            .unwrap()
            .config
            .insert("cores".into(), "2".into());
    });
    until("the pool holds new VMs only", LIMIT, || {
        let now: BTreeSet<_> = ready_rows(&engine).into_iter().collect();
        now.len() == 2 && now.is_disjoint(&before)
    })
    .await;
    let live: BTreeSet<String> = sim.guest_vmids().iter().map(u32::to_string).collect();
    assert!(live.is_disjoint(&before), "old VMs still exist: {live:?}");

    // A job takes one of the new ones.
    let id = engine.manager.submit(sleeper(60)).await.unwrap().id;
    until("the job runs", LIMIT, || {
        engine.manager.get(&id).unwrap().state == JobState::Running
    })
    .await;
    let rec = engine.manager.get(&id).unwrap();
    assert!(rec.vm_start.unwrap().warm, "{rec:?}");
    assert!(!before.contains(&rec.vm.unwrap().id));
    engine.manager.cancel(&id).await.unwrap();
    until("the job's VM is gone", LIMIT, || {
        engine.manager.get(&id).unwrap().vm_destroyed
    })
    .await;
    engine.stop().await;
    assert_no_vm_left(&sim, String::new).await;

    // VMs idle past DELEGATE_POOL_MAX_AGE are recycled.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = host_settings(dir.path(), &format!("{CLASS}=1"), 4);
    settings.pool_max_age = Duration::from_secs(2);
    let engine = pve_host::start(&sim, "pool-age", settings).await;
    until("the pool is full", LIMIT, || ready(&engine) == 1).await;
    let first = ready_rows(&engine);
    until("the VM was recycled", LIMIT, || {
        let now = ready_rows(&engine);
        now.len() == 1 && now != first
    })
    .await;
    engine.stop().await;
    assert_no_vm_left(&sim, String::new).await;
}

#[tokio::test]
async fn idle_vms_kept_at_exit_are_adopted_by_the_next_start() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = host_settings(dir.path(), &format!("{CLASS}=2"), 4);
    settings.pool_keep_on_exit = true;
    let engine = pve_host::start(&sim, "pool-keep", settings.clone()).await;
    until("the pool is full", LIMIT, || ready(&engine) == 2).await;
    let kept: BTreeSet<_> = ready_rows(&engine).into_iter().collect();
    engine.stop().await;
    let live: BTreeSet<String> = sim.guest_vmids().iter().map(u32::to_string).collect();
    assert_eq!(live, kept, "the idle VMs stay");

    // The next start adopts them and a job starts warm at once.
    settings.pool_keep_on_exit = false;
    let engine = pve_host::start(&sim, "pool-keep", settings).await;
    let id = engine.manager.submit(sleeper(60)).await.unwrap().id;
    until("the job runs", LIMIT, || {
        engine.manager.get(&id).unwrap().state == JobState::Running
    })
    .await;
    let rec = engine.manager.get(&id).unwrap();
    assert!(rec.vm_start.unwrap().warm, "{rec:?}");
    assert!(kept.contains(&rec.vm.unwrap().id));
    engine.manager.cancel(&id).await.unwrap();
    until("the job's VM is gone", LIMIT, || {
        engine.manager.get(&id).unwrap().vm_destroyed
    })
    .await;
    until("the pool is full", LIMIT, || ready(&engine) == 2).await;
    // Without DELEGATE_POOL_KEEP_ON_EXIT, stopping empties the pool.
    engine.stop().await;
    assert_no_vm_left(&sim, String::new).await;
    assert_no_vm_served_twice(&sim);
}

/// Where the host is killed.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Pool VMs are being cloned and booted; no job yet.
    Filling,
    /// The claim is committed; the bootstrap's `file-write` is on its way.
    Delivering,
    /// The bootstrap was written; the job may not have noticed yet.
    Delivered,
    /// The job runs in its pool VM.
    Running,
}

fn host_env(sim: &PveSim, port: u16, pool: &str) -> HostEnv {
    let mut env = serve_env(sim, "pool-crash", port);
    env.set("DEFAULT_CPU", "1")
        .set("DEFAULT_DISK", "8G")
        .set("DELEGATE_POOL", pool)
        .set("CLEANUP_INTERVAL_SECONDS", "1");
    env
}

/// VMs whose agent answers and whose guest has no bootstrap yet: ready
/// pool VMs, seen from the cluster.
fn idle_vms(sim: &PveSim) -> usize {
    sim.with(|c| {
        c.vms
            .values()
            .filter(|v| {
                !v.is_template()
                    && v.running
                    && v.guest.is_none()
                    && v.agent_ready_at.is_some_and(|at| Instant::now() >= at)
            })
            .count()
    })
}

fn kill9(client: &Client) {
    let pid = client.server_pid.expect("the server's pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL the host");
}

async fn crash_at(step: Step) {
    let sim = sim().await;
    let port = free_port();
    let env = host_env(&sim, port, &format!("{CLASS}=2"));
    let first = connect_stdio(&env, Revision::Current).await;
    if let Step::Filling = step {
        until("pool VMs are being made", LIMIT, || {
            !sim.guest_vmids().is_empty() && idle_vms(&sim) == 0
        })
        .await;
        kill9(&first);
        drop(first);
        let second = connect_stdio(&env, Revision::Current).await;
        let job = second
            .submit(json!({"task": "echo after", "agentType": "script", "timeout": 300}))
            .await;
        let v = second.wait_final(&job, LIMIT).await;
        assert_eq!(v["status"], "success", "{v}\n{}", env.log());
        until("the pool is full", LIMIT, || {
            idle_vms(&sim) == 2 && sim.guest_vmids().len() == 2
        })
        .await;
        second.close().await;
        assert_no_vm_left(&sim, || env.log()).await;
        return;
    }
    until("the pool is full", LIMIT, || idle_vms(&sim) == 2).await;

    let writes = sim.with(|c| c.bootstrap_writes_started);
    if let Step::Delivering = step {
        // Long enough to be caught in the middle of it.
        sim.with(|c| c.timings.file_write = Duration::from_secs(3));
    }
    let job = first
        .submit(json!({"task": "sleep 4", "agentType": "script", "timeout": 300}))
        .await;
    match step {
        Step::Filling => unreachable!("handled above"),
        Step::Delivering => {
            until("the bootstrap is on its way", LIMIT, || {
                sim.with(|c| c.bootstrap_writes_started) > writes
            })
            .await
        }
        Step::Delivered => {
            until("the bootstrap is written", LIMIT, || {
                sim.with(|c| !c.bootstraps.is_empty())
            })
            .await
        }
        Step::Running => {
            first.wait_state(&job, "running", LIMIT).await;
        }
    }
    kill9(&first);
    drop(first);
    sim.with(|c| c.timings.file_write = timings().file_write);

    // The next host on the same data directory: the job finishes, another
    // job runs too, and no VM is handed to two jobs.
    let second = connect_stdio(&env, Revision::Current).await;
    let other = second
        .submit(json!({"task": "echo second", "agentType": "script", "timeout": 300}))
        .await;
    for id in [&job, &other] {
        let v = second.wait_final(id, LIMIT).await;
        assert_eq!(v["status"], "success", "{step:?}: {v}\n{}", env.log());
    }
    assert_no_vm_served_twice(&sim);
    // The pool is whole again, and nothing else is left.
    until("the pool is full", LIMIT, || {
        idle_vms(&sim) == 2 && sim.guest_vmids().len() == 2
    })
    .await;
    second.close().await;
    assert_no_vm_left(&sim, || env.log()).await;
}

#[tokio::test]
async fn a_host_killed_while_filling_the_pool_leaks_no_vm() {
    crash_at(Step::Filling).await;
}

#[tokio::test]
async fn a_host_killed_while_delivering_a_claimed_vm_serves_it_to_no_other_job() {
    crash_at(Step::Delivering).await;
}

#[tokio::test]
async fn a_host_killed_right_after_delivering_serves_the_vm_to_no_other_job() {
    crash_at(Step::Delivered).await;
}

#[tokio::test]
async fn a_host_killed_while_a_pooled_job_runs_lets_it_finish() {
    crash_at(Step::Running).await;
}

#[tokio::test]
async fn doctor_fails_pools_that_can_never_fill() {
    let sim = sim().await;
    let port = free_port();
    for (pool, ok, needle) in [
        (
            format!("{CLASS}=2"),
            true,
            format!("[ ok ] warm pool {CLASS}: 2 VMs"),
        ),
        (
            "delegate-template:1c60g8g=1".to_string(),
            false,
            "[FAIL] warm pool delegate-template:1c60g8g: a VM needs 60.0 GiB".to_string(),
        ),
        (
            "missing-template:1c1g8g=1".to_string(),
            false,
            "[FAIL] warm pool missing-template:1c1g8g: no template".to_string(),
        ),
    ] {
        let env = host_env(&sim, port, &pool);
        let out = env.command(&["doctor"]).output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.success(), ok, "{pool}: {text}");
        assert!(text.contains(&needle), "{pool}: {text}");
    }
}
