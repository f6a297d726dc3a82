//! Process supervision: start the agent in its own session, contain it,
//! end its whole tree.
//!
//! # Ownership rule
//! Exactly one place reaps children: the reaper thread ([`reaper`]), with
//! `waitid(P_ALL)`. Nothing else in the runner may call `wait`/`waitpid` or
//! use `std::process::Child::wait` / `tokio::process`; a child is started
//! only through [`spawn::spawn`], which registers its pid under the spawn
//! lock before the reaper may hand out its status. The runner is a child
//! subreaper (`PR_SET_CHILD_SUBREAPER`), so orphans of the job re-parent to
//! it; the reaper reaps them, and [`tree::Tree`] finds and kills them.
//!
//! # Containment, by what the host allows
//! - cgroup v2 with controllers: a job cgroup with `memory.max`, `cpu.max`,
//!   `pids.max`, ended with `cgroup.kill`.
//! - cgroup v2 without controllers (hybrid hosts): the job cgroup only ends
//!   the tree with `cgroup.kill`.
//! - no writable cgroup v2 (or `--no-cgroup`): the subreaper and `/proc`.
//!
//! In every case the agent has its own session and process group, rlimits,
//! and runs as an unprivileged user when the runner is root.

pub mod cgroup;
mod mountview;
pub mod procfs;
mod raw;
pub mod reaper;
pub mod rlimit;
pub mod spawn;
pub mod tree;
pub mod user;
pub mod user_files;

use std::sync::Arc;

pub use cgroup::{CgroupLimits, JobCgroup};
pub use reaper::ExitStatus;
pub use rlimit::Limits;
pub use spawn::{SpawnSpec, Spawned, failed_in_view, spawn};
pub use tree::{StopReport, Tree};
pub use user::{RunUser, UserPolicy};

/// How the job is contained, for status lines and the summary.
#[derive(Debug, Clone)]
pub struct Containment {
    /// The job cgroup, when one could be made.
    pub cgroup: Option<Arc<JobCgroup>>,
    /// Why there is none, or which limits it enforces.
    pub note: String,
    /// The cgroup limits in force (`memory.max`, `cpu.max`, `pids.max`).
    pub held: Vec<&'static str>,
}

impl Containment {
    /// Makes the runner a subreaper and, unless told not to, a job cgroup.
    pub fn set_up(limits: &CgroupLimits, use_cgroup: bool) -> Containment {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!("cannot become a child subreaper: {e}");
        }
        if !use_cgroup {
            return Containment {
                cgroup: None,
                note: "no cgroup (disabled); subreaper".into(),
                held: Vec::new(),
            };
        }
        match JobCgroup::create(limits) {
            Ok(cg) => {
                let a = cg.applied();
                let mut parts = Vec::new();
                if a.memory {
                    parts.push("memory.max");
                }
                if a.cpu {
                    parts.push("cpu.max");
                }
                if a.pids {
                    parts.push("pids.max");
                }
                let held = parts.clone();
                if cg.has_kill() {
                    parts.push("cgroup.kill");
                }
                let note = format!("cgroup {} ({})", cg.dir().display(), parts.join(", "));
                Containment {
                    cgroup: Some(Arc::new(cg)),
                    note,
                    held,
                }
            }
            Err(why) => Containment {
                cgroup: None,
                note: format!("no cgroup ({why}); subreaper"),
                held: Vec::new(),
            },
        }
    }

    /// Which resource limits hold, for the running phase's status line:
    /// the cgroup's, and the rlimits every agent gets.
    pub fn limits_line(&self) -> String {
        let rlimits = "rlimits (open files; file size when resources.disk is set)";
        if self.held.is_empty() {
            format!("limits: {rlimits} only")
        } else {
            format!("limits: {}, {rlimits}", self.held.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_line_names_what_holds() {
        let mut c = Containment {
            cgroup: None,
            note: String::new(),
            held: Vec::new(),
        };
        assert!(
            c.limits_line().ends_with("is set) only"),
            "{}",
            c.limits_line()
        );
        c.held = vec!["memory.max", "pids.max"];
        assert!(
            c.limits_line()
                .starts_with("limits: memory.max, pids.max, rlimits"),
            "{}",
            c.limits_line()
        );
    }
}
