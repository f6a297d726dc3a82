//! Cancel latency (issue 8): on the local provider with the real
//! `delegate-guest` over HTTP on 127.0.0.1, the time from asking the
//! manager to cancel a quiet `sleep 300` job to the moment none of the
//! job's processes is left, over 50 cancels, as p50/p99/max; next to it the
//! same `sleep`'s own exit time after a SIGTERM sent directly, the floor
//! under any cancel. Target: p99 under 1 s plus that exit time. Prints the
//! figures; timing never fails the run.
//!
//! `cargo build --release -p delegate-guest && cargo bench -p delegate-host --bench cancel`
//! (without `--bench`, as under `cargo test --all-targets`, a smoke pass of
//! three cancels only proves the measurement works).

#[path = "../tests/it/support/mod.rs"]
#[expect(
    dead_code,
    reason = "the integration tests' support; the benchmark uses part of it"
)]
mod support;

use std::time::{Duration, Instant};

use delegate_host::jobs::JobManager;
use delegate_host::model::CancelOutcome;
use delegate_proto::JobState;
use support::harness::{eventually, until_state};
use support::local::{local_host, marker, pids_with, quiet_script};

const FULL: usize = 50;
const SMOKE: usize = 3;
/// The longest wait for one job's processes to go before the run gives up
/// on it (it then counts as this long).
const GIVE_UP: Duration = Duration::from_secs(30);

fn main() {
    let n = if std::env::args().any(|a| a == "--bench") {
        FULL
    } else {
        println!("smoke run (under `cargo test`): figures are not measurements");
        SMOKE
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let cancels = rt.block_on(cancel_latencies(dir.path(), n));
    let exits = direct_exit_times(n);
    println!(
        "\n{:<52} {:>10} {:>10} {:>10}",
        "measure", "p50", "p99", "max"
    );
    println!("{}", "-".repeat(86));
    for (what, samples) in [
        (
            format!("cancel -> job's processes gone ({n} cancels)"),
            cancels,
        ),
        (format!("SIGTERM -> sleep gone, no delegate ({n})"), exits),
    ] {
        let (p50, p99, max) = percentiles(samples);
        println!("{what:<52} {:>10} {:>10} {:>10}", ms(p50), ms(p99), ms(max));
    }
    println!("target: cancel p99 < 1 s + the process's own exit time");
}

/// Cancels `n` quiet jobs one after another, each once its `sleep` runs.
async fn cancel_latencies(dir: &std::path::Path, n: usize) -> Vec<Duration> {
    let host = local_host(dir, |s| {
        // As in production: heartbeats 10 s apart, so an answer to an event
        // batch cannot be what delivers the cancel.
        s.heartbeat_interval = Duration::from_secs(10);
        s.heartbeat_threshold = Duration::from_secs(60);
        s.cancel_grace = Duration::from_secs(60);
        s.max_running = 4;
    })
    .await;
    let m = host.manager().clone();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(one_cancel(&m).await);
    }
    host.stop().await;
    samples
}

async fn one_cancel(m: &JobManager) -> Duration {
    let mark = marker("bench");
    let id = m
        .submit(quiet_script(&format!("exec -a {mark} sleep 300")))
        .await
        .expect("submit")
        .id;
    until_state(m, &id, JobState::Running, 60).await;
    eventually(60, "the job's sleep to run", || async {
        (!pids_with(&mark).is_empty()).then_some(())
    })
    .await;
    // The guest's long poll is in place once its manifest is fetched; a
    // short pause makes the job as quiet as the one in the issue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    match m.cancel(&id).await.expect("cancel") {
        CancelOutcome::Cancelled(_) => {}
        other => panic!("not cancelled: {other:?}"),
    }
    while !pids_with(&mark).is_empty() && t.elapsed() < GIVE_UP {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let gone = t.elapsed();
    // The guest reports and the sandbox goes before the next job, so the
    // runs do not overlap.
    eventually(60, "the job's result", || async {
        m.get(&id).ok().filter(|r| r.result.is_some()).map(|_| ())
    })
    .await;
    gone
}

/// The floor: a plain `sleep` here, SIGTERM, until it is reaped.
fn direct_exit_times(n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let mut child = std::process::Command::new("sleep")
                .arg("300")
                .spawn()
                .expect("sleep starts");
            std::thread::sleep(Duration::from_millis(20));
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let t = Instant::now();
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
            let _ = child.wait();
            t.elapsed()
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// p50, p99 and max of the samples.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.50), at(0.99), at(1.0))
}
