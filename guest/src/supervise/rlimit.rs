//! Resource limits set in the child between fork and exec.

use nix::sys::resource::{Resource, getrlimit};

/// Open files for the agent (Node-based agents open many).
pub const NOFILE: u64 = 65_536;
/// Processes of the job user, when it is a dedicated unprivileged user.
pub const NPROC: u64 = 4_096;

/// The limits one agent gets. Each is soft = hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_NOFILE`.
    pub nofile: u64,
    /// `RLIMIT_NPROC`; only when privileges are dropped, because it counts
    /// every process of the real user, the runner's own included.
    pub nproc: Option<u64>,
    /// `RLIMIT_FSIZE` in bytes, from `resources.disk`.
    pub fsize: Option<u64>,
}

impl Limits {
    /// Plans the limits. `nofile_hard` is the runner's current hard limit,
    /// which an unprivileged runner cannot exceed.
    pub fn plan(disk: Option<u64>, dropping_privileges: bool, nofile_hard: u64) -> Limits {
        Limits {
            nofile: NOFILE.min(nofile_hard),
            nproc: dropping_privileges.then_some(NPROC),
            fsize: disk,
        }
    }

    /// The runner's current hard `RLIMIT_NOFILE`.
    pub fn current_nofile_hard() -> u64 {
        getrlimit(Resource::RLIMIT_NOFILE).map_or(NOFILE, |(_, hard)| hard)
    }

    /// The limits as (resource, value) pairs for `prlimit64`, applied by
    /// the child between clone and exec.
    // The constants are u32 with glibc and c_int with musl.
    #[allow(clippy::unnecessary_cast)]
    pub fn pairs(&self) -> [Option<(u32, u64)>; 4] {
        [
            Some((libc::RLIMIT_CORE as u32, 0)),
            Some((libc::RLIMIT_NOFILE as u32, self.nofile)),
            self.nproc.map(|n| (libc::RLIMIT_NPROC as u32, n)),
            self.fsize.map(|n| (libc::RLIMIT_FSIZE as u32, n)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_from_manifest_and_runner() {
        let l = Limits::plan(Some(1 << 30), true, 1_048_576);
        assert_eq!(
            l,
            Limits {
                nofile: NOFILE,
                nproc: Some(NPROC),
                fsize: Some(1 << 30)
            }
        );
        let l = Limits::plan(None, false, 1024);
        assert_eq!(
            l,
            Limits {
                nofile: 1024,
                nproc: None,
                fsize: None
            }
        );
    }
}
