//! The agent's process tree and how it is ended: SIGTERM to every member, a
//! grace period, then SIGKILL until nothing is left.
//!
//! Members are found two ways, so that neither `setsid` nor double-forking
//! hides a process: the runner's descendants in `/proc` (the runner is a
//! child subreaper, so orphans re-parent to it) and, when there is one, the
//! job cgroup (which `cgroup.kill` ends at once, race-free).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use super::cgroup::JobCgroup;
use super::procfs;
use super::reaper::pid;

/// How stopping went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Everything exited within the grace period.
    pub graceful: bool,
    /// Processes still alive at the end (0 unless the kernel refused).
    pub survivors: usize,
}

/// One agent's process tree.
#[derive(Debug)]
pub struct Tree {
    leader: i32,
    runner: i32,
    cgroup: Option<Arc<JobCgroup>>,
    leader_reaped: AtomicBool,
}

impl Tree {
    /// The tree of `leader` (session and group leader).
    pub fn new(leader: i32, cgroup: Option<Arc<JobCgroup>>) -> Self {
        Tree {
            leader,
            runner: std::process::id() as i32,
            cgroup,
            leader_reaped: AtomicBool::new(false),
        }
    }

    /// Records that the leader was reaped: its pid may now be reused, so
    /// its process group is no longer signalled by number.
    pub fn mark_leader_reaped(&self) {
        self.leader_reaped.store(true, Ordering::SeqCst);
    }

    /// Members that are alive (zombies excluded: they are gone, only not
    /// reaped yet).
    pub fn live(&self) -> Vec<i32> {
        let mut set: BTreeSet<i32> = procfs::descendants(self.runner)
            .into_iter()
            .filter(|p| !p.is_zombie())
            .map(|p| p.pid)
            .collect();
        if let Some(cg) = &self.cgroup {
            for p in cg.pids() {
                if procfs::read(p).is_some_and(|i| !i.is_zombie()) {
                    set.insert(p);
                }
            }
        }
        set.into_iter().collect()
    }

    /// True when no member is alive, seen twice in a row. A member that
    /// exits right after forking can hide its child from one scan (the
    /// child re-parents to the runner after the runner's list was read);
    /// but a parent seen exited has already handed its children over, so
    /// the next scan sees them.
    pub fn is_gone(&self) -> bool {
        self.live().is_empty() && self.live().is_empty()
    }

    /// Sends `sig` to every member.
    pub fn signal(&self, sig: Signal) {
        if !self.leader_reaped.load(Ordering::SeqCst) {
            let _ = kill(pid(-self.leader), sig);
        }
        for p in self.live() {
            let _ = kill(pid(p), sig);
            if sig == Signal::SIGTERM {
                // A stopped process acts on SIGTERM only once continued.
                let _ = kill(pid(p), Signal::SIGCONT);
            }
        }
    }

    /// SIGKILL to every member, through the cgroup first.
    pub fn kill_all(&self) {
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
        self.signal(Signal::SIGKILL);
    }

    /// Ends the tree: SIGTERM, up to `grace` for it to exit, then SIGKILL
    /// until no member is left.
    pub async fn stop(&self, grace: Duration) -> StopReport {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if self.is_gone() {
                return StopReport {
                    graceful: true,
                    survivors: 0,
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        }
        self.kill_now().await
    }

    /// SIGKILL without a grace period, repeated while members remain (one
    /// may fork between the scan and the kill).
    pub async fn kill_now(&self) -> StopReport {
        for _ in 0..500 {
            self.kill_all();
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.is_gone() {
                return StopReport {
                    graceful: false,
                    survivors: 0,
                };
            }
        }
        let survivors = self.live().len();
        tracing::error!("{survivors} processes survived SIGKILL");
        StopReport {
            graceful: false,
            survivors,
        }
    }
}
