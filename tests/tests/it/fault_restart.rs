//! Fault suite: the host killed with SIGKILL at random points of many jobs'
//! lives (provisioning, running, uploading artifacts, posting the result)
//! and started again on the same data directory, over and over, with the
//! local provider's bubblewrap sandboxes and real host processes. Every job
//! must end `success` with its whole output and its artifacts, and no
//! sandbox process or cgroup may be left.
//!
//! The kill points come from a seeded generator; the seed is printed, and
//! `DELEGATE_FAULT_SEED` replays it. `DELEGATE_FAULT_JOBS` (20) sets how many
//! jobs; `scripts/fault-suite` runs it longer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use delegate_tests::mcp::{
    Client, HostEnv, Revision, connect_stdio, eventually, free_port, sandbox_pids,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const LIMIT: Duration = Duration::from_secs(300);

/// A number from the environment, or `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one job prints and leaves, chosen by the generator.
struct Plan {
    lines: usize,
    artifact_bytes: usize,
}

impl Plan {
    fn manifest(&self, i: usize) -> Value {
        json!({
            "task": format!(
                "for k in $(seq 1 {lines}); do echo \"job {i} line $k\"; sleep 0.05; done\n\
                 mkdir -p out\n\
                 yes job-{i} | head -c {bytes} > out/data.txt\n\
                 echo done-{i} >&2",
                lines = self.lines,
                bytes = self.artifact_bytes,
            ),
            "agentType": "script",
            "statusMode": "streaming",
            "timeout": 600,
            "artifacts": ["out/**"]
        })
    }

    fn stdout(&self, i: usize) -> String {
        (1..=self.lines)
            .map(|k| format!("job {i} line {k}\n"))
            .collect()
    }

    fn artifact_sha256(&self, i: usize) -> String {
        let line = format!("job-{i}\n");
        let body: Vec<u8> = line
            .bytes()
            .cycle()
            .take(self.artifact_bytes)
            .collect::<Vec<u8>>();
        format!("{:x}", Sha256::digest(&body))
    }
}

/// The sandboxes the local provider keeps under the data directory now.
fn sandbox_names(data: &Path) -> BTreeSet<String> {
    std::fs::read_dir(data.join("sandboxes"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Where cgroup v2 is mounted, if it is.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Cgroup directories named for any of `names` (`delegate-<sandbox>`),
/// anywhere in the v2 hierarchy a few levels down.
fn leftover_cgroups(names: &BTreeSet<String>) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: u32, wanted: &BTreeSet<String>, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if wanted.contains(&name) {
                out.push(e.path());
            } else if depth > 0 {
                walk(&e.path(), depth - 1, wanted, out);
            }
        }
    }
    let wanted: BTreeSet<String> = names.iter().map(|n| format!("delegate-{n}")).collect();
    let mut out = Vec::new();
    if let Some(root) = cgroup2_mount() {
        walk(&root, 6, &wanted, &mut out);
    }
    out
}

/// Each unfinished job's state and the guest's phase, as a client sees
/// them just before a kill.
async fn where_jobs_are(client: &Client, ids: &[String], done: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids.iter().filter(|id| !done.contains(*id)) {
        let v = client.ok("get_job_status", json!({"job_id": id})).await;
        let state = v["status"].as_str().unwrap_or("?").to_string();
        let phase = v["phase"]
            .as_str()
            .map(|p| format!("/{p}"))
            .unwrap_or_default();
        out.push(format!("{state}{phase}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_the_host_killed_at_random_points() {
    let seed = env_number("DELEGATE_FAULT_SEED", fastrand::u64(..));
    let jobs = env_number("DELEGATE_FAULT_JOBS", 20) as usize;
    eprintln!("fault_restart: seed {seed} (DELEGATE_FAULT_SEED={seed} replays it), {jobs} jobs");
    let mut rng = fastrand::Rng::with_seed(seed);

    // Guests keep calling the callback URL they were given, so every
    // restarted server listens where the first one did.
    let mut env = HostEnv::new();
    env.set("CALLBACK_PORT", free_port().to_string());
    // A few at a time, so the kills fall on every part of the jobs' lives.
    env.set("DELEGATE_MAX_RUNNING", "4");
    let data = env.data_dir();

    let mut client = connect_stdio(&env, Revision::Current).await;
    let mut plans = Vec::new();
    let mut ids = Vec::new();
    for i in 0..jobs {
        let plan = Plan {
            lines: rng.usize(5..40),
            artifact_bytes: rng.usize(1..4) << 20,
        };
        ids.push(client.submit(plan.manifest(i)).await);
        plans.push(plan);
    }

    let started = Instant::now();
    let mut kills = 0u32;
    let mut seen_sandboxes = BTreeSet::new();
    let mut at_kill: BTreeMap<String, u32> = BTreeMap::new();
    let mut done = BTreeSet::new();
    loop {
        // Let the jobs get somewhere, then note where they are and kill.
        tokio::time::sleep(Duration::from_millis(rng.u64(200..2500))).await;
        for id in &ids {
            if done.contains(id) {
                continue;
            }
            let v = client.ok("get_job_status", json!({"job_id": id})).await;
            if v["status"] == "success" || v["status"] == "failed" || v["status"] == "cancelled" {
                done.insert(id.clone());
            }
        }
        if done.len() == ids.len() {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "jobs not final after {kills} kills in {LIMIT:?}\n{}",
            env.log()
        );
        for place in where_jobs_are(&client, &ids, &done).await {
            *at_kill.entry(place).or_default() += 1;
        }
        seen_sandboxes.extend(sandbox_names(&data));
        client.kill_server(LIMIT).await;
        kills += 1;
        // Sometimes the host stays down a while, as a real crash would.
        if rng.u8(..4) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.u64(500..3000))).await;
        }
        client = connect_stdio(&env, Revision::Current).await;
    }
    eprintln!(
        "fault_restart: {jobs} jobs final after {kills} kills in {:.1} s; \
         unfinished jobs' state/phase at the kills: {at_kill:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(kills > 0, "the host was never killed");

    for (i, (id, plan)) in ids.iter().zip(&plans).enumerate() {
        let result = client.ok("get_job_result", json!({"job_id": id})).await;
        assert_eq!(result["status"], "success", "job {i} {id}: {result}");
        assert_eq!(
            client.log_from(id, "stdout", 0).await,
            plan.stdout(i),
            "job {i}"
        );
        assert_eq!(
            client.log_from(id, "stderr", 0).await,
            format!("done-{i}\n"),
            "job {i}"
        );
        let artifacts = result["artifacts"].as_array().expect("artifacts");
        assert_eq!(artifacts.len(), 1, "job {i}: {result}");
        assert_eq!(artifacts[0]["path"], "out/data.txt");
        assert_eq!(artifacts[0]["size"], plan.artifact_bytes);
        assert_eq!(artifacts[0]["sha256"], plan.artifact_sha256(i), "job {i}");
    }

    // Nothing of any sandbox is left: processes, directories, cgroups.
    seen_sandboxes.extend(sandbox_names(&data));
    eventually("every sandbox process gone", LIMIT, || {
        sandbox_pids(&data).is_empty()
    })
    .await;
    eventually("every sandbox directory removed", LIMIT, || {
        sandbox_names(&data).is_empty()
    })
    .await;
    let cgroups = leftover_cgroups(&seen_sandboxes);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    eprintln!(
        "fault_restart: {} sandboxes seen, none left",
        seen_sandboxes.len()
    );
    client.close().await;
}
