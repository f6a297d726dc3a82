//! The uplink does not burn CPU while it waits: neither while a request is
//! in flight nor while it backs off. Alone in its own test binary so no
//! other test's work is counted.

mod support;

use std::time::{Duration, Instant};

use support::fixtures::{LONG, client, log, opts};
use support::host::TestHost;

/// CPU time (user + system) this process used so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// CPU used over `wall` of waiting.
async fn cpu_while_waiting(wall: Duration) -> Duration {
    let before = cpu_time();
    let start = Instant::now();
    tokio::time::sleep(wall).await;
    let used = cpu_time().saturating_sub(before);
    eprintln!("{used:?} CPU in {:?}", start.elapsed());
    used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_costs_no_cpu() {
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
    let in_flight = cpu_while_waiting(Duration::from_secs(2)).await;

    host.state().events_delay = Duration::ZERO;
    host.wait_for("the first batch", LONG, |s| s.events.len() >= 5)
        .await;
    // Backing off against a closed port.
    host.go_down().await;
    uplink.send(log(6, 10));
    let backing_off = cpu_while_waiting(Duration::from_secs(2)).await;
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
