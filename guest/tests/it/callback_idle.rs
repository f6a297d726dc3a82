//! The uplink does not burn CPU while it waits: neither while a request is
//! in flight nor while it backs off. Other tests run in parallel in this
//! process, so only the threads of this test's own runtime are counted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::LONG;
use crate::support::fixtures::{client, log, opts};
use crate::support::host::TestHost;

/// CPU time (user + system) one thread of this process used so far; zero
/// for a thread that is gone.
fn thread_cpu_time(tid: i32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The threads of one runtime (workers and blocking pool) and the thread
/// that drives it.
#[derive(Clone, Default)]
struct Threads(Arc<Mutex<Vec<i32>>>);

impl Threads {
    fn add_current(&self) {
        self.0.lock().unwrap().push(nix::unistd::gettid().as_raw());
    }

    /// CPU time these threads used so far.
    fn cpu_time(&self) -> Duration {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|&t| thread_cpu_time(t))
            .sum()
    }

    /// CPU used over `wall` of waiting.
    async fn cpu_while_waiting(&self, wall: Duration) -> Duration {
        let before = self.cpu_time();
        let start = Instant::now();
        tokio::time::sleep(wall).await;
        let used = self.cpu_time().saturating_sub(before);
        eprintln!("{used:?} CPU in {:?}", start.elapsed());
        used
    }
}

#[test]
fn waiting_costs_no_cpu() {
    let threads = Threads::default();
    threads.add_current();
    let on_start = threads.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        // Blocking-pool threads stay for the whole test: the CPU time of a
        // thread that exits leaves /proc with it.
        .thread_keep_alive(Duration::from_secs(3600))
        .on_thread_start(move || on_start.add_current())
        .build()
        .unwrap();
    runtime.block_on(idle_uplink(&threads));
}

async fn idle_uplink(threads: &Threads) {
    let host = TestHost::start().await;
    host.state().events_delay = Duration::from_secs(3);
    let spool = tempfile::tempdir().unwrap();
    let uplink = client(&host, opts()).start_uplink(spool.path().join("spool"));
    uplink.send(log(1, 10));
    host.wait_for("a request in flight", LONG, |s| {
        s.requests.get("events") == Some(&1)
    })
    .await;
    // Events queued behind the in-flight request: their batch timer runs out
    // while the answer is still pending.
    for seq in 2..=5 {
        uplink.send(log(seq, 10));
    }
    let in_flight = threads.cpu_while_waiting(Duration::from_secs(2)).await;

    host.state().events_delay = Duration::ZERO;
    host.wait_for("the first batch", LONG, |s| s.events.len() >= 5)
        .await;
    // Backing off against a closed port.
    host.go_down().await;
    uplink.send(log(6, 10));
    let backing_off = threads.cpu_while_waiting(Duration::from_secs(2)).await;
    host.come_back().await;
    let report = uplink.flush(LONG).await;
    assert!(report.complete(), "{report:?}");

    // A spinning loop uses a whole core; an idle one next to nothing.
    assert!(
        in_flight < Duration::from_millis(500),
        "{in_flight:?} while in flight"
    );
    assert!(
        backing_off < Duration::from_millis(500),
        "{backing_off:?} while backing off"
    );
}
